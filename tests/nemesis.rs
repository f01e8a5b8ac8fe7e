//! The nemesis: for two minutes (`NEMESIS_SECS`), two supervisors (started again whenever they
//! end, as systemd's `Restart=always` would) run four handler workers while clients count
//! every request, and every few seconds a seeded random fault strikes: a supervisor SIGKILLed
//! or drained (SIGTERM), redis-server SIGKILLed and restarted from its append-only file or
//! SIGSTOPped for a while, or every connection of the supervisors frozen. Then the checker
//! says what a user would ask: every request answered (or refused at XADD, as its client
//! saw), none lost, none answered twice, no id left unserved, nothing pending after a quiet
//! period, and how often each handler ran. `NEMESIS_SEED` replays a run.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::demo::{conn, Supervisor};
use common::freeze::FreezingProxy;
use common::*;
use redis::Commands;

const HANDLER: &str = r#"
export default {
  async request(req: any, ctx: any) {
    if (req.ref) await ctx.redis.incr(`calls:${req.ref}`);
    return { code: 200, greeting: `hello ${req.data?.name}` };
  },
};
"#;

/// xorshift64*: enough randomness to choose faults, replayable from its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillSupervisor(usize),
    DrainSupervisor(usize),
    KillRedis,
    PauseRedis(u64),
    Freeze,
}

#[test]
fn the_nemesis_loses_nothing() {
    let seed: u64 = std::env::var("NEMESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let secs: u64 = std::env::var("NEMESIS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    eprintln!("nemesis: seed {seed} (NEMESIS_SEED={seed} replays it), {secs} s");
    let mut dice = Dice(seed);

    let mut server = OwnRedis::start();
    let direct = server.url();
    let proxy = FreezingProxy::start(server.port);
    let dir = temp_dir();
    let path = write(dir.path(), "handler.ts", HANDLER);
    let defaults = [
        ("workerUrl", path.to_str().unwrap()),
        ("workerVersion", "local"),
        ("replyTtl", "600"),
        ("concurrency", "4"),
        ("responseStreamMaxlen", "1000000"),
        ("claimIdleMs", "5000"),
    ];
    let mut c = conn(&direct);
    let _: () = c.hset_multiple("greeter:h", &defaults).unwrap();
    let ids = ["1", "2", "3", "4"];
    for id in ids {
        let _: () = c.hset_multiple(format!("greeter:{id}:h"), &defaults).unwrap();
        let _: () = c.rpush("greeter:start:q", id).unwrap();
    }
    let start = |url: &str| Supervisor::start_type(url, "greeter", &["--heartbeat", "0.3", "--backoff", "0.1"]);
    let supervisors: Arc<Mutex<Vec<Supervisor>>> = Arc::new(Mutex::new(vec![start(&proxy.url()), start(&proxy.url())]));
    wait_until("every worker runs", || {
        ids.iter().all(|id| conn(&direct).hexists::<_, _, bool>(format!("greeter:{id}:h"), "pid").unwrap_or(false))
    });

    // Restart=always: a supervisor that ended is started again.
    let running = Arc::new(AtomicBool::new(true));
    let restarts = Arc::new(AtomicUsize::new(0));
    let keeper = {
        let (supervisors, running, restarts, url) =
            (supervisors.clone(), running.clone(), restarts.clone(), proxy.url());
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                for supervisor in supervisors.lock().unwrap().iter_mut() {
                    if !supervisor.is_running() {
                        *supervisor = start(&url);
                        restarts.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let (done, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let (tally, clients) = load::load_until(direct.clone(), "greeter", usize::MAX, done.clone(), stop.clone());
    let until = Instant::now() + Duration::from_secs(secs);
    let mut faults = Vec::new();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2000 + dice.below(3000)));
        let fault = match dice.below(5) {
            0 => Fault::KillSupervisor(dice.below(2) as usize),
            1 => Fault::DrainSupervisor(dice.below(2) as usize),
            2 => Fault::KillRedis,
            3 => Fault::PauseRedis(1 + dice.below(4)),
            _ => Fault::Freeze,
        };
        eprintln!(
            "nemesis: {:.1} s: {fault:?} ({} requests done)",
            secs as f64 - until.saturating_duration_since(Instant::now()).as_secs_f64(),
            done.load(Ordering::Relaxed)
        );
        match fault {
            Fault::KillSupervisor(i) => supervisors.lock().unwrap()[i].signal(libc::SIGKILL),
            Fault::DrainSupervisor(i) => supervisors.lock().unwrap()[i].signal(libc::SIGTERM),
            Fault::KillRedis => {
                server.kill();
                std::thread::sleep(Duration::from_millis(300));
                server.restart();
            }
            Fault::PauseRedis(s) => {
                let pid = server.pid() as i32;
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_secs(s));
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            Fault::Freeze => _ = proxy.freeze(),
        }
        faults.push(fault);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    // The quiet period: no fault, no new request; whatever is in flight settles.
    let mut c = conn(&direct);
    let settled = (|| {
        for _ in 0..60 {
            let pending: (u64, redis::Value, redis::Value, redis::Value) =
                redis::cmd("XPENDING").arg("greeter:req:x").arg("worker").query(&mut c).ok()?;
            let waiting: usize = c.llen("greeter:start:q").ok()?;
            let running = ids
                .iter()
                .filter(|id| c.hexists::<_, _, bool>(format!("greeter:{id}:h"), "pid").unwrap_or(false))
                .count();
            if pending.0 == 0 && waiting == 0 && running == ids.len() {
                return Some(());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        None
    })();
    running.store(false, Ordering::SeqCst);
    keeper.join().unwrap();
    let tally = tally.lock().unwrap();
    let verdict = tally.verdict(&mut c, "greeter");
    let waiting: Vec<String> = c.lrange("greeter:start:q", 0, -1).unwrap();
    let pending: (u64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg("greeter:req:x").arg("worker").query(&mut c).unwrap();
    eprintln!(
        "figure: nemesis seed {seed}, {secs} s, {} faults ({faults:?}), {} supervisor restarts: {verdict}, {} not sent; \
         after a quiet period {} pending, ids waiting {waiting:?}",
        faults.len(),
        restarts.load(Ordering::SeqCst),
        tally.unsent,
        pending.0
    );
    if !verdict.unanswered.is_empty() {
        load::explain(&mut c, "greeter", &verdict.unanswered);
        // Where the ids are, and why each last ended.
        for queue in ["greeter:start:q", "greeter:started:q", "greeter:failed:q"] {
            let ids: Vec<String> = c.lrange(queue, 0, -1).unwrap();
            eprintln!("{queue}: {ids:?}");
        }
        for id in ids {
            let hash: std::collections::HashMap<String, String> = c.hgetall(format!("greeter:{id}:h")).unwrap();
            let fields: Vec<String> = ["pid", "supervisor", "seenAt", "lastReason", "lastError", "restarts"]
                .iter()
                .map(|f| format!("{f}={:?}", hash.get(*f)))
                .collect();
            eprintln!("greeter:{id}:h {}", fields.join(" "));
        }
    }
    assert!(
        verdict.unanswered.is_empty(),
        "seed {seed}: lost {:?}",
        &verdict.unanswered[..verdict.unanswered.len().min(20)]
    );
    assert_eq!(verdict.duplicates, 0, "seed {seed}: a request answered twice");
    assert!(settled.is_some(), "seed {seed}: not settled: {} pending, waiting ids {waiting:?}", pending.0);
    assert!(verdict.sent > 0, "seed {seed}: no request was sent");
    for supervisor in supervisors.lock().unwrap().iter() {
        supervisor.signal(libc::SIGTERM);
    }
}
