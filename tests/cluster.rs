//! Redis Cluster: handler workers given a `redis+cluster://` URL serve a type whose requests
//! are spread over `streamShards = 6` streams in different slots. 16 clients send 10,000
//! requests, each counted as sent once `WAIT 1` says a replica has it; a master is SIGKILLed
//! a third of the way (its replica is promoted; it comes back as a replica, AOF on), and every
//! request is answered. Three masters and three replicas, real redis-server processes on
//! loopback ports, made a cluster by `redis-cli --cluster create`.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::acked::{self, Counts, Route};
use common::*;
use redis::Commands;

const SHARDS: usize = 6;
const REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 16;

const HANDLER: &str = r#"
export default {
  request(req: any) { return { code: 200, n: req.data.n }; },
};
"#;

/// A key's hash slot, as the README tells clients to compute it (CRC16 of the hash tag).
fn slot(key: &str) -> u16 {
    let tag = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key).as_bytes()) % 16384
}

/// Which of `n` equal parts of the slot space a slot is in: the shard of a `ref`.
fn part(slot: u16, n: usize) -> usize {
    slot as usize * n / 16384
}

fn node_args(dir: &str) -> Vec<String> {
    ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--appendonly", "yes", "--dir", dir]
        .map(String::from)
        .to_vec()
}

fn start_node(port: u16, dir: &str) -> Killed {
    let args = node_args(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Killed::new(spawn_redis_server(port, &args))
}

fn node(port: u16) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(c)
}

/// The slot ranges and their masters' ports, as the first live node tells.
fn slot_map(ports: &[u16]) -> Option<Vec<(u16, u16, u16)>> {
    ports.iter().find_map(|port| {
        let mut c = node(*port)?;
        // [from, to, [host, port, id, ...], replicas...]
        let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).ok()?;
        let map: Option<Vec<(u16, u16, u16)>> = slots
            .iter()
            .map(|range| {
                let from: u16 = redis::from_redis_value_ref(range.first()?).ok()?;
                let to: u16 = redis::from_redis_value_ref(range.get(1)?).ok()?;
                let master: Vec<redis::Value> = redis::from_redis_value_ref(range.get(2)?).ok()?;
                Some((from, to, redis::from_redis_value_ref(master.get(1)?).ok()?))
            })
            .collect();
        map.filter(|m| m.len() >= 3)
    })
}

/// A cluster client as users write one: a slot map, a connection per master, and on any
/// error (MOVED, a dead node, CLUSTERDOWN) a fresh map.
struct Client {
    ports: Vec<u16>,
    map: Vec<(u16, u16, u16)>,
    conns: HashMap<u16, redis::Connection>,
}

impl Client {
    fn new(ports: Vec<u16>) -> Client {
        Client { ports, map: Vec::new(), conns: HashMap::new() }
    }
}

