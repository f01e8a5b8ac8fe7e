//! Redis Sentinel: a supervisor of handler workers given a `redis+sentinel://` URL keeps
//! serving through a failover, and every request a client saw acknowledged (XADD, then a
//! successful `WAIT 1`) gets its reply. One master, one replica and three sentinels, all
//! real processes on loopback ports; the master is SIGKILLed under load, and restarted (AOF
//! on) once the replica has taken over.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::acked::{self, Counts, Route};
use common::demo::{conn, Supervisor};
use common::*;
use redis::Commands;

const NAME: &str = "mymaster";
const REQUESTS: usize = 5000;
const CONCURRENCY: usize = 16;

const HANDLER: &str = r#"
export default {
  request(req: any, ctx: any) { return { code: 200, n: req.data.n }; },
};
"#;

/// A client that finds the master through the sentinels, as users' clients do, and finds it
/// again whenever a command fails.
struct Client {
    sentinels: Vec<u16>,
    conn: Option<redis::Connection>,
}

impl Client {
    /// The master's port as the first sentinel that answers names it.
    fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|port| named_master(*port))
    }
}

impl Route for Client {
    /// Runs `f` on a connection to the master; on failure, forgets the connection (the next
    /// call asks the sentinels again) and says so.
    fn on<T>(&mut self, _key: &str, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Option<T> {
        if self.conn.is_none() {
            let port = self.master_port()?;
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
            c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            // As Sentinel's client guidelines ask: check that the node named is a master.
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
            if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
            self.conn = Some(c);
        }
        match f(self.conn.as_mut().unwrap()) {
            Ok(value) => Some(value),
            Err(_) => {
                self.conn = None;
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        }
    }
}

/// Sends requests `range` one after another, each until it is acknowledged, then waits for
/// its reply.
fn client(sentinels: Vec<u16>, range: std::ops::Range<usize>, counts: Arc<Counts>) {
    let mut client = Client { sentinels, conn: None };
    for n in range {
        acked::send(&mut client, "greeter:req:x", &format!("s{n}"), n, &counts);
    }
}

/// The master's port as the sentinel at `port` names it.
fn named_master(port: u16) -> Option<u16> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
    let addr: Vec<String> = redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(NAME).query(&mut c).ok()?;
    addr.get(1)?.parse().ok()
}

fn sentinel_info(port: u16) -> Option<std::collections::HashMap<String, String>> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
    redis::cmd("SENTINEL").arg("master").arg(NAME).query(&mut c).ok()
}

/// One master (AOF on), one replica and three sentinels watching them.
struct Group {
    master_port: u16,
    replica_port: u16,
    sentinel_ports: [u16; 3],
    master: Killed,
    _others: Vec<Killed>,
    master_dir: tempfile::TempDir,
    _dirs: [tempfile::TempDir; 2],
}

impl Group {
    fn start() -> Group {
        let (master_dir, replica_dir, sentinel_dir) = (temp_dir(), temp_dir(), temp_dir());
        let (master_port, replica_port) = (free_port(), free_port());
        let master = Killed::new(spawn_redis_server(master_port, &Group::persistence(&master_dir)));
        let master_url = format!("redis://127.0.0.1:{master_port}");
        wait_for("the master answers", Duration::from_secs(10), || {
            redis::Client::open(master_url.as_str()).ok()?.get_connection().ok()
        });
        let mut replica_args = Group::persistence(&replica_dir);
        let master_port_text = master_port.to_string();
        replica_args.extend(["--replicaof", "127.0.0.1", &master_port_text]);
        let mut others = vec![Killed::new(spawn_redis_server(replica_port, &replica_args))];
        let mut c = conn(&master_url);
        wait_until("the replica is in sync", || {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
            info.contains("connected_slaves:1") && info.contains("state=online")
        });
        let sentinel_ports = [free_port(), free_port(), free_port()];
        others.extend(
            sentinel_ports
                .iter()
                .map(|port| Killed::new(spawn_sentinel(*port, sentinel_dir.path(), NAME, master_port))),
        );
        wait_until("the sentinels know each other and the replica", || {
            sentinel_ports.iter().all(|port| {
                sentinel_info(*port).is_some_and(|info| {
                    info.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && info.get("num-slaves").map(String::as_str) == Some("1")
                })
            })
        });
        Group {
            master_port,
            replica_port,
            sentinel_ports,
            master,
            _others: others,
            master_dir,
            _dirs: [replica_dir, sentinel_dir],
        }
    }

    fn persistence(dir: &tempfile::TempDir) -> Vec<&str> {
        vec!["--appendonly", "yes", "--dir", dir.path().to_str().unwrap()]
    }

    fn master_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.master_port)
    }

    /// The `redis+sentinel://` URL denorun is given.
    fn url(&self) -> String {
        let nodes: Vec<String> = self.sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{NAME}", nodes.join(","))
    }

    /// SIGKILLs the master.
    fn kill_master(&mut self) {
        self.master.kill();
    }

    /// Once every sentinel names the replica as the master, the old master comes back (as a
    /// restarted server would) and they make it the new master's replica.
    fn restart_old_master_once_replaced(&mut self) {
        wait_until("every sentinel names the replica as the master", || {
            self.sentinel_ports.iter().all(|port| named_master(*port) == Some(self.replica_port))
        });
        self.master = Killed::new(spawn_redis_server(self.master_port, &Group::persistence(&self.master_dir)));
    }
}

