//! Metrics: what each worker and its type are doing, kept in Rust where recording costs a few
//! atomic operations, and served to Prometheus (`--metrics`, `server`). The same numbers feed
//! the stats hashes `denorun top` and `denorun status` read (`supervisor::board`).
//!
//! Workers are labelled by `type` and `id`; streams by `type` and `stream`. The process's own
//! resident memory and CPU time are read from `/proc` at each scrape (`process`).

mod process;
pub mod server;

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub r#type: String,
    pub id: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    r#type: String,
    id: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    r#type: String,
    id: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    r#type: String,
    id: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    stream: String,
    table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    r#type: String,
    stream: String,
}

/// A worker's states, as `denorun status` and `top` name them.
pub const STATES: [&str; 4] = ["running", "backoff", "parked", "stopped"];

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        // 50 µs to about 26 s, doubling.
        Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
    }
}

/// Every metric family; cheap to clone (the families are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    up: Family<WorkerLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
    starts: Family<WorkerLabels, Counter>,
    exits: Family<ReasonLabels, Counter>,
    uptime: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    heap_used: Family<WorkerLabels, Gauge>,
    heap_limit: Family<WorkerLabels, Gauge>,
    requests: Family<OutcomeLabels, Counter>,
    in_flight: Family<WorkerLabels, Gauge>,
    duration: Family<WorkerLabels, Histogram, Buckets>,
    stream_length: Family<StreamLabels, Gauge>,
    stream_pending: Family<StreamLabels, Gauge>,
    stream_oldest: Family<StreamLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    dead_letters: Family<StreamLabels, Gauge>,
    sync: SyncFamilies,
}

/// `denorun sync`'s families, by stream and table.
#[derive(Clone)]
struct SyncFamilies {
    rows: Family<SyncLabels, Counter>,
    batches: Family<SyncLabels, Counter>,
    copied: Family<SyncLabels, Counter>,
    dead: Family<SyncLabels, Counter>,
    backlog: Family<SyncLabels, Gauge>,
    seconds: Family<SyncLabels, Histogram, Buckets>,
}

