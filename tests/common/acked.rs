//! Requests as a careful client sends them to a replicated Redis: XADD, then `WAIT 1`, sent
//! again until a replica has it, then BRPOP of the reply; counted, for the failover tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Commands;

/// How a client finds the node for a key (the master Sentinel names, the master of the
/// key's Cluster slot), reconnecting after an error.
pub trait Route {
    /// Runs `f` on the node for `key`; None (after a pause) when it failed.
    fn on<T>(&mut self, key: &str, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Option<T>;
}

#[derive(Default)]
pub struct Counts {
    /// XADDs sent again because the one before had no successful `WAIT 1` (or failed).
    pub resent: AtomicUsize,
    pub acknowledged: AtomicUsize,
    pub answered: AtomicUsize,
    /// Acknowledged requests with no reply within a minute.
    pub lost: Mutex<Vec<String>>,
}

/// Sends request `n` (`data` `{"n": n}`) to `stream` until acknowledged, then waits up to a
/// minute for its reply, which must carry `n` back.
pub fn send(route: &mut impl Route, stream: &str, reference: &str, n: usize, counts: &Counts) {
    let data = format!("{{\"n\":{n}}}");
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let acked = route.on(stream, |c| {
            let _: String = c.xadd(stream, "*", &[("ref", reference), ("data", &data)])?;
            redis::cmd("WAIT").arg(1).arg(1000).query::<u64>(c)
        });
        if acked.is_some_and(|replicas| replicas >= 1) {
            break;
        }
        assert!(Instant::now() < give_up, "{reference}: no WAIT 1 succeeded for a minute");
        counts.resent.fetch_add(1, Ordering::Relaxed);
    }
    counts.acknowledged.fetch_add(1, Ordering::Relaxed);
    let list = format!("res:{reference}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(Some((_, reply))) = route.on(&list, |c| c.brpop::<_, Option<(String, String)>>(&list, 1.0)) {
            let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
            assert_eq!((reply["code"].as_u64(), reply["n"].as_u64()), (Some(200), Some(n as u64)));
            counts.answered.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    counts.lost.lock().unwrap().push(reference.to_string());
}
