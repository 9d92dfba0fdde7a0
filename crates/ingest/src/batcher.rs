//! Group commit: a bounded queue into workers that store a batch of reports
//! and their rollups in one transaction, update the windows in one round
//! trip, and only then answer every waiting request.
//!
//! No timer: a worker takes whatever is queued when it becomes free (up to
//! `max_batch`), so a lone report at night is written at once and a burst
//! fills batches by itself while the previous one commits.

use crate::ClientIdentity;
use crate::queue::{FairQueue, Refused};
use downwatch_core::{City, CountryCode, GLOBAL_SCOPE, ProblemKind, ReportRecord, minute_of};
use downwatch_store::Storage;
use downwatch_windows::{Claim, DedupKey, DedupRule, Increment, WindowStore};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Reports waiting for a worker, all services together; beyond it a
    /// report is refused (503) unless it pushes out a report of a service
    /// with a longer queue (see `queue`).
    pub queue_capacity: usize,
    /// Most reports one transaction takes.
    pub max_batch: usize,
    /// Concurrent batches: one while another commits keeps the database busy.
    pub workers: usize,
    /// One counted report per client per service per window, and a cap per address.
    pub dedup: DedupRule,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 20_000,
            max_batch: 1_000,
            workers: 2,
            dedup: DedupRule {
                window: Duration::from_secs(15 * 60),
                per_address: 10,
            },
        }
    }
}

/// A parsed report, waiting to be stored.
#[derive(Debug, Clone)]
pub struct Submission {
    pub service_id: i64,
    pub problem: ProblemKind,
    pub country: Option<CountryCode>,
    pub city: Option<City>,
    pub client: ClientIdentity,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// A stored report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub id: i64,
    pub counted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the ingest queue is full")]
    QueueFull,
    #[error("the server is shutting down")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("the database did not store the batch")]
    Unavailable,
    /// Pushed out of a full queue by a report of a service with fewer waiting.
    #[error("pushed out of the full ingest queue")]
    Shed,
}

/// Counters of the pipeline, registered by the API's metrics registry.
#[derive(Clone)]
pub struct IngestMetrics {
    pub stored: Counter,
    pub counted: Counter,
    pub store_failures: Counter,
    pub window_failures: Counter,
    /// Batches that left the window store alone while it was failing.
    pub window_skipped: Counter,
    pub abandoned: Counter,
    pub batch_size: Histogram,
    pub flush_seconds: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            stored: Counter::default(),
            counted: Counter::default(),
            store_failures: Counter::default(),
            window_failures: Counter::default(),
            window_skipped: Counter::default(),
            abandoned: Counter::default(),
            batch_size: Histogram::new([1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0]),
            flush_seconds: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        }
    }
}

struct Job {
    submission: Submission,
    reply: oneshot::Sender<Result<Accepted, CommitError>>,
}

/// The submitting side; cheap to clone into every HTTP worker.
#[derive(Clone)]
pub struct Ingest {
    queue: Arc<Queue>,
}

/// The fair queue behind a lock held for a push or a take, and the
/// workers' wake-up.
struct Queue {
    items: Mutex<FairQueue<Job>>,
    /// Mirror of the queue's length, read by metrics without the lock.
    depth: AtomicUsize,
    ready: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, FairQueue<Job>> {
        // A panic while holding the lock leaves a consistent queue (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().close();
        self.ready.notify_waiters();
    }
}

/// The running workers; `shutdown` drains the queue and waits for them.
pub struct IngestWorkers {
    queue: Arc<Queue>,
    handles: Vec<JoinHandle<()>>,
}

impl Ingest {
    pub fn start(
        storage: Arc<dyn Storage>,
        windows: Arc<dyn WindowStore>,
        config: IngestConfig,
        metrics: IngestMetrics,
    ) -> (Ingest, IngestWorkers) {
        let queue = Arc::new(Queue {
            items: Mutex::new(FairQueue::new(config.queue_capacity)),
            depth: AtomicUsize::new(0),
            ready: Notify::new(),
        });
        let shared = Arc::new(Shared {
            storage,
            windows,
            breaker: Breaker::default(),
            queue: queue.clone(),
            max_batch: config.max_batch.max(1),
            dedup: config.dedup,
            metrics,
        });
        let handles = (0..config.workers.max(1))
            .map(|_| tokio::spawn(shared.clone().run()))
            .collect();
        (
            Ingest {
                queue: queue.clone(),
            },
            IngestWorkers { queue, handles },
        )
    }

