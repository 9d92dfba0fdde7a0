//! The live loop of `downwatch serve`: every tick, the instance holding the
//! detector lease steps every scope over the minutes completed since the
//! last tick, reading them from the window store (or from the database
//! rollups after a long pause), writes the incidents and scope states in one
//! transaction, and publishes what happened.

use crate::engine::{Engine, LOOKBACK_MINUTES, ScopeKey, ServiceCounts, Slot, WARMUP_DAYS};
use crate::events::{self, Event, IncidentView, ServiceCount};
use crate::metrics::DetectorMetrics;
use crate::refill::Refiller;
use crate::{FLEET_META_KEY, StoredSlot, StoredSlotRef, incident_record, load_fleet};
use downwatch_core::detector::{DetectorParams, Transition};
use downwatch_core::{GLOBAL_SCOPE, Level};
use downwatch_store::{IncidentWrite, ScopeStateRow, Storage};
use downwatch_windows::{BUCKET_RETENTION, DedupRule, ScopeRead, WindowStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The name of the lease that makes one instance the detector.
pub const LEASE: &str = "detector";

#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Time between ticks.
    pub interval: Duration,
    /// How long after a minute ends before it is read, for reports still
    /// being committed when the minute ended.
    pub settle: Duration,
    /// This instance's name in the lease.
    pub instance: String,
    /// How long the lease outlives its holder's last tick: after a crash,
    /// another instance takes over within this.
    pub lease_ttl: Duration,
    /// Every scope's state is saved at least this often (scopes with news
    /// are saved at once); a new lease holder replays the rest from counts.
    pub persist_every: Duration,
    /// Ingestion's de-duplication rule, to restore its claims when the
    /// window store is refilled.
    pub dedup: DedupRule,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            settle: Duration::from_secs(2),
            instance: format!("{}-{}", std::process::id(), rand_suffix()),
            lease_ttl: Duration::from_secs(15),
            persist_every: Duration::from_secs(300),
            dedup: DedupRule {
                window: Duration::from_secs(15 * 60),
                per_address: 10,
            },
        }
    }
}

