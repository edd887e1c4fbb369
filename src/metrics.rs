//! Prometheus metrics of a master ([`get`]) and of an executor ([`executor`]): counters and
//! histograms updated where things happen, and gauges set at scrape time (a master's
//! [`Gauges`]: Raft position, jobs/tasks/executors by state; an executor's epoch, fencing,
//! running attempts).

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub submissions: IntCounterVec,
    pub submit_seconds: HistogramVec,
    pub heartbeats: IntCounter,
    pub heartbeat_streams: IntGauge,
    pub reschedules: IntCounterVec,
    pub fencing_rejections: IntCounter,
    pub dispatch_seconds: HistogramVec,
    pub schedule_seconds: HistogramVec,
    pub placements: IntCounter,
    pub elections: IntCounter,
    pub batch_commands: prometheus::Histogram,
    pub commit_seconds: prometheus::Histogram,
    pub log_flush_seconds: prometheus::Histogram,
    /// Submissions this master forwarded on its `ForwardSubmits` stream, and streams it opened
    /// (issue 19).
    pub forwarded_submissions: IntCounter,
    pub forward_streams_opened: IntCounter,
    /// Set at scrape time only (by the master's `/metrics` handler).
    pub gauges: Gauges,
}

/// A master's gauges, set when `/metrics` is scraped: from the Raft metrics, and from the
/// state's tally (kept as the state changes, so a scrape reads numbers, not the jobs).
pub struct Gauges {
    /// Raft position by `field` (term, log, applied, committed, snapshot and purged indexes,
    /// leader id).
    pub raft: IntGaugeVec,
    pub replication_lag: IntGaugeVec,
    pub is_leader: IntGauge,
    pub jobs: IntGaugeVec,
    pub tasks: IntGaugeVec,
    pub executors: IntGaugeVec,
}

/// Commands per Raft entry (group commit), in powers of two up to the batch limit.
const BATCH_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Registers metrics in one registry; the one place metric objects are made.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn new(prefix: &str) -> Builder {
        Builder { registry: Registry::new_custom(Some(prefix.into()), None).expect("registry") }
    }

    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.registry.register(Box::new(m.clone())).expect("register");
        m
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("metric"))
    }

    fn histogram_of(&self, name: &str, help: &str, buckets: &[f64]) -> prometheus::Histogram {
        self.register(
            prometheus::Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            )
            .expect("metric"),
        )
    }

    fn histogram(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.register(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("metric"),
        )
    }
}

/// Encodes every metric of `registry` in the Prometheus text format.
fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

