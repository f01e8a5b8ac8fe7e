//! Load as careful clients send it to a handler worker type: 16 clients, each XADDing one
//! request at a time to `<type>:req:x` and BRPOPping its reply through outages; and the check
//! of what they saw against what Redis holds (every request answered once, none lost).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

/// What the load's clients saw.
#[derive(Default)]
pub struct Tally {
    pub sent: Vec<String>,
    /// Requests whose XADD failed: not sent, as the client knows.
    pub unsent: usize,
    pub replies: HashMap<String, Value>,
}

/// 16 clients send `total` requests (`ref` `L<i>`, data `{"name": "<i>"}`) to `<kind>:req:x`,
/// one at a time each, and wait for each reply through outages; `done` counts the requests
/// finished either way.
pub fn load(
    url: String,
    kind: &str,
    total: usize,
    done: Arc<AtomicUsize>,
) -> (Arc<Mutex<Tally>>, Vec<std::thread::JoinHandle<()>>) {
    load_until(url, kind, total, done, Arc::new(AtomicBool::new(false)))
}

/// [`load`], whose clients also stop sending (and finish the request in hand) once `stop` is
/// set.
pub fn load_until(
    url: String,
    kind: &str,
    total: usize,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Tally>>, Vec<std::thread::JoinHandle<()>>) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let threads = (0..16)
        .map(|_| {
            let (url, tally, next, done, stop) = (url.clone(), tally.clone(), next.clone(), done.clone(), stop.clone());
            let (stream, kind) = (format!("{kind}:req:x"), kind.to_string());
            std::thread::spawn(move || {
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut c: Option<redis::Connection> = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let reference = format!("L{i}");
                    let data = format!(r#"{{"name":"{i}"}}"#);
                    if c.is_none() {
                        c = client.get_connection_with_timeout(Duration::from_secs(1)).ok();
                    }
                    let fields = [("ref", reference.as_str()), ("type", kind.as_str()), ("data", data.as_str())];
                    let sent = c.as_mut().map(|conn| conn.xadd::<_, _, _, _, String>(&stream, "*", &fields));
                    if !matches!(sent, Some(Ok(_))) {
                        c = None;
                        tally.lock().unwrap().unsent += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    tally.lock().unwrap().sent.push(reference.clone());
                    // A reply can only come late by XAUTOCLAIM (claimIdleMs 5 s in these
                    // tests); after 30 s it is not coming (the response stream tells why).
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        let conn = match c.as_mut() {
                            Some(conn) => conn,
                            None => match client.get_connection_with_timeout(Duration::from_secs(1)) {
                                Ok(conn) => c.insert(conn),
                                Err(_) => {
                                    std::thread::sleep(Duration::from_millis(100));
                                    continue;
                                }
                            },
                        };
                        match conn.brpop::<_, Option<(String, String)>>(format!("res:{reference}"), 1.0) {
                            Ok(Some((_, v))) => {
                                let reply = serde_json::from_str(&v).unwrap();
                                tally.lock().unwrap().replies.insert(reference.clone(), reply);
                                break;
                            }
                            Ok(None) => {}
                            Err(_) => c = None,
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (tally, threads)
}

/// What Redis says of the requests a load sent.
pub struct Verdict {
    pub sent: usize,
    pub answered: usize,
    /// Replies the workers sent that the client's BRPOP lost (Redis killed between the pop
    /// and its answer): they are on the response stream, or (the 2021 demo worker, whose
    /// response stream keeps only its last ~1000 entries) their trace, written in the reply's
    /// MULTI, is in `req:{ref}:h`.
    pub lost_by_client: usize,
    /// Sent, and answered neither to the client nor on the response stream.
    pub unanswered: Vec<String>,
    /// Requests with a second reply in their list, or a second entry on the response stream.
    pub duplicates: usize,
    /// Requests whose handler ran more than once (`calls:{ref}` above 1).
    pub repeated: usize,
    /// Requests whose handler ran 0, 1, 2, and 3 or more times.
    pub executions: Vec<usize>,
    pub codes: HashMap<String, usize>,
}

impl Tally {
    /// Checks the load against `<kind>:res:x`, the reply lists and the handler's `calls:{ref}`
    /// counters.
    pub fn verdict(&self, c: &mut redis::Connection, kind: &str) -> Verdict {
        let (in_lists, repeated, executions) = self.counts(c);
        let responses: redis::streams::StreamRangeReply = c.xrange_all(format!("{kind}:res:x")).unwrap();
        let refs: Vec<String> = responses.ids.iter().filter_map(|e| e.get::<String>("ref")).collect();
        let mut responded: HashSet<&String> = refs.iter().collect();
        let unreplied = || self.sent.iter().filter(|r| !self.replies.contains_key(*r));
        let traced: Vec<&String> = unreplied()
            .filter(|r| !responded.contains(*r))
            .filter(|r| c.hexists(format!("req:{r}:h"), "demoWorkerTrace").unwrap())
            .collect();
        let twice_on_stream = refs.len() - responded.len();
        responded.extend(traced);
        let lost_by_client = unreplied().filter(|r| responded.contains(*r)).count();
        let unanswered: Vec<String> = unreplied().filter(|r| !responded.contains(*r)).cloned().collect();
        let mut codes: HashMap<String, usize> = HashMap::new();
        for reply in self.replies.values() {
            *codes.entry(reply["code"].to_string()).or_default() += 1;
        }
        let sent: HashSet<&String> = self.sent.iter().collect();
        assert_eq!(sent.len(), self.sent.len(), "a ref sent twice");
        Verdict {
            sent: self.sent.len(),
            answered: self.replies.len(),
            lost_by_client,
            unanswered,
            duplicates: in_lists + twice_on_stream,
            repeated,
            executions,
            codes,
        }
    }

    /// Requests with a reply left in their list (a second one: the client took the first),
    /// requests whose handler ran more than once, and how many ran 0, 1, 2... times.
    fn counts(&self, c: &mut redis::Connection) -> (usize, usize, Vec<usize>) {
        let (mut in_lists, mut repeated, mut executions) = (0, 0, vec![0; 4]);
        for chunk in self.sent.chunks(1000) {
            let mut pipe = redis::pipe();
            for r in chunk {
                pipe.llen(format!("res:{r}"));
                pipe.get(format!("calls:{r}"));
            }
            let counts: Vec<Option<usize>> = pipe.query(c).unwrap();
            for (r, pair) in chunk.iter().zip(counts.chunks(2)) {
                // A reply the client did not take (it gave up waiting) is not a second one.
                in_lists += usize::from(pair[0].unwrap_or(0) > 0 && self.replies.contains_key(r));
                let calls = pair[1].unwrap_or(0);
                repeated += usize::from(calls > 1);
                executions[calls.min(3)] += 1;
            }
        }
        (in_lists, repeated, executions)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent, {} answered, {} replies lost by the client's BRPOP, {} unanswered, {} duplicate replies, \
             codes {:?}, {} requests whose handler ran more than once (runs 0/1/2/3+: {:?})",
            self.sent,
            self.answered,
            self.lost_by_client,
            self.unanswered.len(),
            self.duplicates,
            self.codes,
            self.repeated,
            self.executions
        )
    }
}

/// Prints what Redis holds of each unanswered request (entry, pending state, handler calls,
/// responses by entry id, done marker, reply list), for a failing test's log.
pub fn explain(c: &mut redis::Connection, kind: &str, unanswered: &[String]) {
    let stream = format!("{kind}:req:x");
    let all: redis::streams::StreamRangeReply = c.xrange_all(&stream).unwrap();
    let responses: redis::streams::StreamRangeReply = c.xrange_all(format!("{kind}:res:x")).unwrap();
    for r in unanswered {
        let entry = all.ids.iter().find(|e| e.get::<String>("ref").as_deref() == Some(r.as_str()));
        let id = entry.map(|e| e.id.clone());
        let pending: redis::Value = match &id {
            Some(id) => redis::cmd("XPENDING").arg(&stream).arg("worker").arg(id).arg(id).arg(1).query(c).unwrap(),
            None => redis::Value::Nil,
        };
        let calls: Option<String> = c.get(format!("calls:{r}")).unwrap();
        let by_xid: Vec<String> =
            responses.ids.iter().filter(|e| e.get::<String>("xid") == id).map(|e| format!("{:?}", e.map)).collect();
        let marker: Option<String> =
            c.get(format!("{stream}:done:{{{stream}}}:{}", id.clone().unwrap_or_default())).unwrap();
        let list: usize = c.llen(format!("res:{r}")).unwrap();
        let trace: Option<String> = c.hget(format!("req:{r}:h"), "demoWorkerTrace").unwrap();
        eprintln!(
            "unanswered {r}: entry {id:?} pending {pending:?} calls {calls:?} by_xid {by_xid:?} marker {marker:?} \
             list {list} trace {trace:?}"
        );
    }
    let groups: redis::Value = redis::cmd("XINFO").arg("GROUPS").arg(&stream).query(c).unwrap();
    eprintln!("request stream groups {groups:?}");
    let consumers: redis::Value = redis::cmd("XINFO").arg("CONSUMERS").arg(&stream).arg("worker").query(c).unwrap();
    eprintln!("request stream consumers {consumers:?}");
    // A 2021 worker's marks (`ops::resume`): the last entry each consumer handled.
    let marks: HashMap<String, String> = c.hgetall(format!("{stream}:seen:h")).unwrap();
    eprintln!("marks {marks:?}");
}

/// [`load_until`] to a type's `greeter`-style handler workers, running until finished, with
/// the versions its replies name (`reply.version`).
pub struct Steady {
    kind: String,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Steady {
    pub fn start(url: &str, kind: &str) -> Steady {
        let (done, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (tally, threads) = load_until(url.to_string(), kind, usize::MAX, done.clone(), stop.clone());
        Steady { kind: kind.to_string(), tally, threads, done, stop }
    }

    /// Replies so far, by the version they name.
    pub fn versions(&self) -> HashMap<String, usize> {
        versions(&self.tally.lock().unwrap())
    }

    pub fn wait_for_version(&self, v: &str) {
        crate::common::wait_for(&format!("a reply from {v}"), Duration::from_secs(60), || {
            self.versions().contains_key(v).then_some(())
        });
    }

    pub fn wait_for_more(&self, n: usize) {
        let target = self.done.load(Ordering::Relaxed) + n;
        crate::common::wait_for(&format!("{n} more requests done"), Duration::from_secs(60), || {
            (self.done.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    /// Stops sending, waits for the replies in hand, and checks every request against Redis
    /// (explaining any unanswered one); returns the verdict and the replies by version.
    pub fn finish(self, url: &str) -> (Verdict, HashMap<String, usize>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let tally = self.tally.lock().unwrap();
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let verdict = tally.verdict(&mut c, &self.kind);
        if !verdict.unanswered.is_empty() {
            explain(&mut c, &self.kind, &verdict.unanswered);
        }
        (verdict, versions(&tally))
    }
}

fn versions(tally: &Tally) -> HashMap<String, usize> {
    let mut versions = HashMap::new();
    for reply in tally.replies.values() {
        *versions.entry(reply["version"].as_str().unwrap_or("none").to_string()).or_default() += 1;
    }
    versions
}

/// One request to `<kind>:req:x`, as a client sends it; its reply within 20 s.
pub fn one(url: &str, kind: &str, reference: &str) -> Value {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: String = c.xadd(format!("{kind}:req:x"), "*", &[("ref", reference), ("type", kind)]).unwrap();
    let popped: Option<(String, String)> = c.brpop(format!("res:{reference}"), 20.0).unwrap();
    serde_json::from_str(&popped.expect("a reply within 20 s").1).unwrap()
}
