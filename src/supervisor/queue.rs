//! The id-queue protocol of a worker type. Ids wait on `${type}:start:q`; a supervisor moves
//! one atomically onto `${type}:started:q` (BLMOVE) to run it, and moves it back (or onto
//! `${type}:failed:q`) when its worker ends. While it runs an id, a supervisor refreshes the
//! id's `supervisor` and `seenAt` fields every heartbeat; an id on `started:q` whose
//! `seenAt` has not changed for the stale period belongs to a supervisor that died, and
//! any live supervisor of the type moves it back to `start:q`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::room::Room;
use super::Event;
use crate::config::RedisTarget;
use crate::keys::Keys;
use crate::topology::{Backoff, Conn};

/// How long a BLMOVE blocks before it looks whether it should stop.
const TAKE_BLOCK: f64 = 2.0;

/// How long a BLMOVE may go unanswered: its block plus the response time-out.
fn take_deadline() -> Duration {
    Duration::from_secs_f64(TAKE_BLOCK) + crate::topology::silence::response_timeout()
}

/// The task that takes ids, on a blocking connection of its own; `stop` ends it.
pub struct Taker {
    task: tokio::task::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
    /// The blocking connection's CLIENT ID, for CLIENT UNBLOCK; 0 while reconnecting.
    client_id: Arc<AtomicI64>,
    room: Arc<Room>,
}

impl Taker {
    /// Moves ids from start:q to started:q and reports each as `Event::Taken`. A lost
    /// connection is reported once (`Event::RedisDown`), retried with backoff for as long as
    /// it takes, and its return reported (`Event::RedisUp`).
    /// It takes an id only while `room` has a place for it.
    pub fn start(redis: &RedisTarget, keys: &Keys, room: Arc<Room>, events: mpsc::UnboundedSender<Event>) -> Taker {
        let stopping = Arc::new(AtomicBool::new(false));
        let client_id = Arc::new(AtomicI64::new(0));
        let (topology, keys) = (redis.topology.clone(), keys.clone());
        let (flag, id_slot, room_handle) = (stopping.clone(), client_id.clone(), room.clone());
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::default();
            let mut down = false;
            while !flag.load(Ordering::SeqCst) {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    // A BLMOVE unanswered well past its block finds Redis silent: the
                    // connection is dropped and made again. (Had the move happened, the id is
                    // on started:q without a heartbeat, and recovery returns it.)
                    .set_response_timeout(Some(take_deadline()));
                let connected = async {
                    // Behind Sentinel, the master now: after a failover, the new one.
                    let master = topology.master().await?;
                    let mut conn = master.get_multiplexed_async_connection_with_config(&config).await?;
                    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
                    Ok::<_, redis::RedisError>((conn, id))
                };
                let (mut conn, id) = match connected.await {
                    Ok(connected) => connected,
                    Err(e) => {
                        if !down {
                            down = true;
                            let _ = events.send(Event::RedisDown(format!("{e}")));
                        }
                        backoff.wait().await;
                        continue;
                    }
                };
                id_slot.store(id, Ordering::SeqCst);
                backoff.reset();
                if std::mem::take(&mut down) {
                    let _ = events.send(Event::RedisUp);
                }
                while room.reserve(&flag).await {
                    let moved: redis::RedisResult<Option<String>> = conn
                        .blmove(&keys.start, &keys.started, redis::Direction::Right, redis::Direction::Left, TAKE_BLOCK)
                        .await;
                    match moved {
                        Ok(Some(id)) => {
                            let _ = events.send(Event::Taken(id));
                        }
                        Ok(None) => room.release(),
                        Err(e) => {
                            room.release();
                            id_slot.store(0, Ordering::SeqCst);
                            down = true;
                            let _ =
                                events.send(Event::RedisDown(format!("BLMOVE {} {}: {e}", keys.start, keys.started)));
                            break;
                        }
                    }
                }
            }
        });
        Taker { task, stopping, client_id, room: room_handle }
    }

    /// Stops taking ids: a BLMOVE under way is unblocked (it returns nil, so no id is taken
    /// and lost), and the task ends.
    pub async fn stop(self, conn: &mut Conn) {
        self.stopping.store(true, Ordering::SeqCst);
        self.room.wake();
        let id = self.client_id.load(Ordering::SeqCst);
        if id != 0 {
            let _: redis::RedisResult<i64> = redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query_async(conn).await;
        }
        let _ = self.task.await;
    }
}