    /// Queues a report; the receiver answers once it is committed (or not).
    pub fn submit(
        &self,
        submission: Submission,
    ) -> Result<oneshot::Receiver<Result<Accepted, CommitError>>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let service = submission.service_id;
        let pushed = {
            let mut q = self.queue.lock();
            let pushed = q.push(service, Job { submission, reply });
            self.queue.depth.store(q.len(), Ordering::Relaxed);
            pushed
        };
        match pushed {
            Ok(shed) => {
                if let Some(job) = shed {
                    let _ = job.reply.send(Err(CommitError::Shed));
                }
                self.queue.ready.notify_one();
                Ok(rx)
            }
            Err((Refused::Full, _)) => Err(SubmitError::QueueFull),
            Err((Refused::Closed, _)) => Err(SubmitError::Closed),
        }
    }

    /// Reports queued and not yet taken by a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue.depth.load(Ordering::Relaxed)
    }
}

impl IngestWorkers {
    /// Refuses new submissions, stores everything already queued, and waits
    /// for the workers to finish.
    pub async fn shutdown(self) {
        self.queue.close();
        for h in self.handles {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "ingest worker ended abnormally");
            }
        }
    }
}

/// After a failed window-store call, batches leave the store alone for this
/// long: a Redis that is down costs one failed call (which waits for the
/// client's reconnection attempts) a second, not one per batch, so reports
/// keep being stored at full speed.
const WINDOWS_RETRY: Duration = Duration::from_secs(1);

/// Whether batches call the window store. Closed: they do. Open (for
/// [`WINDOWS_RETRY`] after a failure): they skip it. Then one batch probes
/// while the others keep skipping; its success closes the breaker, its
/// failure opens it again. Skipped batches leave claims and counts out of
/// the store, so the first success after a failure has the store marked
/// stale: the refill then rebuilds both from the database.
#[derive(Default)]
struct Breaker(Mutex<BreakerState>);

#[derive(Default)]
struct BreakerState {
    /// Until when batches skip the store; `None` while it answers.
    open_until: Option<Instant>,
    /// A batch is calling the store to see whether it answers again.
    probing: bool,
    /// The store missed claims or counts since it last answered.
    stale: bool,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this batch should leave the store alone (which the store
    /// then misses: its claims and counts).
    fn skip(&self) -> bool {
        let mut b = self.lock();
        let skip = match b.open_until {
            None => false,
            Some(until) if Instant::now() < until => true,
            // Time to try again: this batch probes, the others skip.
            Some(_) if b.probing => true,
            Some(_) => {
                b.probing = true;
                false
            }
        };
        b.stale |= skip;
        skip
    }

    /// The store failed (or a batch skipped it): open for another while.
    fn trip(&self) {
        let mut b = self.lock();
        b.open_until = Some(Instant::now() + WINDOWS_RETRY);
        b.probing = false;
        b.stale = true;
    }

    /// The store answered; `true` when it had missed something meanwhile.
    fn answered(&self) -> bool {
        let mut b = self.lock();
        let stale = b.stale;
        *b = BreakerState::default();
        stale
    }
}

struct Shared {
    storage: Arc<dyn Storage>,
    windows: Arc<dyn WindowStore>,
    breaker: Breaker,
    queue: Arc<Queue>,
    max_batch: usize,
    dedup: DedupRule,
    metrics: IngestMetrics,
}

impl Shared {
    async fn run(self: Arc<Self>) {
        while let Some(batch) = self.next_batch().await {
            self.process(batch).await;
        }
    }

