//! What a supervisor publishes every second, for `denorun top` and `denorun status` on any
//! host and for Prometheus: a stats hash per worker it runs (`${type}:${id}:stats:h`,
//! expiring after a few seconds so a dead supervisor's rows vanish), and every other second
//! the request stream's length, pending entries and dead letters (`${type}:stats:h`; for a
//! type with `streamShards`, the sums over its shards, and a Prometheus series per shard).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys::{self, Keys};
use crate::metrics::{self, Metrics, StreamStats, WorkerLabels, WorkerStats};
use crate::topology::Conn;

/// How long a published row lives without being refreshed.
const ROW_TTL: Duration = Duration::from_secs(5);

/// One worker as the board shows it.
pub struct Row<'a> {
    pub id: &'a str,
    pub state: &'static str,
    pub since: Option<Instant>,
    pub stats: &'a Arc<WorkerStats>,
}

/// The supervisor's board: the last counts, for rates.
pub struct Board {
    keys: Keys,
    host: String,
    /// The request streams (the shards of a sharded type, or the stream a sync type
    /// persists), their group, and the dead-letter stream.
    streams: Vec<String>,
    group: String,
    dead_stream: String,
    last: HashMap<String, (Instant, u64)>,
    ticks: u64,
}

impl Board {
    pub fn new(keys: &Keys, defaults: &HashMap<String, String>, host: String) -> Board {
        // A type of sync instances shows the stream it persists, as its sync group sees it.
        let (streams, group, dead_stream) = match defaults.get("syncStream") {
            Some(stream) => {
                let group = defaults.get("syncGroup").cloned().unwrap_or_else(|| "sync".into());
                (vec![stream.clone()], group, keys::dead_of(stream))
            }
            None => {
                // A bad `streamShards` stops each worker at its start, saying so; the board
                // then shows the one stream.
                let streams = keys.type_streams(defaults).unwrap_or_else(|_| vec![keys.request_stream()]);
                (streams, keys::GROUP.into(), keys.dead_stream())
            }
        };
        Board { keys: keys.clone(), host, streams, group, dead_stream, last: HashMap::new(), ticks: 0 }
    }

