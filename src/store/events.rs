//! The event buffer of one master: the [`Change`]s that apply recorded, kept in memory by the
//! Raft index of the entry that made them, for subscribers to read from any index they still hold
//! (`master::events` serves it; read its doc for the API).
//!
//! - **Published by apply.** The state machine's apply loop publishes each entry's changes under
//!   the entry's index while it holds the state's write lock, so entries arrive in index order and
//!   the buffer never runs ahead of (or behind) the applied state. Entries without changes (blank,
//!   membership, a rejected command) advance the applied index only.
//! - **Retention.** At most [`MAX_EVENTS`] changes are kept: older entries are dropped whole, and
//!   the *floor* rises to the last index dropped. Every entry after the floor is held, complete.
//!   The floor also rises when the state is replaced by a snapshot (at start, or installed from
//!   the leader): the changes of the entries that snapshot covers were never seen here. A
//!   subscriber asking from below the floor gets [`TooOld`] at once; one that falls below it while
//!   reading (it read slower than apply wrote) gets it as its last item. Nothing a subscriber does
//!   ever makes apply wait: subscribers pull, and the buffer only drops.
//! - **Exactly once.** A subscriber's cursor is an entry index; it receives each later entry at
//!   most once, whole (one [`Entry`] per Raft entry with changes that match its filter), in index
//!   order, and resuming from the last index it received neither repeats nor skips one. Since
//!   every replica derives the same changes for an index, that holds across masters too.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::watch;

use crate::state::events::Change;
use crate::state::JobId;

/// Changes the buffer keeps before dropping its oldest entries (an entry is never split: one
/// entry larger than this, e.g. cancelling a 100,000-task job, is kept alone until the next).
pub const MAX_EVENTS: usize = 200_000;
/// Entries one read of the buffer copies out for a subscriber (its queue is this, no more).
pub const READ_BATCH: usize = 256;

/// The changes one Raft entry made, under its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub changes: Arc<[Change]>,
}

/// Which changes a subscriber wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only changes about this job (its job and task transitions, the cron firing that made it).
    pub job: Option<JobId>,
}

impl Filter {
    pub fn matches(&self, c: &Change) -> bool {
        self.job.is_none_or(|j| c.job() == Some(j))
    }
}

/// The events a subscriber asked for are gone (or went while it read): it must re-read the
/// state and resume from `resume_from`, the lowest index still held.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("events up to index {floor} are gone from this master; re-read the state and resume from index {resume_from} or later")]
pub struct TooOld {
    /// Every entry after this index is held.
    pub floor: u64,
    /// The index to read the state at (or after) and subscribe from again: the floor.
    pub resume_from: u64,
}

impl TooOld {
    fn at(floor: u64) -> TooOld {
        TooOld { floor, resume_from: floor }
    }
}

struct Inner {
    /// Entries after `floor`, in index order, only those with changes.
    entries: VecDeque<Entry>,
    /// Changes held in `entries`.
    held: usize,
    /// Every entry after this index is in `entries` (or had no changes).
    floor: u64,
    /// The last index published.
    applied: u64,
    /// See [`MAX_EVENTS`] (a field so that tests can use a small buffer).
    max: usize,
}

/// One master's event buffer. Cheap to share (`Arc`); publishing takes a short lock.
pub struct EventLog {
    inner: Mutex<Inner>,
    /// The last index published: subscribers wait on it.
    applied: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::with_capacity(MAX_EVENTS)
    }
}

impl EventLog {
    pub fn with_capacity(max: usize) -> EventLog {
        let inner = Inner { entries: VecDeque::new(), held: 0, floor: 0, applied: 0, max };
        EventLog { inner: Mutex::new(inner), applied: watch::channel(0).0 }
    }

    /// Records entry `index`'s changes (none: it only advances the applied index). Called by the
    /// apply loop in index order; an index at or below the last one is ignored (it cannot carry
    /// anything new).
    pub fn publish(&self, index: u64, changes: Vec<Change>) {
        let mut g = self.inner.lock().expect("event buffer poisoned");
        if index <= g.applied && index != 0 {
            return;
        }
        g.applied = index;
        if !changes.is_empty() {
            g.held += changes.len();
            g.entries.push_back(Entry { index, changes: changes.into() });
            while g.held > g.max && g.entries.len() > 1 {
                if let Some(old) = g.entries.pop_front() {
                    g.held -= old.changes.len();
                    g.floor = old.index;
                }
            }
        }
        drop(g);
        self.applied.send_replace(index);
    }

