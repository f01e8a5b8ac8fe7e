//! Redis's health as the supervisor sees it: a lost Redis is logged once when it goes and
//! once when it is back, however many commands fail meanwhile.

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::server::Health;

/// Whether Redis answers, and since when it does not.
pub struct Outage {
    /// Where Redis is, for the log.
    place: String,
    down_since: Option<Instant>,
    /// What `/healthz` answers from.
    health: Arc<Health>,
}

impl Outage {
    pub fn new(place: String, health: Arc<Health>) -> Outage {
        Outage { place, down_since: None, health }
    }

    /// A command failed for want of Redis; logs the first failure of an outage.
    pub fn lost(&mut self, error: &str) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.health.redis(false);
            log::warn!(
                event = "redis_down";
                "lost Redis at {} ({error}); reconnecting until it is back, and restarting the workers it ends then",
                self.place
            );
        }
    }

    /// A command went through; logs the end of an outage. Returns whether one ended.
    pub fn answered(&mut self) -> bool {
        match self.down_since.take() {
            Some(since) => {
                self.health.redis(true);
                log::info!(event = "redis_up"; "Redis at {} is back after {:.1}s", self.place, since.elapsed().as_secs_f64());
                true
            }
            None => false,
        }
    }

    /// Notes how a bookkeeping command went; returns it as an `Option`.
    pub fn note<T>(&mut self, result: redis::RedisResult<T>) -> Option<T> {
        match result {
            Ok(value) => {
                self.answered();
                Some(value)
            }
            Err(e) if crate::topology::is_outage(&e) => {
                self.lost(&e.to_string());
                None
            }
            Err(e) => {
                log::error!("Redis at {}: {e}", self.place);
                None
            }
        }
    }
}