/// Moves an id out of started:q onto `queue` (start:q or failed:q), in one transaction
/// that also clears the `pid` its last worker claimed (a 2021 worker refuses to start while
/// its hash has one, and a Redis outage may have kept the exit's bookkeeping from it).
pub async fn move_from_started(conn: &mut Conn, keys: &Keys, id: &str, queue: &str) -> redis::RedisResult<()> {
    redis::pipe()
        .atomic()
        .lrem(&keys.started, 1, id)
        .ignore()
        .lpush(queue, id)
        .ignore()
        .hdel(keys.worker(id), "pid")
        .ignore()
        .query_async(conn)
        .await
}

/// This supervisor's name in the `supervisor` field: `host:pid`.
pub fn supervisor_name() -> String {
    format!("{}:{}", super::records::hostname(), std::process::id())
}

/// Marks ids as this supervisor's and alive: `supervisor` and `seenAt` (Unix ms) fields.
pub async fn heartbeat<'a>(
    conn: &mut Conn,
    keys: &Keys,
    me: &str,
    ids: impl Iterator<Item = &'a String>,
) -> redis::RedisResult<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hset_multiple(keys.worker(id), &[("supervisor", me.to_string()), ("seenAt", now.to_string())]).ignore();
    }
    if pipe.is_empty() {
        // Still a round trip: it tells whether Redis answers.
        return redis::cmd("PING").query_async(conn).await;
    }
    pipe.query_async(conn).await
}

/// Moves an id from started:q back to start:q if its `seenAt` is still `seen` (nil: none),
/// atomically, so that an id a live supervisor just refreshed is never taken from it.
const RECOVER: &str = r"
local seen = redis.call('HGET', KEYS[3], 'seenAt')
if (seen or '') ~= ARGV[2] then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], 'pid', 'supervisor', 'seenAt', 'restartAsked')
return 1
";

/// Finds the ids that a dead supervisor left on started:q: an id is recovered once its
/// `seenAt` has stayed the same for `stale` by this supervisor's own clock, so neither
/// clocks that disagree nor a Redis outage (after which the owner refreshes its ids
/// within a heartbeat) lets one supervisor take another's ids.
pub struct Recovery {
    stale: Duration,
    /// Ids on started:q that are not ours: the `seenAt` seen, and since when.
    suspects: HashMap<String, (String, Instant)>,
    script: redis::Script,
}

impl Recovery {
    pub fn new(stale: Duration) -> Recovery {
        Recovery { stale, suspects: HashMap::new(), script: redis::Script::new(RECOVER) }
    }

    /// Forgets what it has seen: after a heartbeat or scan that Redis did not answer, no
    /// other supervisor could refresh its `seenAt` either, so staleness counts again from the
    /// next scan. Without this, the first scan after an outage would take every live
    /// supervisor's ids whose `seenAt` it saw before the outage.
    pub fn forget(&mut self) {
        self.suspects.clear();
    }

    /// One scan; returns the ids moved back to start:q.
    pub async fn scan(
        &mut self,
        conn: &mut Conn,
        keys: &Keys,
        ours: impl Fn(&str) -> bool,
    ) -> redis::RedisResult<Vec<String>> {
        let started: Vec<String> = conn.lrange(&keys.started, 0, -1).await?;
        let others: Vec<String> = started.into_iter().filter(|id| !ours(id)).collect();
        let mut pipe = redis::pipe();
        for id in &others {
            pipe.hget(keys.worker(id), "seenAt");
        }
        let seen: Vec<Option<String>> = if others.is_empty() { vec![] } else { pipe.query_async(conn).await? };
        let now = Instant::now();
        let mut suspects = HashMap::new();
        for (id, seen) in others.into_iter().zip(seen) {
            let seen = seen.unwrap_or_default();
            let since = match self.suspects.remove(&id) {
                Some((before, since)) if before == seen => since,
                _ => now,
            };
            suspects.insert(id, (seen, since));
        }
        self.suspects = suspects;
        let mut recovered = Vec::new();
        for (id, (seen, since)) in &self.suspects {
            if now.duration_since(*since) < self.stale {
                continue;
            }
            let moved: i64 = self
                .script
                .key(&keys.started)
                .key(&keys.start)
                .key(keys.worker(id))
                .arg(id)
                .arg(seen)
                .invoke_async(conn)
                .await?;
            if moved == 1 {
                recovered.push(id.clone());
            }
        }
        for id in &recovered {
            self.suspects.remove(id);
        }
        Ok(recovered)
    }
}