/// One sync's numbers, for its loop to record into.
pub struct SyncStats {
    pub rows: Counter,
    pub batches: Counter,
    /// Batches written by COPY (the rest by INSERT … ON CONFLICT DO NOTHING).
    pub copied: Counter,
    pub dead: Counter,
    pub backlog: Gauge,
    pub seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("denorun");
        let (up, state, starts, exits) = (Family::default(), Family::default(), Family::default(), Family::default());
        registry.register("worker_up", "1 while the worker runs", Family::clone(&up));
        registry.register(
            "worker_state",
            "1 for the worker's state: running, backoff, parked or stopped",
            state.clone(),
        );
        registry.register("worker_starts", "Times the worker was started", starts.clone());
        registry.register("worker_exits", "Times the worker ended, by reason", exits.clone());
        let uptime = Family::default();
        registry.register("worker_uptime_seconds", "Seconds since the worker started", Family::clone(&uptime));
        let (heap_used, heap_limit) = (Family::default(), Family::default());
        registry.register(
            "worker_heap_used_bytes",
            "V8 heap in use by the worker's isolate",
            Family::clone(&heap_used),
        );
        registry.register("worker_heap_limit_bytes", "The worker isolate's V8 heap limit", Family::clone(&heap_limit));
        let (requests, in_flight) = (Family::default(), Family::default());
        registry.register("requests", "Requests a handler worker finished, by outcome", requests.clone());
        registry.register("requests_in_flight", "Requests a handler worker is handling", Family::clone(&in_flight));
        let duration = Family::new_with_constructor(Buckets);
        registry.register("request_duration_seconds", "Time the handler took per request", duration.clone());
        let (stream_length, stream_pending, stream_oldest, dead_letters) =
            (Family::default(), Family::default(), Family::default(), Family::default());
        registry.register("stream_length", "Entries in the request stream (XLEN)", Family::clone(&stream_length));
        registry.register("stream_pending", "Entries read but not acked (XPENDING)", Family::clone(&stream_pending));
        registry.register(
            "stream_oldest_pending_seconds",
            "Age of the oldest entry read but not acked",
            Family::clone(&stream_oldest),
        );
        registry.register("dead_letters", "Entries in the dead-letter stream (XLEN)", Family::clone(&dead_letters));
        let sync = SyncFamilies {
            rows: Family::default(),
            batches: Family::default(),
            copied: Family::default(),
            dead: Family::default(),
            backlog: Family::default(),
            seconds: Family::new_with_constructor(Buckets),
        };
        registry.register("sync_rows", "Rows a sync inserted into PostgreSQL", sync.rows.clone());
        registry.register("sync_batches", "Batches a sync committed and acked", sync.batches.clone());
        registry.register(
            "sync_copied_batches",
            "Batches of new entries written by COPY; the others by INSERT … ON CONFLICT DO NOTHING",
            sync.copied.clone(),
        );
        registry.register(
            "sync_dead_letters",
            "Entries PostgreSQL refused, moved to the dead-letter stream",
            sync.dead.clone(),
        );
        registry.register(
            "sync_backlog",
            "Entries of the stream the sync's group has not acked yet",
            Family::clone(&sync.backlog),
        );
        registry.register("sync_batch_seconds", "Time from a batch read to its XACK", sync.seconds.clone());
        Metrics {
            sync,
            registry: Arc::new(root),
            up,
            state,
            starts,
            exits,
            uptime,
            heap_used,
            heap_limit,
            requests,
            in_flight,
            duration,
            stream_length,
            stream_pending,
            stream_oldest,
            dead_letters,
        }
    }

    /// The text Prometheus scrapes (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    /// The live numbers of one worker, for its ops to record into.
    pub fn worker(&self, worker_type: &str, id: &str) -> Arc<WorkerStats> {
        let labels = WorkerLabels { r#type: worker_type.to_string(), id: id.to_string() };
        let outcome = |outcome| {
            self.requests.get_or_create_owned(&OutcomeLabels {
                r#type: labels.r#type.clone(),
                id: labels.id.clone(),
                outcome,
            })
        };
        Arc::new(WorkerStats {
            ok: outcome("ok"),
            retried: outcome("retried"),
            dead: outcome("dead"),
            refused: outcome("refused"),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            duration: self.duration.get_or_create_owned(&labels),
            heap_used: self.heap_used.get_or_create_owned(&labels),
            heap_limit: self.heap_limit.get_or_create_owned(&labels),
            recent: Mutex::new(Vec::new()),
        })
    }

    /// The numbers of `denorun sync` from `stream` into `table`.
    pub fn sync(&self, stream: &str, table: &str) -> SyncStats {
        let labels = SyncLabels { stream: stream.to_string(), table: table.to_string() };
        SyncStats {
            rows: self.sync.rows.get_or_create_owned(&labels),
            batches: self.sync.batches.get_or_create_owned(&labels),
            copied: self.sync.copied.get_or_create_owned(&labels),
            dead: self.sync.dead.get_or_create_owned(&labels),
            backlog: self.sync.backlog.get_or_create_owned(&labels),
            seconds: self.sync.seconds.get_or_create_owned(&labels),
        }
    }

    /// A worker started: it is up and running.
    pub fn started(&self, labels: &WorkerLabels) {
        self.starts.get_or_create(labels).inc();
        self.up.get_or_create(labels).set(1);
        self.set_state(labels, "running");
    }

    /// A worker ended for `reason` (see `worker::Reason::label`) and is now in `state`.
    pub fn ended(&self, labels: &WorkerLabels, reason: &'static str, state: &'static str) {
        let WorkerLabels { r#type, id } = labels.clone();
        self.exits.get_or_create(&ReasonLabels { r#type, id, reason }).inc();
        self.up.get_or_create(labels).set(0);
        self.uptime.get_or_create(labels).set(0.0);
        self.in_flight.get_or_create(labels).set(0);
        self.set_state(labels, state);
    }

    pub fn set_state(&self, labels: &WorkerLabels, state: &'static str) {
        for s in STATES {
            let WorkerLabels { r#type, id } = labels.clone();
            self.state.get_or_create(&StateLabels { r#type, id, state: s }).set((s == state) as i64);
        }
    }

    pub fn uptime(&self, labels: &WorkerLabels, seconds: f64) {
        self.uptime.get_or_create(labels).set(seconds);
    }

    /// The request stream's numbers, polled every few seconds.
    pub fn stream(&self, worker_type: &str, stats: &StreamStats) {
        let labels = StreamLabels { r#type: worker_type.to_string(), stream: stats.stream.clone() };
        self.stream_length.get_or_create(&labels).set(stats.length as i64);
        self.stream_pending.get_or_create(&labels).set(stats.pending as i64);
        self.stream_oldest.get_or_create(&labels).set(stats.oldest_pending_ms as f64 / 1000.0);
        let dead = StreamLabels { r#type: worker_type.to_string(), stream: stats.dead_stream.clone() };
        self.dead_letters.get_or_create(&dead).set(stats.dead as i64);
    }
}

/// A request stream's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamStats {
    pub stream: String,
    pub length: u64,
    pub pending: u64,
    /// How long ago the oldest pending entry was added, in ms (0: none pending).
    pub oldest_pending_ms: u64,
    pub dead_stream: String,
    pub dead: u64,
}

/// How a handler request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (or finished with no reply).
    Ok,
    /// The handler threw; it runs again after a delay.
    Retried,
    /// The handler threw on its last attempt: dead-lettered.
    Dead,
    /// Refused before the handler saw it (its data was not JSON).
    Refused,
}

/// One worker's live numbers; its ops record into them, the supervisor reads them.
#[derive(Debug)]
pub struct WorkerStats {
    ok: Counter,
    retried: Counter,
    dead: Counter,
    refused: Counter,
    in_flight: Gauge,
    duration: Histogram,
    heap_used: Gauge,
    heap_limit: Gauge,
    /// Handling times (ms) since the board last took them, for p50/p99 in `top`.
    recent: Mutex<Vec<f32>>,
}

/// A worker's numbers at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub ok: u64,
    pub retried: u64,
    pub dead: u64,
    pub in_flight: i64,
    pub heap_used: i64,
    pub heap_limit: i64,
}

impl WorkerStats {
    /// Requests handed to the handler.
    pub fn began(&self, count: usize) {
        self.in_flight.inc_by(count as i64);
    }

    /// A request handed to the handler ended; `took_ms` is the handler's time.
    pub fn finished(&self, outcome: Outcome, took_ms: Option<f64>) {
        self.in_flight.dec();
        self.count(outcome);
        if let Some(ms) = took_ms {
            self.duration.observe(ms / 1000.0);
            let mut recent = self.recent.lock().unwrap();
            if recent.len() < 100_000 {
                recent.push(ms as f32);
            }
        }
    }

    /// A request that never reached the handler.
    /// `n` requests (for a sync instance: rows) ended so.
    pub fn count_many(&self, outcome: Outcome, n: u64) {
        match outcome {
            Outcome::Ok => self.ok.inc_by(n),
            Outcome::Retried => self.retried.inc_by(n),
            Outcome::Dead => self.dead.inc_by(n),
            Outcome::Refused => self.refused.inc_by(n),
        };
    }

    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok.inc(),
            Outcome::Retried => self.retried.inc(),
            Outcome::Dead => self.dead.inc(),
            Outcome::Refused => self.refused.inc(),
        };
    }

    pub fn heap(&self, used: usize, limit: usize) {
        self.heap_used.set(used as i64);
        self.heap_limit.set(limit as i64);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            ok: self.ok.get() + self.refused.get(),
            retried: self.retried.get(),
            dead: self.dead.get(),
            in_flight: self.in_flight.get(),
            heap_used: self.heap_used.get(),
            heap_limit: self.heap_limit.get(),
        }
    }

    /// The handling times recorded since the last call, for percentiles.
    pub fn take_recent(&self) -> Vec<f32> {
        std::mem::take(&mut *self.recent.lock().unwrap())
    }
}

/// The `p`th percentile (0-100) of `samples`, by nearest rank; `None` if there are none.
pub fn percentile(samples: &mut [f32], p: f64) -> Option<f32> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f32::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil().max(1.0) as usize;
    Some(samples[rank.min(samples.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<f32> = (1..=100).map(|n| n as f32).collect();
        assert_eq!(percentile(&mut samples, 50.0), Some(50.0));
        assert_eq!(percentile(&mut samples, 99.0), Some(99.0));
        assert_eq!(percentile(&mut [7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn recorded_numbers_reach_the_text_format() {
        let metrics = Metrics::new();
        let stats = metrics.worker("demo", "1");
        stats.began(2);
        stats.finished(Outcome::Ok, Some(2.0));
        stats.finished(Outcome::Retried, Some(1.0));
        stats.heap(1 << 20, 64 << 20);
        let labels = WorkerLabels { r#type: "demo".into(), id: "1".into() };
        metrics.started(&labels);
        metrics.ended(&labels, "memory", "backoff");
        let text = metrics.encode();
        for line in [
            "denorun_requests_total{type=\"demo\",id=\"1\",outcome=\"ok\"} 1",
            "denorun_requests_total{type=\"demo\",id=\"1\",outcome=\"retried\"} 1",
            "denorun_requests_in_flight{type=\"demo\",id=\"1\"} 0",
            "denorun_request_duration_seconds_count{type=\"demo\",id=\"1\"} 2",
            "denorun_worker_heap_limit_bytes{type=\"demo\",id=\"1\"} 67108864",
            "denorun_worker_exits_total{type=\"demo\",id=\"1\",reason=\"memory\"} 1",
            "denorun_worker_state{type=\"demo\",id=\"1\",state=\"backoff\"} 1",
            "denorun_worker_up{type=\"demo\",id=\"1\"} 0",
        ] {
            assert!(text.contains(line), "{line} is missing from\n{text}");
        }
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert_eq!(stats.snapshot().ok, 1);
    }
}
