//! What the console remembers of each worker's numbers for its charts: the requests/s and
//! p99 its supervisor publishes, sampled every [`SAMPLE_EVERY`] since the console started,
//! for the last [`WINDOW_S`] seconds. Kept in memory only; the supervisors' stats hashes hold
//! the present, Prometheus (`--metrics`) the long term.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::admin::board::WorkerRow;

/// How often the console reads the boards (supervisors publish every 2 s).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// How far back a chart goes.
pub const WINDOW_S: u64 = 600;

/// One reading of a worker's numbers, at `at_s` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_s: u64,
    pub rps: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Sample {
    pub fn of(row: &WorkerRow, at_s: u64) -> Sample {
        Sample { at_s, rps: row.rps, p99_ms: row.p99_ms }
    }
}

/// Each worker's samples (by worker key), oldest first, none older than the window.
#[derive(Debug, Default)]
pub struct History {
    series: HashMap<String, VecDeque<Sample>>,
}

impl History {
    /// Adds a sample of `worker`.
    pub fn record(&mut self, worker: &str, sample: Sample) {
        self.series.entry(worker.to_string()).or_default().push_back(sample);
    }

    /// Forgets the samples that left the window at `now_s`, and the workers left with none.
    pub fn sweep(&mut self, now_s: u64) {
        let since = now_s.saturating_sub(WINDOW_S);
        self.series.retain(|_, samples| {
            while samples.front().is_some_and(|s| s.at_s < since) {
                samples.pop_front();
            }
            !samples.is_empty()
        });
    }

    /// `worker`'s samples, oldest first.
    pub fn of(&self, worker: &str) -> Vec<Sample> {
        self.series.get(worker).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at_s: u64, rps: f64) -> Sample {
        Sample { at_s, rps: Some(rps), p99_ms: None }
    }

    #[test]
    fn samples_older_than_the_window_are_forgotten() {
        let mut history = History::default();
        history.record("t:1:h", at(1000, 1.0));
        history.record("t:2:h", at(1000, 5.0));
        history.record("t:1:h", at(1000 + WINDOW_S, 2.0));
        history.sweep(1000 + WINDOW_S);
        assert_eq!(history.of("t:1:h"), [at(1000, 1.0), at(1000 + WINDOW_S, 2.0)]);
        history.record("t:1:h", at(1001 + WINDOW_S, 3.0));
        history.sweep(1001 + WINDOW_S);
        assert_eq!(history.of("t:1:h"), [at(1000 + WINDOW_S, 2.0), at(1001 + WINDOW_S, 3.0)]);
        // A worker no longer sampled goes with its last sample.
        assert!(history.of("t:2:h").is_empty());
        assert!(history.of("t:3:h").is_empty());
    }
}