pub(crate) fn rand_suffix() -> u64 {
    // Distinct per start; the lease only needs instances to differ.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What a tick did.
#[derive(Debug, Clone, PartialEq)]
pub enum TickOutcome {
    /// Another instance holds the lease.
    Standby,
    /// Nothing new to step.
    Idle,
    /// Minutes up to `until` stepped.
    Stepped {
        until: i64,
        scopes: usize,
        events: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("database: {0}")]
    Store(#[from] downwatch_store::StoreError),
    #[error("window store: {0}")]
    Windows(#[from] downwatch_windows::WindowError),
    #[error("detector: {0}")]
    Detector(#[from] downwatch_core::detector::DetectorError),
}

pub struct Live {
    storage: Arc<dyn Storage>,
    windows: Arc<dyn WindowStore>,
    refiller: Refiller,
    params: DetectorParams,
    config: LiveConfig,
    metrics: DetectorMetrics,
    /// Loaded while this instance holds the lease.
    engine: Option<Engine>,
    last_persist: i64,
    fleet_hour: i64,
    clock: downwatch_core::Clock,
}

impl Live {
    pub fn new(
        storage: Arc<dyn Storage>,
        windows: Arc<dyn WindowStore>,
        params: DetectorParams,
        config: LiveConfig,
        metrics: DetectorMetrics,
    ) -> Self {
        Self {
            refiller: Refiller::new(
                storage.clone(),
                windows.clone(),
                config.dedup,
                metrics.window_refills.clone(),
            ),
            storage,
            windows,
            params,
            config,
            metrics,
            engine: None,
            last_persist: i64::MIN,
            fleet_hour: i64::MIN,
            clock: downwatch_core::Clock::System,
        }
    }

    /// Ticks by `clock` instead of the system clock (a simulated one for
    /// demos and scenario replays).
    pub fn with_clock(mut self, clock: downwatch_core::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Ticks every `interval` until the task is aborted.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.clock.timestamp();
            if let Err(e) = self.tick(now).await {
                tracing::warn!(error = %e, "detector tick failed; retrying next tick");
            }
        }
    }

    /// One tick at `now` (unix seconds). On error the in-memory state is
    /// dropped and reloaded from the database next time, so nothing that was
    /// not committed is believed.
    pub async fn tick(&mut self, now: i64) -> Result<TickOutcome, LiveError> {
        let started = Instant::now();
        let result = self.tick_inner(now).await;
        match &result {
            Ok(TickOutcome::Standby) => {}
            Ok(_) => self
                .metrics
                .tick_seconds
                .observe(started.elapsed().as_secs_f64()),
            Err(_) => {
                self.engine = None;
                self.metrics.tick_failures.inc();
            }
        }
        result
    }

    async fn tick_inner(&mut self, now: i64) -> Result<TickOutcome, LiveError> {
        let ttl = self.config.lease_ttl;
        if !self
            .windows
            .lease(LEASE, &self.config.instance, ttl)
            .await?
        {
            self.engine = None;
            return Ok(TickOutcome::Standby);
        }
        // The settling delay is real time: a fast clock moves further meanwhile.
        let settle = self.clock.span(self.config.settle);
        let until = (now - settle).div_euclid(60) * 60 - 60;
        // Never step on a store that lost its data: refill it, or wait for
        // the instance that is refilling it.
        if self.refiller.ensure_filled(now).await?.is_none() && !self.windows.is_filled().await? {
            return Ok(TickOutcome::Idle);
        }
        if self.engine.is_none() {
            self.engine = Some(self.load().await?);
        }
        let services = self.storage.list_services().await?;
        let Some(engine) = self.engine.as_mut() else {
            return Ok(TickOutcome::Idle);
        };

        // What each service needs, and from where.
        let horizon = BUCKET_RETENTION.as_secs() as i64 - 3600;
        let mut from_windows: Vec<(i64, i64)> = Vec::new();
        let mut from_rollups: Vec<(i64, i64, bool)> = Vec::new();
        for s in &services {
            match engine.next_minute(s.id) {
                None => from_rollups.push((s.id, until - WARMUP_DAYS * 86_400, true)),
                Some(next) if next > until => {}
                Some(next) if until - next > horizon => from_rollups.push((s.id, next, false)),
                Some(next) => from_windows.push((s.id, next)),
            }
        }
        if from_windows.is_empty() && from_rollups.is_empty() {
            return Ok(TickOutcome::Idle);
        }

        let mut feeds: Vec<(ServiceCounts, i64, bool)> = Vec::new();
        for &(id, first, warmup) in &from_rollups {
            let start = first - 60 * LOOKBACK_MINUTES;
            let rows = self.storage.minute_counts(id, start, until + 60).await?;
            let len = ((until - start) / 60 + 1) as usize;
            feeds.push((
                ServiceCounts::from_rows(id, start, len, &rows),
                first,
                warmup,
            ));
        }
        if !from_windows.is_empty() {
            // One round trip in the steady state: the known scopes' buckets
            // and the scopes with recent counts; a second only for new scopes.
            let earliest = from_windows.iter().map(|w| w.1).min().unwrap_or(until);
            let ids: Vec<i64> = from_windows.iter().map(|w| w.0).collect();
            let read_for = |id: i64, first: i64, scope: String| {
                let start = first - 60 * LOOKBACK_MINUTES;
                ScopeRead {
                    service_id: id,
                    scope,
                    from_minute: start,
                    n: ((until - start) / 60 + 1) as usize,
                }
            };
            let mut reads = Vec::new();
            for &(id, first) in &from_windows {
                for ((_, scope), _) in engine.scopes_of(id) {
                    reads.push(read_for(id, first, scope.clone()));
                }
            }
            let (mut answers, active) = self
                .windows
                .read_tick(&reads, &ids, earliest - 60 * LOOKBACK_MINUTES)
                .await?;
            let mut new_reads = Vec::new();
            for (&(id, first), active) in from_windows.iter().zip(active) {
                for scope in active {
                    if !engine.slots.contains_key(&(id, scope.clone())) {
                        new_reads.push(read_for(id, first, scope));
                    }
                }
            }
            if !new_reads.is_empty() {
                answers.extend(self.windows.read(&new_reads).await?);
                reads.extend(new_reads);
            }
            for &(id, first) in &from_windows {
                let start = first - 60 * LOOKBACK_MINUTES;
                let len = ((until - start) / 60 + 1) as usize;
                let mut counts = ServiceCounts::new(id, start, len);
                for (read, values) in reads.iter().zip(&answers) {
                    if read.service_id == id {
                        counts.scopes.insert(read.scope.clone(), values.clone());
                    }
                }
                feeds.push((counts, first, false));
            }
        }
        // A country that qualifies learns its past first: read that from the
        // rollups (rare: once per country and service).
        for (counts, first, _) in &mut feeds {
            if let Some(born) = engine.first_birth(counts, *first, until) {
                let start = (born - engine.country_warmup).min(counts.start);
                if start < counts.start {
                    let rows = self
                        .storage
                        .minute_counts(counts.service_id, start, until + 60)
                        .await?;
                    let len = ((until - start) / 60 + 1) as usize;
                    *counts = ServiceCounts::from_rows(counts.service_id, start, len, &rows);
                }
            }
        }

        let mut happenings = Vec::new();
        let mut stepped: Vec<ScopeKey> = Vec::new();
        let mut warmed: Vec<i64> = Vec::new();
        for (counts, first, warmup) in &feeds {
            let mark = happenings.len();
            stepped.extend(engine.advance(counts, *first, until, &mut happenings)?);
            if *warmup {
                // History learnt from, not news: only an incident still open
                // at the end is written (past ones are `downwatch detect`'s).
                happenings.truncate(mark);
                warmed.push(counts.service_id);
            }
        }

        // Incidents to write: the last version of each one that changed, and
        // every open one (its total grows each minute).
        let mut by_scope: BTreeMap<ScopeKey, Vec<&downwatch_core::detector::IncidentEvent>> =
            BTreeMap::new();
        for h in &happenings {
            by_scope
                .entry((h.service_id, h.scope.clone()))
                .or_default()
                .extend(&h.events);
        }
        let mut writes = Vec::new();
        let mut write_keys: Vec<(ScopeKey, u64)> = Vec::new();
        for key in &stepped {
            let Some(slot) = engine.slots.get(key) else {
                continue;
            };
            let mut finals =
                crate::engine::final_incidents(by_scope.get(key).into_iter().flatten().copied());
            if let Some(open) = slot.detector.incident() {
                finals.insert(open.seq, open.clone());
            }
            for (seq, incident) in finals {
                let id = if slot.incident_seq == Some(seq) {
                    slot.incident_id
                } else {
                    None
                };
                writes.push(IncidentWrite {
                    id,
                    record: incident_record(key.0, &key.1, &incident),
                });
                write_keys.push((key.clone(), seq));
            }
        }

        // States to save: scopes with news at once, all of them now and then.
        let persist_all =
            now.saturating_sub(self.last_persist) >= self.config.persist_every.as_secs() as i64;
        // A new peak or a growing total needs no state: replaying the minutes
        // from the last saved state rewrites the same row. Transitions and
        // level changes do (the row ids, and the levels readers see).
        let news: Vec<ScopeKey> = happenings
            .iter()
            .filter(|h| {
                h.level != h.previous_level
                    || h.events.iter().any(|e| e.transition != Transition::Updated)
            })
            .map(|h| (h.service_id, h.scope.clone()))
            .collect();
        let mut to_save: Vec<ScopeKey> = if persist_all {
            stepped.clone()
        } else {
            stepped
                .iter()
                .filter(|k| news.contains(k) || warmed.contains(&k.0))
                .cloned()
                .collect()
        };
        to_save.sort();
        to_save.dedup();
        // The slots as they will be once the writes commit.
        let mut pending: HashMap<ScopeKey, Option<u64>> = HashMap::new();
        for (key, seq) in &write_keys {
            pending.insert(key.clone(), Some(*seq));
        }
        let mut states = Vec::with_capacity(to_save.len());
        for key in &to_save {
            if let Some(slot) = engine.slots.get(key) {
                let seq = pending.get(key).copied().unwrap_or(slot.incident_seq);
                states.push(state_row(key, slot, seq));
            }
        }

        // Webhook deliveries of the incident events, in the same transaction,
        // each with its incident's breakdowns (one facet read per event; a
        // tick without incident events reads none).
        let mut tops = HashMap::new();
        for h in &happenings {
            for ev in &h.events {
                let key = ((h.service_id, h.scope.clone()), ev.incident.seq);
                if let std::collections::hash_map::Entry::Vacant(slot) = tops.entry(key) {
                    let record = incident_record(h.service_id, &h.scope, &ev.incident);
                    let found =
                        crate::breakdown::tops_of(self.storage.as_ref(), &record, h.minute + 60)
                            .await?;
                    slot.insert(found);
                }
            }
        }
        let notices = crate::notices::for_happenings(&happenings, &write_keys, &services, &tops);
        let ids = self
            .storage
            .save_detection_with(&writes, &states, &notices)
            .await?;
        if persist_all {
            self.last_persist = now;
        }
        for ((key, seq), id) in write_keys.iter().zip(&ids) {
            if let Some(slot) = engine.slots.get_mut(key) {
                slot.incident_seq = Some(*seq);
                slot.incident_id = Some(*id);
            }
        }

        // Tell everyone, after the commit.
        let slugs: HashMap<i64, &str> = services.iter().map(|s| (s.id, s.slug.as_str())).collect();
        let mut messages: Vec<Event> = Vec::new();
        for h in &happenings {
            let Some(slug) = slugs.get(&h.service_id) else {
                continue;
            };
            if h.level != h.previous_level {
                messages.push(Event::Status {
                    service: (*slug).to_owned(),
                    scope: h.scope.clone(),
                    level: h.level,
                    previous_level: h.previous_level,
                    at: events::rfc3339(h.minute + 60),
                });
            }
            for ev in &h.events {
                let key = (h.service_id, h.scope.clone());
                let id = write_keys
                    .iter()
                    .zip(&ids)
                    .find(|((k, seq), _)| *k == key && *seq == ev.incident.seq)
                    .map(|(_, id)| *id);
                if let Some(id) = id {
                    let record = incident_record(h.service_id, &h.scope, &ev.incident);
                    messages.push(Event::Incident {
                        transition: ev.transition,
                        incident: IncidentView::new(id, slug, &record, h.minute + 60),
                    });
                }
            }
        }
        let mut counts: Vec<ServiceCount> = Vec::new();
        for (c, _, warmup) in &feeds {
            if *warmup {
                continue;
            }
            let reports = c.get(GLOBAL_SCOPE, until);
            let Some(slug) = slugs.get(&c.service_id) else {
                continue;
            };
            let key = (c.service_id, GLOBAL_SCOPE.to_owned());
            let slot = engine.slots.get(&key);
            let level = engine.level(c.service_id);
            if reports > 0 || level != Level::Ok {
                counts.push(ServiceCount {
                    service: (*slug).to_owned(),
                    reports,
                    baseline: slot.map_or(0.0, |s| (s.expected * 100.0).round() / 100.0),
                    level,
                });
            }
        }
        if !counts.is_empty() {
            messages.push(Event::Counts {
                minute: events::rfc3339(until),
                services: counts,
            });
        }
        let n_events = messages.len();
        for m in &messages {
            match serde_json::to_string(m) {
                Ok(payload) => {
                    if let Err(e) = self.windows.publish(events::CHANNEL, &payload).await {
                        tracing::warn!(error = %e, "publishing a detector event failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unserialisable detector event"),
            }
        }
        for h in &happenings {
            for ev in &h.events {
                tracing::info!(
                    service = slugs.get(&h.service_id).copied().unwrap_or("?"),
                    scope = %h.scope,
                    transition = ?ev.transition,
                    started_at = %events::rfc3339(ev.incident.started_at),
                    "incident"
                );
            }
        }

        let open = engine
            .slots
            .values()
            .filter(|s| s.detector.incident().is_some())
            .count();
        self.metrics.open_incidents.set(open as i64);
        self.metrics.scopes.set(engine.slots.len() as i64);

        if until.div_euclid(3600) != self.fleet_hour {
            self.fleet_hour = until.div_euclid(3600);
            engine.refresh_fleet();
            match serde_json::to_string(&engine.fleet) {
                Ok(json) => self.storage.set_meta(FLEET_META_KEY, &json).await?,
                Err(e) => tracing::warn!(error = %e, "unserialisable fleet profile"),
            }
        }
        Ok(TickOutcome::Stepped {
            until,
            scopes: stepped.len(),
            events: n_events,
        })
    }

    /// Loads every scope's state (on taking the lease).
    async fn load(&mut self) -> Result<Engine, LiveError> {
        let fleet = load_fleet(self.storage.as_ref()).await?;
        let mut engine = Engine::new(self.params.clone(), fleet);
        for row in self.storage.scope_states().await? {
            match serde_json::from_str::<StoredSlot>(&row.state) {
                Ok(stored) => {
                    engine.slots.insert(
                        (row.service_id, row.scope),
                        Slot {
                            detector: stored.detector,
                            incident_id: row.incident_id,
                            incident_seq: stored.incident_seq,
                            expected: row.expected,
                        },
                    );
                }
                // A state this version cannot read: that scope learns again
                // from the rollups rather than stopping the detector.
                Err(e) => tracing::warn!(
                    service_id = row.service_id,
                    scope = %row.scope,
                    error = %e,
                    "unreadable detector state; relearning the scope"
                ),
            }
        }
        tracing::info!(
            scopes = engine.slots.len(),
            instance = %self.config.instance,
            "detector lease taken; states loaded"
        );
        // Force a full save soon after a takeover.
        self.last_persist = i64::MIN;
        Ok(engine)
    }
}

fn state_row(key: &ScopeKey, slot: &Slot, incident_seq: Option<u64>) -> ScopeStateRow {
    let stored = StoredSlotRef {
        detector: &slot.detector,
        incident_seq,
    };
    ScopeStateRow {
        service_id: key.0,
        scope: key.1.clone(),
        last_minute: slot.detector.last_minute().unwrap_or(0),
        level: slot.detector.level().as_str().to_owned(),
        expected: slot.expected,
        incident_id: slot.incident_id,
        // Serialising plain numbers and strings cannot fail.
        state: serde_json::to_string(&stored).unwrap_or_default(),
    }
}
