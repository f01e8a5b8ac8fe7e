//! A server that stopped answering, as the sync sees it: one log line when an outage begins
//! and one when it ends, however many connections and tries meet it, and the wait between
//! tries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::server::Health;

/// What `/healthz` is told of this server: `Health::redis` or `Health::postgres`.
type Report = (Arc<Health>, fn(&Health, bool));

/// One server's outages, shared by the connections to it ([`Away::shared`]); each keeps its
/// own count of tries.
pub struct Away {
    place: String,
    since: Arc<Mutex<Option<Instant>>>,
    tries: u32,
    health: Option<Report>,
}

impl Away {
    pub fn new(place: String) -> Away {
        Away { place, since: Arc::default(), tries: 0, health: None }
    }

    /// Tells `/healthz` when outages begin and end.
    pub fn reporting(mut self, health: Arc<Health>, set: fn(&Health, bool)) -> Away {
        self.health = Some((health, set));
        self
    }

    /// Another connection to the same server: the same outages, its own tries.
    pub fn shared(&self) -> Away {
        Away { place: self.place.clone(), since: self.since.clone(), tries: 0, health: self.health.clone() }
    }

    fn report(&self, up: bool) {
        if let Some((health, set)) = &self.health {
            set(health, up);
        }
    }

    /// A try failed for want of the server. The first failure is retried at once and not
    /// logged: a connection that outlived an outage fails once before it reconnects.
    pub fn lost(&mut self, error: &str) {
        self.tries += 1;
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        if self.tries >= 2 && since.is_none() {
            *since = Some(Instant::now());
            self.report(false);
            log::warn!("lost {} ({error}); retrying until it is back, nothing acked meanwhile", self.place);
        }
    }

    /// A try met silence (no answer within its time-out): the outage has lasted that long
    /// already, so it is said at once.
    pub fn silent(&mut self, error: &str) {
        self.tries = self.tries.max(1);
        self.lost(error);
    }

    /// A try went through.
    pub fn back(&mut self) {
        self.tries = 0;
        if let Some(since) = self.since.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.report(true);
            log::info!("{} is back after {:.1}s", self.place, since.elapsed().as_secs_f64());
        }
    }

    /// How long to wait before the next try.
    pub fn delay(&self) -> Duration {
        retry_delay(self.tries)
    }
}

/// The wait after `failures` failed tries in a row: none after the first, then 100 ms
/// doubling up to 5 s.
pub fn retry_delay(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(100u64 << (n - 2).min(6)).min(Duration::from_secs(5)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_five_seconds() {
        let ms: Vec<u128> = (1..=9).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(ms, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn one_outage_is_one_outage_for_every_connection() {
        let mut reader = Away::new("Redis".into());
        let mut writer = reader.shared();
        reader.lost("refused");
        assert!(reader.since.lock().unwrap().is_none(), "a first failure is retried at once");
        reader.lost("refused");
        writer.lost("refused");
        writer.lost("refused");
        let began = *reader.since.lock().unwrap();
        assert!(began.is_some());
        reader.back();
        assert!(writer.since.lock().unwrap().is_none(), "back for both");
    }

    #[test]
    fn healthz_hears_of_outages() {
        let health = Arc::new(Health::default());
        let mut pg = Away::new("PostgreSQL".into()).reporting(health.clone(), Health::postgres);
        let mut redis = Away::new("Redis".into()).reporting(health.clone(), Health::redis).shared();
        pg.lost("refused");
        pg.lost("refused");
        redis.lost("refused");
        redis.lost("refused");
        assert!(!health.ok());
        pg.back();
        assert!(!health.ok(), "Redis is still away");
        redis.back();
        assert!(health.ok());
    }
}