#[test]
fn handler_workers_follow_a_failover_and_answer_every_acknowledged_request() {
    let mut group = Group::start();
    let (replica_port, sentinel_ports) = (group.replica_port, group.sentinel_ports);
    let mut c = conn(&group.master_url());
    let dir = temp_dir();
    let path = write(dir.path(), "handler.ts", HANDLER);
    let defaults = [
        ("workerUrl", path.to_str().unwrap()),
        ("workerVersion", "local"),
        ("concurrency", "8"),
        ("replicaAcks", "1"),
        // Entries whose reply died with the master are taken again by then.
        ("claimIdleMs", "2000"),
        ("maxAttempts", "100"),
    ];
    let _: () = c.hset_multiple("greeter:h", &defaults).unwrap();
    let _: () = c.rpush("greeter:start:q", &["1", "2"]).unwrap();
    let supervisor = Supervisor::start_type(&group.url(), "greeter", &[]);
    wait_until("both workers run", || {
        (1..=2).all(|id| c.hexists::<_, _, bool>(format!("greeter:{id}:h"), "pid").unwrap_or(false))
    });

    let counts = Arc::new(Counts::default());
    let per_client = REQUESTS / CONCURRENCY;
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let (ports, counts) = (sentinel_ports.to_vec(), counts.clone());
            let end = if i == CONCURRENCY - 1 { REQUESTS } else { (i + 1) * per_client };
            std::thread::spawn(move || client(ports, i * per_client..end, counts))
        })
        .collect();
    wait_until("a third of the requests are answered", || counts.answered.load(Ordering::Relaxed) >= REQUESTS / 3);
    let killed_at = Instant::now();
    group.kill_master();
    let answered_before = counts.answered.load(Ordering::Relaxed);
    group.restart_old_master_once_replaced();
    for client in clients {
        client.join().unwrap();
    }
    let took = killed_at.elapsed();

    let lost = counts.lost.lock().unwrap().clone();
    let acknowledged = counts.acknowledged.load(Ordering::Relaxed);
    let answered = counts.answered.load(Ordering::Relaxed);
    eprintln!(
        "{REQUESTS} requests at concurrency {CONCURRENCY}: {acknowledged} acknowledged (after {} resend(s)), \
         {answered} answered ({answered_before} before the master was killed), {} lost; the rest took {took:?}",
        counts.resent.load(Ordering::Relaxed),
        lost.len()
    );
    if !lost.is_empty() {
        // Where the lost requests are on the master now, to tell why.
        let mut m = conn(&format!("redis://127.0.0.1:{replica_port}"));
        let entries: redis::streams::StreamRangeReply = m.xrange_all("greeter:req:x").unwrap();
        let found: Vec<_> = entries
            .ids
            .iter()
            .filter(|e| lost.iter().any(|r| e.get::<String>("ref").as_deref() == Some(r.as_str())))
            .map(|e| e.id.clone())
            .collect();
        let pending: redis::Value =
            redis::cmd("XPENDING").arg("greeter:req:x").arg("worker").arg("-").arg("+").arg(100).query(&mut m).unwrap();
        let groups: redis::Value = redis::cmd("XINFO").arg("GROUPS").arg("greeter:req:x").query(&mut m).unwrap();
        let dead: usize = m.xlen("greeter:dead:x").unwrap();
        panic!(
            "acknowledged but never answered: {lost:?}; in the stream as {found:?}; pending {pending:?}; \
             groups {groups:?}; {dead} dead letters\n{}",
            supervisor.stderr()
        );
    }
    assert_eq!((acknowledged, answered), (REQUESTS, REQUESTS));
    // The supervisor moved with the master: it logged the move, and its workers still hold
    // their hashes on whichever node is the master now (on a busy machine the sentinels may
    // have failed over once more, back to the restarted node).
    let stderr = supervisor.stderr();
    assert!(stderr.contains(&format!("the master is now at 127.0.0.1:{replica_port}")), "{stderr}");
    let client = Client { sentinels: sentinel_ports.to_vec(), conn: None };
    let master = client.master_port().expect("the sentinels name a master");
    let mut now = conn(&format!("redis://127.0.0.1:{master}"));
    let pids: Vec<Option<String>> = (1..=2).map(|id| now.hget(format!("greeter:{id}:h"), "pid").unwrap()).collect();
    assert!(pids.iter().all(Option::is_some), "both workers still hold their hashes: {pids:?}");
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
}

/// A 2021 worker (demo/worker.ts, which connects with `REDIS_URL`'s host and port) under a
/// supervisor given the sentinels: its connection drops with the master, it ends, and the
/// restarted worker's `connect()` to the same address reaches the new master.
#[test]
fn a_2021_worker_reconnects_to_the_new_master() {
    let mut group = Group::start();
    common::demo::setup(&group.master_url(), &common::demo::demo_worker(), &["1"], 0);
    let supervisor = Supervisor::start(&group.url(), &[]);
    let before = common::demo::request(&group.master_url(), "before");
    assert_eq!(before["code"], 200);
    group.kill_master();
    group.restart_old_master_once_replaced();
    // Sent to the master the sentinels name at each try, as a client would.
    let client = Client { sentinels: group.sentinel_ports.to_vec(), conn: None };
    let after = wait_for("a reply from the new master", Duration::from_secs(60), || {
        let master = client.master_port()?;
        common::demo::try_request(&format!("redis://127.0.0.1:{master}"), "after", 2.0)
    });
    assert_eq!(after["code"], 200);
    // The worker that answered is a later one: the first ended with its connection.
    let stderr = supervisor.stderr();
    assert!(stderr.matches("demo-worker:1:h: started").count() >= 2, "{stderr}");
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
}
