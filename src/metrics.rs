//! Prometheus metrics of a master: counters and histograms updated where things happen, and
//! gauges (Raft position, jobs/tasks/executors by state) computed from the node at scrape time.

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub submissions: IntCounterVec,
    pub submit_seconds: HistogramVec,
    pub heartbeats: IntCounter,
    pub reschedules: IntCounterVec,
    pub fencing_rejections: IntCounter,
    pub dispatch_seconds: HistogramVec,
    pub schedule_seconds: HistogramVec,
    pub placements: IntCounter,
    pub elections: IntCounter,
    pub raft: IntGaugeVec,
    pub replication_lag: IntGaugeVec,
    pub jobs: IntGaugeVec,
    pub tasks: IntGaugeVec,
    pub executors: IntGaugeVec,
    pub is_leader: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new_custom(Some("triad".into()), None).expect("registry");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels).expect("metric");
            registry.register(Box::new(h.clone())).expect("register");
            h
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let is_leader = IntGauge::new("raft_is_leader", "1 when this master is the leader").expect("metric");
        registry.register(Box::new(is_leader.clone())).expect("register");
        Metrics {
            submissions: counter_vec("submissions_total", "Job submissions answered by this master as leader, by result", &["result"]),
            submit_seconds: histogram("submit_seconds", "Leader-side latency of a submission (propose to applied)", &["result"]),
            heartbeats: counter("heartbeats_total", "Executor heartbeats received by this master as leader"),
            reschedules: counter_vec("reschedules_total", "Attempts lost and rescheduled, by cause", &["cause"]),
            fencing_rejections: counter("fencing_rejections_total", "Task reports rejected for a stale fencing token"),
            dispatch_seconds: histogram("dispatch_seconds", "StartAttempt call latency to executors", &["result"]),
            schedule_seconds: histogram("schedule_seconds", "Scheduling round latency (plan and commit)", &["result"]),
            placements: counter("placements_total", "Tasks placed by this master as leader"),
            elections: counter("raft_elections_total", "Terms this master has seen begin"),
            raft: gauge_vec("raft", "Raft position of this master", &["field"]),
            replication_lag: gauge_vec("raft_replication_lag", "Leader: entries each follower is behind", &["follower"]),
            jobs: gauge_vec("jobs", "Jobs in the local state machine, by state", &["state"]),
            tasks: gauge_vec("tasks", "Tasks in the local state machine, by state", &["state"]),
            executors: gauge_vec("executors", "Executors in the local state machine, by state", &["state"]),
            is_leader,
            registry,
        }
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}