impl Metrics {
    fn new() -> Metrics {
        let b = Builder::new("triad");
        Metrics {
            submissions: b.counter_vec(
                "submissions_total",
                "Job submissions answered by this master as leader, by result",
                &["result"],
            ),
            submit_seconds: b.histogram(
                "submit_seconds",
                "Leader-side latency of a submission (propose to applied)",
                &["result"],
            ),
            forwarded_submissions: b.counter(
                "forwarded_submissions_total",
                "Submissions this master forwarded to the leader on its ForwardSubmits stream",
            ),
            forward_streams_opened: b.counter(
                "forward_streams_opened_total",
                "ForwardSubmits streams this master opened to a leader",
            ),
            heartbeats: b.counter(
                "heartbeats_total",
                "Executor heartbeats received by this master as leader",
            ),
            heartbeat_streams: b
                .gauge("heartbeat_streams", "Executor heartbeat streams open on this master"),
            reschedules: b.counter_vec(
                "reschedules_total",
                "Attempts lost and rescheduled, by cause",
                &["cause"],
            ),
            fencing_rejections: b.counter(
                "fencing_rejections_total",
                "Task reports rejected for a stale fencing token",
            ),
            dispatch_seconds: b.histogram(
                "dispatch_seconds",
                "StartAttempt call latency to executors",
                &["result"],
            ),
            schedule_seconds: b.histogram(
                "schedule_seconds",
                "Scheduling round latency (plan and commit)",
                &["result"],
            ),
            placements: b.counter("placements_total", "Tasks placed by this master as leader"),
            elections: b.counter("raft_elections_total", "Terms this master has seen begin"),
            batch_commands: b.histogram_of(
                "batch_commands",
                "Leader: commands per Raft entry (group commit)",
                BATCH_BUCKETS,
            ),
            commit_seconds: b.histogram_of(
                "commit_seconds",
                "Leader: a batch's latency from proposal to applied",
                LATENCY_BUCKETS,
            ),
            log_flush_seconds: b.histogram_of(
                "log_flush_seconds",
                "Raft log: from an append written to the fdatasync that made it durable",
                LATENCY_BUCKETS,
            ),
            gauges: Gauges::new(&b),
            registry: b.registry,
        }
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

impl Gauges {
    fn new(b: &Builder) -> Gauges {
        Gauges {
            raft: b.gauge_vec("raft", "Raft position of this master", &["field"]),
            replication_lag: b.gauge_vec(
                "raft_replication_lag",
                "Leader: entries each follower is behind",
                &["follower"],
            ),
            is_leader: b.gauge("raft_is_leader", "1 when this master is the leader"),
            jobs: b.gauge_vec("jobs", "Jobs in the local state machine, by state", &["state"]),
            tasks: b.gauge_vec("tasks", "Tasks in the local state machine, by state", &["state"]),
            executors: b.gauge_vec(
                "executors",
                "Executors in the local state machine, by state",
                &["state"],
            ),
        }
    }
}

/// The process-wide metrics of a master.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Prometheus metrics of an executor (prefix `triad_executor_`): counters updated where things
/// happen, gauges set at scrape time from the agent.
pub struct ExecutorMetrics {
    registry: Registry,
    pub attempts_started: IntCounter,
    pub attempts_finished: IntCounterVec,
    pub kills: IntCounterVec,
    pub self_fences: IntCounter,
    pub stale_starts: IntCounter,
    pub registrations: IntCounter,
    pub heartbeats: IntCounterVec,
    pub heartbeat_seconds: HistogramVec,
    pub heartbeat_streams: IntCounterVec,
    pub reports: IntCounterVec,
    pub attempts_running: IntGauge,
    pub epoch: IntGauge,
    pub fenced: IntGauge,
    pub draining: IntGauge,
    pub slots: IntGauge,
    pub since_ack_seconds: prometheus::Gauge,
    pub disk_unhealthy: IntGauge,
    pub output_expired: IntCounter,
    pub output_deleted: IntCounter,
}

impl ExecutorMetrics {
    fn new() -> ExecutorMetrics {
        let b = Builder::new("triad_executor");
        ExecutorMetrics {
            attempts_started: b.counter("attempts_started_total", "Attempts spawned"),
            attempts_finished: b.counter_vec("attempts_finished_total", "Attempts ended, by outcome", &["outcome"]),
            kills: b.counter_vec("kills_total", "Attempts killed by the executor, by cause", &["cause"]),
            self_fences: b.counter("self_fences_total", "Times no heartbeat was acknowledged within the fencing window while attempts ran"),
            stale_starts: b.counter("stale_starts_total", "Starts refused because the heartbeat they name is older than the fencing window (or unknown)"),
            registrations: b.counter("registrations_total", "Successful registrations (each starts a new epoch)"),
            heartbeats: b.counter_vec("heartbeats_total", "Heartbeats sent, by result", &["result"]),
            heartbeat_seconds: b.histogram("heartbeat_seconds", "Heartbeat round trip to the leader", &["result"]),
            heartbeat_streams: b.counter_vec(
                "heartbeat_streams_total",
                "Heartbeat streams opened (ok), refused or broken (error), and beats sent unary instead (unary)",
                &["result"],
            ),
            reports: b.counter_vec("reports_total", "Task report calls, by result", &["result"]),
            attempts_running: b.gauge("attempts_running", "Attempts running now"),
            epoch: b.gauge("epoch", "Current registration epoch (0 before the first registration)"),
            fenced: b.gauge("fenced", "1 while self-fenced: no heartbeat acknowledged within the fencing window"),
            draining: b.gauge("draining", "1 while draining (taking no new work)"),
            slots: b.gauge("slots", "Task slots offered"),
            since_ack_seconds: b.register(prometheus::Gauge::new("since_ack_seconds", "Seconds since the last acknowledged heartbeat").expect("metric")),
            disk_unhealthy: b.gauge("disk_unhealthy", "1 while the work dir has no room (below min_free_bytes, or a write found it full): starts are refused"),
            output_expired: b.counter("output_expired_total", "Attempt output directories deleted because output_ttl passed since the attempt ended"),
            output_deleted: b.counter("output_deleted_total", "Jobs whose output was deleted on the leader's DeleteOutput"),
            registry: b.registry,
        }
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// The process-wide metrics of an executor.
pub fn executor() -> &'static ExecutorMetrics {
    static M: OnceLock<ExecutorMetrics> = OnceLock::new();
    M.get_or_init(ExecutorMetrics::new)
}