    /// Publishes every row (and, every other call, the stream's numbers) in one round trip,
    /// and updates the gauges Prometheus reads.
    pub async fn publish(&mut self, conn: &mut Conn, metrics: &Metrics, rows: &[Row<'_>]) -> redis::RedisResult<()> {
        self.ticks += 1;
        let mut pipe = redis::pipe();
        for row in rows {
            let fields = self.fields(row, metrics);
            let key = self.keys.stats(row.id);
            pipe.del(&key)
                .ignore()
                .hset_multiple(&key, &fields)
                .ignore()
                .expire(&key, ROW_TTL.as_secs() as i64)
                .ignore();
        }
        self.last.retain(|id, _| rows.iter().any(|r| r.id == id));
        if self.ticks % 2 == 1 {
            let shards = self.stream_stats(conn).await?;
            for shard in &shards {
                metrics.stream(self.keys.worker_type(), shard);
            }
            let stream = total(&shards);
            let key = self.keys.type_stats();
            let fields = [
                ("stream", stream.stream.clone()),
                ("length", stream.length.to_string()),
                ("pending", stream.pending.to_string()),
                ("oldestPendingMs", stream.oldest_pending_ms.to_string()),
                ("deadStream", stream.dead_stream.clone()),
                ("dead", stream.dead.to_string()),
            ];
            pipe.hset_multiple(&key, &fields).ignore().expire(&key, 2 * ROW_TTL.as_secs() as i64).ignore();
        }
        if pipe.is_empty() {
            // No rows this second (no worker running): still a round trip, as the heartbeat's,
            // since whether Redis answered is what the supervisor learns from it.
            return redis::cmd("PING").query_async(conn).await;
        }
        pipe.query_async(conn).await
    }

    fn fields(&mut self, row: &Row<'_>, metrics: &Metrics) -> Vec<(&'static str, String)> {
        let now = Instant::now();
        let snap = row.stats.snapshot();
        let total = snap.ok + snap.retried + snap.dead;
        let rate = match self.last.insert(row.id.to_string(), (now, total)) {
            Some((then, before)) if now > then => total.saturating_sub(before) as f64 / (now - then).as_secs_f64(),
            _ => 0.0,
        };
        let mut recent = row.stats.take_recent();
        let p50 = metrics::percentile(&mut recent, 50.0);
        let p99 = metrics::percentile(&mut recent, 99.0);
        let uptime = row.since.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        if row.since.is_some() {
            let labels = WorkerLabels { r#type: self.keys.worker_type().to_string(), id: row.id.to_string() };
            metrics.uptime(&labels, uptime);
        }
        let ms = |v: Option<f32>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        vec![
            ("state", row.state.to_string()),
            ("host", self.host.clone()),
            ("uptimeS", format!("{uptime:.0}")),
            ("rps", format!("{rate:.1}")),
            ("p50Ms", ms(p50)),
            ("p99Ms", ms(p99)),
            ("ok", snap.ok.to_string()),
            ("retried", snap.retried.to_string()),
            ("dead", snap.dead.to_string()),
            ("inFlight", snap.in_flight.to_string()),
            ("heapUsed", snap.heap_used.to_string()),
            ("heapLimit", snap.heap_limit.to_string()),
        ]
    }

    /// Each request stream's numbers, one stream after the other (under Cluster, shards are
    /// in different slots).
    async fn stream_stats(&self, conn: &mut Conn) -> redis::RedisResult<Vec<StreamStats>> {
        let dead: u64 = redis::cmd("XLEN").arg(&self.dead_stream).query_async(conn).await?;
        let mut shards = Vec::with_capacity(self.streams.len());
        for stream in &self.streams {
            let length: u64 = redis::cmd("XLEN").arg(stream).query_async(conn).await?;
            // A stream with no group yet has nothing pending.
            let pending: redis::RedisResult<redis::Value> =
                redis::cmd("XPENDING").arg(stream).arg(&self.group).query_async(conn).await;
            let (pending, oldest) = match pending {
                Ok(redis::Value::Array(summary)) => {
                    let count: u64 = summary.first().and_then(|v| redis::from_redis_value(v.clone()).ok()).unwrap_or(0);
                    let oldest: Option<String> = summary.get(1).and_then(|v| redis::from_redis_value(v.clone()).ok());
                    (count, oldest)
                }
                Ok(_) => (0, None),
                Err(e) if e.code() == Some("NOGROUP") => (0, None),
                Err(e) => return Err(e),
            };
            shards.push(StreamStats {
                stream: stream.clone(),
                length,
                pending,
                oldest_pending_ms: oldest.and_then(|id| entry_age_ms(&id)).unwrap_or(0),
                dead_stream: self.dead_stream.clone(),
                dead,
            });
        }
        Ok(shards)
    }
}

/// A type's numbers from its streams': lengths and pending entries summed, the oldest pending
/// entry of all, and the streams named (the first, and how many more).
fn total(shards: &[StreamStats]) -> StreamStats {
    let mut total = shards.first().cloned().unwrap_or_default();
    if shards.len() > 1 {
        total.stream = format!("{} and {} more shards", total.stream, shards.len() - 1);
        total.length = shards.iter().map(|s| s.length).sum();
        total.pending = shards.iter().map(|s| s.pending).sum();
        total.oldest_pending_ms = shards.iter().map(|s| s.oldest_pending_ms).max().unwrap_or(0);
    }
    total
}

/// How long ago a stream entry was added, from its id (`<ms>-<seq>`).
fn entry_age_ms(id: &str) -> Option<u64> {
    let added: u64 = id.split('-').next()?.parse().ok()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(now.saturating_sub(added))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_gives_its_age() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let age = entry_age_ms(&format!("{}-0", now - 5000)).unwrap();
        assert!((5000..6000).contains(&age), "{age}");
        assert_eq!(entry_age_ms("junk"), None);
    }

    #[test]
    fn a_sharded_type_shows_the_sums_of_its_shards() {
        let shard = |stream: &str, length, pending, oldest_pending_ms| StreamStats {
            stream: stream.into(),
            length,
            pending,
            oldest_pending_ms,
            dead_stream: "g:dead:x".into(),
            dead: 2,
        };
        let one = shard("g:req:x", 5, 1, 300);
        assert_eq!(total(std::slice::from_ref(&one)), one);
        let all = total(&[shard("g:req:{0}:x", 5, 1, 300), shard("g:req:{1}:x", 7, 2, 900)]);
        assert_eq!((all.length, all.pending, all.oldest_pending_ms, all.dead), (12, 3, 900, 2));
        assert_eq!(all.stream, "g:req:{0}:x and 1 more shards");
    }
}