impl Route for Client {
    /// Runs `f` on the master of `key`'s slot; None (after a pause) when it failed.
    fn on<T>(&mut self, key: &str, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Option<T> {
        let slot = slot(key);
        let port = match self.map.iter().find(|(from, to, _)| (*from..=*to).contains(&slot)) {
            Some((_, _, port)) => *port,
            None => {
                self.map = slot_map(&self.ports).unwrap_or_default();
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
        };
        if !self.conns.contains_key(&port) {
            let conn = node(port).or_else(|| {
                self.map.clear();
                std::thread::sleep(Duration::from_millis(100));
                None
            })?;
            self.conns.insert(port, conn);
        }
        match f(self.conns.get_mut(&port).unwrap()) {
            Ok(value) => Some(value),
            Err(_) => {
                self.conns.remove(&port);
                self.map.clear();
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        }
    }
}

/// Sends requests `range` one after another, each to the shard of its `ref` until it is
/// acknowledged, then waits for its reply.
fn client(ports: Vec<u16>, streams: Vec<String>, range: std::ops::Range<usize>, counts: Arc<Counts>) {
    let mut client = Client::new(ports);
    for n in range {
        let reference = format!("c{n}");
        let stream = &streams[part(slot(&reference), SHARDS)];
        acked::send(&mut client, stream, &reference, n, &counts);
    }
}

#[test]
fn sharded_handler_workers_answer_every_request_through_a_master_failover() {
    let dir = temp_dir();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let dirs: Vec<String> = ports
        .iter()
        .map(|port| {
            let own = dir.path().join(port.to_string());
            std::fs::create_dir_all(&own).unwrap();
            own.to_str().unwrap().to_string()
        })
        .collect();
    let mut nodes: Vec<Killed> = ports.iter().zip(&dirs).map(|(port, dir)| start_node(*port, dir)).collect();
    for port in &ports {
        wait_for("a node answers", Duration::from_secs(10), || node(*port));
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli must be installed (apt-get install redis-tools)");
    assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
    let cluster_ok = |ports: &[u16]| {
        ports.iter().all(|port| {
            node(*port).is_some_and(|mut c| {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap_or_default();
                info.contains("cluster_state:ok")
            })
        })
    };
    wait_until("every node sees the cluster ok", || cluster_ok(&ports));
    let masters = wait_for("three masters with a replica each", Duration::from_secs(30), || {
        let map = slot_map(&ports)?;
        let mut masters: Vec<u16> = map.iter().map(|(_, _, port)| *port).collect();
        masters.dedup();
        let replicas: usize = masters
            .iter()
            .map(|port| {
                let mut c = node(*port).unwrap();
                let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
                usize::from(info.contains("connected_slaves:1"))
            })
            .sum();
        (masters.len() == 3 && replicas == 3).then_some(masters)
    });

    let work = temp_dir();
    let path = write(work.path(), "handler.ts", HANDLER);
    let url = format!("redis+cluster://{}", addrs.join(","));
    let mut setup = Client::new(ports.clone());
    let shards = SHARDS.to_string();
    let defaults = [
        ("workerUrl", path.to_str().unwrap()),
        ("workerVersion", "local"),
        ("streamShards", shards.as_str()),
        ("concurrency", "8"),
        ("replicaAcks", "1"),
        ("claimIdleMs", "2000"),
        ("maxAttempts", "100"),
    ];
    wait_for("the type's hash is written", Duration::from_secs(10), || {
        setup.on("greeter:h", |c| c.hset_multiple::<_, _, _, ()>("greeter:h", &defaults))
    });
    let mut workers: Vec<Killed> = (1..=3)
        .map(|id| {
            let key = format!("greeter:{id}:h");
            wait_for("a worker's hash is written", Duration::from_secs(10), || {
                setup.on(&key, |c| c.hset::<_, _, _, ()>(&key, "consumerId", id))
            });
            let mut cmd = denorun(&[&key]);
            let log = std::fs::File::create(work.path().join(format!("worker-{id}.log"))).unwrap();
            cmd.env("REDIS_URL", &url).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
            Killed::new(cmd.spawn().unwrap())
        })
        .collect();
    // Each worker creates the six shards' streams and their group; each shard's part of the
    // slot space says which it is.
    let streams: Vec<String> = wait_for("the workers create the six shards", Duration::from_secs(30), || {
        let mut found: Vec<String> = masters
            .iter()
            .flat_map(|port| {
                node(*port).and_then(|mut c| c.keys::<_, Vec<String>>("greeter:req:*").ok()).unwrap_or_default()
            })
            .collect();
        found.sort_by_key(|s| part(slot(s), SHARDS));
        // XGROUP CREATE ... MKSTREAM makes each stream with its group.
        (found.len() == SHARDS).then_some(found)
    });
    let on_masters: Vec<usize> = masters
        .iter()
        .map(|m| {
            streams
                .iter()
                .filter(|s| slot_map(&ports).unwrap().iter().any(|(f, t, p)| p == m && (*f..=*t).contains(&slot(s))))
                .count()
        })
        .collect();
    assert_eq!(on_masters, [2, 2, 2], "two shards per master: {streams:?}");
    wait_until("the three workers hold their hashes", || {
        (1..=3).all(|id| {
            let key = format!("greeter:{id}:h");
            setup.on(&key, |c| c.hexists::<_, _, bool>(&key, "pid")).unwrap_or(false)
        })
    });

    let counts = Arc::new(Counts::default());
    let per_client = REQUESTS / CONCURRENCY;
    let started = Instant::now();
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let (ports, streams, counts) = (ports.clone(), streams.clone(), counts.clone());
            let end = if i == CONCURRENCY - 1 { REQUESTS } else { (i + 1) * per_client };
            std::thread::spawn(move || client(ports, streams, i * per_client..end, counts))
        })
        .collect();
    wait_until("a third of the requests are answered", || counts.answered.load(Ordering::Relaxed) >= REQUESTS / 3);
    // SIGKILL the master of the first shard; its replica takes over its slots.
    let victim_port = {
        let map = slot_map(&ports).unwrap();
        map.iter().find(|(f, t, _)| (*f..=*t).contains(&slot(&streams[0]))).unwrap().2
    };
    let victim = ports.iter().position(|p| *p == victim_port).unwrap();
    nodes[victim].kill();
    let answered_before = counts.answered.load(Ordering::Relaxed);
    let others: Vec<u16> = ports.iter().copied().filter(|p| *p != victim_port).collect();
    wait_for("a replica is promoted", Duration::from_secs(30), || {
        let map = slot_map(&others)?;
        (!map.iter().any(|(_, _, p)| *p == victim_port) && cluster_ok(&others)).then_some(())
    });
    // It comes back (AOF on, same port and nodes.conf) as its old replica's replica.
    nodes[victim] = start_node(victim_port, &dirs[victim]);
    for client in clients {
        client.join().unwrap();
    }
    let took = started.elapsed();

    let lost = counts.lost.lock().unwrap().clone();
    let (acknowledged, answered) =
        (counts.acknowledged.load(Ordering::Relaxed), counts.answered.load(Ordering::Relaxed));
    eprintln!(
        "{REQUESTS} requests over {SHARDS} shards at concurrency {CONCURRENCY}: {acknowledged} acknowledged \
         (after {} resend(s)), {answered} answered ({answered_before} before a master was killed), {} lost, in {took:?}",
        counts.resent.load(Ordering::Relaxed),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but never answered: {lost:?}");
    assert_eq!((acknowledged, answered), (REQUESTS, REQUESTS));
    for (n, worker) in workers.iter_mut().enumerate() {
        let log = std::fs::read_to_string(work.path().join(format!("worker-{}.log", n + 1))).unwrap();
        let status = worker.0.as_mut().unwrap().try_wait().unwrap();
        assert!(status.is_none(), "worker {} ended ({status:?}): {log}", n + 1);
    }
}