    /// Waits for work and takes what is queued, up to `max_batch`, round-
    /// robin across services; `None` once the queue is closed and empty.
    async fn next_batch(&self) -> Option<Vec<Job>> {
        loop {
            // Registered before looking, so a push between the look and the
            // wait still wakes this worker.
            let ready = self.queue.ready.notified();
            {
                let mut q = self.queue.lock();
                if !q.is_empty() {
                    let mut batch = Vec::with_capacity(q.len().min(self.max_batch));
                    q.take(self.max_batch, &mut batch);
                    self.queue.depth.store(q.len(), Ordering::Relaxed);
                    if !q.is_empty() {
                        // More than a batch waits: the next free worker takes it.
                        self.queue.ready.notify_one();
                    }
                    return Some(batch);
                }
                if q.is_closed() {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Has the window store rebuilt from the database by the refill, which
    /// every instance runs within seconds of seeing it unfilled.
    async fn rebuild_windows(&self) {
        tracing::info!("window store answers again; marking it for a rebuild from the database");
        if let Err(e) = self.windows.mark_stale().await {
            tracing::warn!(error = %e, "could not mark the window store for a rebuild");
            self.breaker.trip();
        }
    }

    #[tracing::instrument(skip_all, fields(batch = jobs.len()))]
    async fn process(&self, mut jobs: Vec<Job>) {
        let started = Instant::now();
        // A requester that gave up waiting was answered 503: storing its
        // report now would make the 503 a lie and its retry a duplicate.
        let before = jobs.len();
        jobs.retain(|j| !j.reply.is_closed());
        self.metrics.abandoned.inc_by((before - jobs.len()) as u64);
        if jobs.is_empty() {
            return;
        }
        let keys: Vec<DedupKey> = jobs
            .iter()
            .map(|j| DedupKey {
                service_id: j.submission.service_id,
                client: j.submission.client.client,
                address: j.submission.client.address,
                previous: j.submission.client.previous,
            })
            .collect();
        let claimed = if self.breaker.skip() {
            self.metrics.window_skipped.inc();
            None
        } else {
            match self.windows.claim(&keys, self.dedup).await {
                Ok(c) => {
                    if self.breaker.answered() {
                        self.rebuild_windows().await;
                    }
                    Some(c)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "window store unavailable; de-duplicating within the batch only");
                    self.metrics.window_failures.inc();
                    self.breaker.trip();
                    None
                }
            }
        };
        let claimed_in_store = claimed.is_some();
        // Windows are derived state: without them, keep storing reports,
        // counting only the first of each client within this batch.
        let claims = claimed.unwrap_or_else(|| within_batch(&keys));
        // Submissions move into the records; the replies wait aside.
        let (submissions, replies): (Vec<Submission>, Vec<_>) =
            jobs.into_iter().map(|j| (j.submission, j.reply)).unzip();
        let records: Vec<ReportRecord> = submissions
            .into_iter()
            .zip(&claims)
            .map(|(s, claim)| ReportRecord {
                service_id: s.service_id,
                problem: s.problem,
                country: s.country,
                city: s.city,
                client_hash: s.client.client,
                address_hash: Some(s.client.address),
                counted: claim.counts(),
                received_at: s.received_at,
            })
            .collect();

        let ids = match self.storage.insert_reports(&records).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = ?e, reports = records.len(), "storing a batch of reports failed");
                self.metrics.store_failures.inc();
                if claimed_in_store {
                    let held: Vec<(DedupKey, Claim)> =
                        keys.iter().copied().zip(claims.iter().copied()).collect();
                    if let Err(e) = self.windows.release(&held).await {
                        tracing::warn!(error = %e, "could not release de-duplication claims");
                    }
                }
                for reply in replies {
                    let _ = reply.send(Err(CommitError::Unavailable));
                }
                return;
            }
        };

        // Only after a claim the store answered: a batch whose claim failed
        // or was skipped would wait for the same failure again.
        if claimed_in_store && let Err(e) = self.windows.add(&increments(&records)).await {
            tracing::warn!(error = %e, "window counts not updated; they are rebuilt from the rollups");
            self.metrics.window_failures.inc();
            self.breaker.trip();
        }

        let counted = records.iter().filter(|r| r.counted).count();
        self.metrics.stored.inc_by(records.len() as u64);
        self.metrics.counted.inc_by(counted as u64);
        self.metrics.batch_size.observe(records.len() as f64);
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        for ((reply, id), record) in replies.into_iter().zip(ids).zip(&records) {
            // The requester may have given up since; the report is stored anyway.
            let _ = reply.send(Ok(Accepted {
                id,
                counted: record.counted,
            }));
        }
    }
}

/// Claims without the window store: the first report of each client in the
/// batch counts.
fn within_batch(keys: &[DedupKey]) -> Vec<Claim> {
    let mut seen = HashSet::with_capacity(keys.len());
    keys.iter()
        .map(|k| {
            if seen.insert((k.service_id, k.client)) {
                Claim::Counted
            } else {
                Claim::Duplicate
            }
        })
        .collect()
}

/// Counted reports summed per service, scope and minute.
fn increments(records: &[ReportRecord]) -> Vec<Increment> {
    let mut sums: BTreeMap<(i64, &str, i64), u32> = BTreeMap::new();
    for r in records.iter().filter(|r| r.counted) {
        let minute = minute_of(r.received_at);
        *sums
            .entry((r.service_id, GLOBAL_SCOPE, minute))
            .or_default() += 1;
        if let Some(c) = &r.country {
            *sums.entry((r.service_id, c.as_str(), minute)).or_default() += 1;
        }
    }
    sums.into_iter()
        .map(|((service_id, scope, minute), count)| Increment {
            service_id,
            scope: scope.to_owned(),
            minute,
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_count_only_counted_reports_in_global_and_country_scopes() {
        let rec = |secs, country: Option<&str>, counted| ReportRecord {
            service_id: 3,
            problem: ProblemKind::parse("login").unwrap(),
            country: country.map(|c| CountryCode::parse(c).unwrap()),
            city: None,
            client_hash: [1; 16],
            address_hash: None,
            counted,
            received_at: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
        };
        let incs = increments(&[
            rec(60, Some("DE"), true),
            rec(70, Some("DE"), true),
            rec(80, None, false),
            rec(130, None, true),
        ]);
        let find = |scope: &str, minute| {
            incs.iter()
                .find(|i| i.scope == scope && i.minute == minute)
                .map(|i| i.count)
        };
        assert_eq!(find("global", 60), Some(2));
        assert_eq!(find("DE", 60), Some(2));
        assert_eq!(find("global", 120), Some(1));
        assert_eq!(incs.len(), 3);
    }
}