    /// The state now reflects everything up to `index` without this buffer having seen it (a
    /// snapshot was loaded or installed): everything before is gone.
    pub fn reset(&self, index: u64) {
        let mut g = self.inner.lock().expect("event buffer poisoned");
        g.entries.clear();
        g.held = 0;
        g.floor = index;
        g.applied = index;
        drop(g);
        self.applied.send_replace(index);
    }

    /// `(floor, applied)`: every entry in `floor+1..=applied` is held.
    pub fn bounds(&self) -> (u64, u64) {
        let g = self.inner.lock().expect("event buffer poisoned");
        (g.floor, g.applied)
    }

    /// Entries after `after` that match `filter`, at most [`READ_BATCH`], and the index read up
    /// to (the last entry scanned, matching or not, or the applied index when all were read).
    fn read(&self, after: u64, filter: &Filter) -> Result<(Vec<Entry>, u64), TooOld> {
        let g = self.inner.lock().expect("event buffer poisoned");
        if after < g.floor {
            return Err(TooOld::at(g.floor));
        }
        let start = g.entries.partition_point(|e| e.index <= after);
        let mut out = Vec::new();
        let mut upto = after;
        // Bounded work under the lock: a filtered subscriber may pass over many entries.
        for (scanned, e) in g.entries.range(start..).enumerate() {
            if out.len() == READ_BATCH || scanned == READ_BATCH * 16 {
                return Ok((out, upto));
            }
            upto = e.index;
            if filter.job.is_none() {
                out.push(e.clone());
                continue;
            }
            let mine: Vec<Change> =
                e.changes.iter().filter(|c| filter.matches(c)).cloned().collect();
            if !mine.is_empty() {
                out.push(Entry { index: e.index, changes: mine.into() });
            }
        }
        // Everything held was read: the cursor is at the applied index (or ahead of it).
        Ok((out, after.max(g.applied)))
    }

    /// The entries after index `after` that match `filter`, in index order, as they are applied:
    /// see [`Subscription`]. [`TooOld`] when entries after `after` are no longer held.
    pub fn subscribe(self: &Arc<Self>, after: u64, filter: Filter) -> Result<Subscription, TooOld> {
        let floor = self.bounds().0;
        if after < floor {
            return Err(TooOld::at(floor));
        }
        Ok(Subscription { log: self.clone(), rx: self.applied.subscribe(), after, filter })
    }
}

/// A subscriber's place in an [`EventLog`].
pub struct Subscription {
    log: Arc<EventLog>,
    rx: watch::Receiver<u64>,
    /// The index read up to: every matching entry at or below it was handed out.
    after: u64,
    filter: Filter,
}

/// What a subscription yields: a batch of entries (possibly none, when it read past entries that
/// did not match) and the index it has read up to; or [`TooOld`], after which it ends.
pub type Item = Result<(Vec<Entry>, u64), TooOld>;

impl Subscription {
    /// The index read up to so far.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// The next batch: waits until something after the cursor is applied. Entries come in index
    /// order, each once; `Err(TooOld)` when the cursor fell below the floor (then resubscribe).
    /// `None` when the buffer is gone (the master is stopping).
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            self.rx.borrow_and_update();
            match self.log.read(self.after, &self.filter) {
                Err(e) => return Some(Err(e)),
                Ok((entries, upto)) => {
                    let moved = upto > self.after;
                    self.after = self.after.max(upto);
                    if !entries.is_empty() || moved {
                        return Some(Ok((entries, self.after)));
                    }
                }
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The subscription as a stream of [`Item`]s; it ends after the first `TooOld`.
    pub fn into_stream(self) -> impl Stream<Item = Item> + Send + 'static {
        futures::stream::unfold(Some(self), |s| async move {
            let mut s = s?;
            match s.next().await? {
                Ok(batch) => Some((Ok(batch), Some(s))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{JobState, TaskState};

    fn job(n: u128) -> JobId {
        uuid::Uuid::from_u128(n)
    }

    fn created(n: u128) -> Change {
        Change::Job { job: job(n), from: None, to: JobState::Pending }
    }

    fn task(n: u128) -> Change {
        Change::Task {
            job: job(n),
            index: 0,
            from: TaskState::Pending,
            to: TaskState::Assigned,
            attempt: 1,
            token: 1,
            executor: "e1".into(),
            exit_code: None,
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index).collect()
    }

    #[tokio::test]
    async fn a_subscriber_gets_every_entry_after_its_index_once_in_order() {
        let log = Arc::new(EventLog::default());
        log.publish(1, vec![created(1)]);
        log.publish(2, vec![]); // a blank entry
        log.publish(3, vec![created(2), task(2)]);
        let mut s = log.subscribe(1, Filter::default()).unwrap();
        let (entries, upto) = s.next().await.unwrap().unwrap();
        assert_eq!((indexes(&entries), upto), (vec![3], 3));
        assert_eq!(entries[0].changes.len(), 2);
        log.publish(4, vec![task(1)]);
        let (entries, upto) = s.next().await.unwrap().unwrap();
        assert_eq!((indexes(&entries), upto), (vec![4], 4));
        // Resuming from the last index seen repeats nothing.
        let mut again = log.subscribe(upto, Filter::default()).unwrap();
        log.publish(5, vec![created(3)]);
        let (entries, _) = again.next().await.unwrap().unwrap();
        assert_eq!(indexes(&entries), vec![5]);
    }

    #[tokio::test]
    async fn a_job_filter_keeps_that_jobs_changes_and_still_advances_past_others() {
        let log = Arc::new(EventLog::default());
        log.publish(1, vec![created(1), created(2)]);
        log.publish(2, vec![task(2)]);
        let mut s = log.subscribe(0, Filter { job: Some(job(1)) }).unwrap();
        let (entries, upto) = s.next().await.unwrap().unwrap();
        assert_eq!((indexes(&entries), upto), (vec![1], 2));
        assert_eq!(&*entries[0].changes, &[created(1)]);
    }

    #[tokio::test]
    async fn retention_drops_whole_entries_and_a_subscriber_below_the_floor_is_told() {
        let log = Arc::new(EventLog::with_capacity(3));
        let mut slow = log.subscribe(0, Filter::default()).unwrap();
        for i in 1..=4u64 {
            log.publish(i, vec![created(i as u128), task(i as u128)]);
        }
        // 8 changes, room for 3: entries 1..=3 went (an entry is never split), the floor is 3.
        assert_eq!(log.bounds(), (3, 4));
        let err = slow.next().await.unwrap().unwrap_err();
        assert_eq!(err, TooOld { floor: 3, resume_from: 3 });
        assert!(err.to_string().contains("resume from index 3"), "{err}");
        assert_eq!(log.subscribe(2, Filter::default()).err(), Some(TooOld::at(3)));
        let mut s = log.subscribe(3, Filter::default()).unwrap();
        assert_eq!(indexes(&s.next().await.unwrap().unwrap().0), vec![4]);
    }

    #[tokio::test]
    async fn a_snapshot_resets_the_floor() {
        let log = Arc::new(EventLog::default());
        log.publish(1, vec![created(1)]);
        let mut s = log.subscribe(1, Filter::default()).unwrap();
        log.reset(10);
        assert_eq!(s.next().await.unwrap().unwrap_err().floor, 10);
        assert!(log.subscribe(5, Filter::default()).is_err());
        let mut s = log.subscribe(10, Filter::default()).unwrap();
        log.publish(11, vec![created(2)]);
        assert_eq!(indexes(&s.next().await.unwrap().unwrap().0), vec![11]);
    }

    #[tokio::test]
    async fn a_subscriber_from_the_future_waits_for_it() {
        let log = Arc::new(EventLog::default());
        log.publish(1, vec![created(1)]);
        let mut s = log.subscribe(3, Filter::default()).unwrap();
        log.publish(2, vec![created(2)]);
        log.publish(3, vec![created(3)]);
        log.publish(4, vec![created(4)]);
        let (entries, _) = s.next().await.unwrap().unwrap();
        assert_eq!(indexes(&entries), vec![4]);
    }
}
