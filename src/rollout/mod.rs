//! `denorun rollout <type> --version V [--url U] [--sha256 H]`: moves a supervised type to a
//! new version one batch of workers at a time, and back when the new version fails.
//!
//! Each worker a supervisor runs (on `started:q`) is, in batches of `--max-unavailable`:
//! given the new fields in its own hash and asked to restart in place (its `pid` cleared, so
//! it stops after its current requests as in a drain, and `restartAsked` set, so that its
//! supervisor starts it again at once, not through `start:q`); then watched until it is up on
//! the new version (its `pid` claimed again, its `runningDigest` the new one) and has stayed
//! up for `--settle` with no failing exit. Only then does the next batch go; workers go in
//! the order of their ids (`2` before `10`). Ids not running (queued, parked) get the new
//! fields at once and start on the new version. The three id queues are read in one
//! transaction, so no id moving between them is missed.
//!
//! A failing exit of a restarted worker (an error, a failed start, a limit), or one not up
//! within `--step-timeout`, stops the rollout and rolls back, in batches of the same size:
//! every hash it changed gets its own fields back, each worker running the new version is
//! asked to restart on the old one and waited for, an id parked meanwhile goes back on
//! `start:q` (one parked before the rollout stays parked), and the type's hash is left as it
//! was. On success the type's hash takes the new fields and the ids' own copies that the
//! rollout added are removed, so the type's hash alone names the version again.
//!
//! Nothing is lost on the way: a restart is a drain of one worker, whose unanswered requests
//! stay pending for its next run under the same consumer. The rollout does not stop a worker
//! where it is: one still busy after `--step-timeout` fails the step. Progress goes to
//! stdout, to `${type}:rollout:h` (shown by `status` and the console) and, with `--audit`,
//! one line per step. One rollout of a type runs at a time: the slot is taken in one script.
//! A rollout that is itself killed leaves the type mixed, and its hash says `running` with
//! an `updatedAt` that no longer moves; after [`STALE`] another may run to finish the job or
//! roll the version back.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::AsyncCommands;

use self::plan::{Ended, Failure, Health, Seen};
use crate::admin::board::natural;
use crate::config::{self, RedisTarget};
use crate::keys::{Keys, WorkerKey};
use crate::topology::Conn;

/// The hash fields a rollout changes.
pub const FIELDS: [&str; 3] = ["workerVersion", "workerUrl", "workerSha256"];

/// How often the restarted workers are looked at.
const LOOK: Duration = Duration::from_millis(250);

/// A rollout whose `updatedAt` is older than this is not running any more.
pub const STALE: Duration = Duration::from_secs(30);

/// What `denorun rollout` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub worker_type: String,
    /// The fields to set (of [`FIELDS`]), with their new values.
    pub change: Vec<(&'static str, String)>,
    pub max_unavailable: usize,
    pub settle: Duration,
    pub step_timeout: Duration,
}

/// Runs the rollout; the exit code is 0 when every worker runs the new version, 1 when it was
/// rolled back.
pub fn run(redis: &RedisTarget, options: Options) -> anyhow::Result<i32> {
    if options.change.is_empty() {
        bail!("nothing to roll out: give --version, --url or --sha256");
    }
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let conn = redis.connect().await?;
        Rollout::prepare(conn, options).await?.run().await
    })
}

/// Field values to write: an empty value removes the field (it was not in the hash).
type Fields = Vec<(&'static str, String)>;

/// A version of one worker: as `status` shows it, and as its supervisor records it.
#[derive(Debug, Clone)]
struct Version {
    label: String,
    digest: String,
}

/// Which of a worker's two versions a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    New,
    Old,
}

/// A worker the rollout changes.
struct Touched {
    id: String,
    key: WorkerKey,
    /// Its own values of the changed fields before (empty: it had none, and took the type's).
    before: Fields,
    old: Version,
    new: Version,
    /// It runs (is on `started:q`), so it is restarted in a batch.
    running: bool,
}

impl Touched {
    fn version(&self, target: Target) -> &Version {
        match target {
            Target::New => &self.new,
            Target::Old => &self.old,
        }
    }
}

struct Rollout {
    conn: Conn,
    keys: Keys,
    options: Options,
    /// The running ids first, in id order, then the others.
    touched: Vec<Touched>,
    /// Ids parked on `failed:q` before the rollout: a rollback leaves them there.
    parked_before: HashSet<String>,
    to: String,
}

impl Rollout {
    async fn prepare(mut conn: Conn, options: Options) -> anyhow::Result<Rollout> {
        let keys = Keys::of(&options.worker_type)?;
        let type_hash: HashMap<String, String> = conn.hgetall(&keys.hash).await?;
        // One snapshot: an id moving from start:q to started:q is in exactly one of them.
        let (running, queued, parked): (Vec<String>, Vec<String>, Vec<String>) = redis::pipe()
            .atomic()
            .lrange(&keys.started, 0, -1)
            .lrange(&keys.start, 0, -1)
            .lrange(&keys.failed, 0, -1)
            .query_async(&mut conn)
            .await?;
        let mut running = running;
        running.sort_by(|a, b| natural(a).cmp(&natural(b)));
        let mut ids: Vec<(String, bool)> = running.iter().map(|id| (id.clone(), true)).collect();
        for id in queued.iter().chain(&parked) {
            if !ids.iter().any(|(known, _)| known == id) {
                ids.push((id.clone(), false));
            }
        }
        if ids.is_empty() {
            bail!(
                "{} has no ids on {}, {} or {}: nothing to roll out (add ids with denorun setup-worker --start)",
                options.worker_type,
                keys.started,
                keys.start,
                keys.failed
            );
        }
        // Every id's new config is checked before anything changes.
        let mut touched = Vec::new();
        for (id, running) in ids {
            touched.push(plan(&mut conn, &keys, &type_hash, &options.change, &id, running).await?);
        }
        let to = touched[0].new.label.clone();
        let parked_before = parked.into_iter().collect();
        Ok(Rollout { conn, keys, options, touched, parked_before, to })
    }

    async fn run(mut self) -> anyhow::Result<i32> {
        let total = self.touched.len();
        self.take_slot().await?;
        let batch = self.options.max_unavailable;
        self.say("start", None, &format!("{total} worker(s), {batch} at a time"));
        let change = self.options.change.clone();
        // Ids not running start on the new version whenever they start. One that started
        // since the queues were read is asked to restart like the others, and waited for in
        // the first batch; one that was starting on the old fields is found after the batches.
        let mut running: Vec<usize> = Vec::new();
        let mut idle: Vec<usize> = Vec::new();
        for i in 0..total {
            match self.touched[i].running {
                true => running.push(i),
                false if ask_restart(&mut self.conn, &self.touched[i].key, &change).await? => running.insert(0, i),
                false => idle.push(i),
            }
        }
        if running.is_empty() {
            self.say("restart", None, "no worker runs now: each starts on the new version when it is taken");
        }
        let mut done = 0;
        for (n, chunk) in running.chunks(batch).enumerate() {
            if let Err((i, failure)) = self.restart(chunk, Target::New).await? {
                let key = self.touched[i].key.to_string();
                self.say("failed", Some(&key), &failure.to_string());
                let moved: Vec<usize> = running[..(n * batch + chunk.len())].to_vec();
                return self.roll_back(&moved, &idle, &key, &failure).await;
            }
            done += chunk.len();
            let progress = [("done", done.to_string()), ("updatedAt", server_ms(&mut self.conn).await?.to_string())];
            let _: () = self.conn.hset_multiple(self.keys.rollout(), &progress).await?;
        }
        // An idle id that was starting on the old fields as they changed runs the old version.
        for &i in &idle {
            let (key, exits) = (self.touched[i].key.clone(), self.keys.exits(&self.touched[i].id));
            let seen = look(&mut self.conn, &key, &self.touched[i].new.digest, &exits, u64::MAX).await?;
            if seen.claimed && !seen.on_new_version {
                if let Err((i, failure)) = self.restart(&[i], Target::New).await? {
                    let key = self.touched[i].key.to_string();
                    self.say("failed", Some(&key), &failure.to_string());
                    let moved: Vec<usize> = running.iter().copied().chain([i]).collect();
                    let idle: Vec<usize> = idle.iter().copied().filter(|&j| j != i).collect();
                    return self.roll_back(&moved, &idle, &key, &failure).await;
                }
            }
        }
        // The type's hash names the version; the copies the rollout added go.
        let _: () = self.conn.hset_multiple(&self.keys.hash, &change).await?;
        for touched in &self.touched {
            let added: Vec<&str> =
                touched.before.iter().filter(|(_, before)| before.is_empty()).map(|(field, _)| *field).collect();
            let added: Vec<&str> = added.into_iter().filter(|field| change.iter().any(|(f, _)| f == field)).collect();
            if !added.is_empty() {
                let _: () = self.conn.hdel(&touched.key, added).await?;
            }
        }
        let end = [("state", "done".to_string()), ("updatedAt", server_ms(&mut self.conn).await?.to_string())];
        let _: () = self.conn.hset_multiple(self.keys.rollout(), &end).await?;
        self.say("done", None, &format!("every worker runs {}", self.to));
        Ok(0)
    }

    /// Takes the type's rollout slot (`${type}:rollout:h`), in one script: refused while
    /// another rollout or rollback of the type was updated within [`STALE`], by Redis's clock
    /// (every `updatedAt` is Redis's time, so the hosts' clocks do not matter).
    async fn take_slot(&mut self) -> anyhow::Result<()> {
        const SCRIPT: &str = r#"
local state = redis.call('HGET', KEYS[1], 'state')
local updated = tonumber(redis.call('HGET', KEYS[1], 'updatedAt') or '0') or 0
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if (state == 'running' or state == 'rolling back') and now - updated <= tonumber(ARGV[1]) then
  return {redis.call('HGET', KEYS[1], 'by') or '?', redis.call('HGET', KEYS[1], 'to') or '?'}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return {}
"#;
        let by = format!("{}:{}", crate::supervisor::hostname(), std::process::id());
        let (now, total) = (server_ms(&mut self.conn).await?.to_string(), self.touched.len().to_string());
        let state = [
            ("state", "running"),
            ("to", &self.to),
            ("from", &self.touched[0].old.label),
            ("by", &by),
            ("total", &total),
            ("done", "0"),
            ("startedAt", &now),
            ("updatedAt", &now),
        ];
        let script = redis::Script::new(SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation.key(self.keys.rollout()).arg(STALE.as_millis() as u64);
        for (field, value) in state {
            invocation.arg(field).arg(value);
        }
        let other: Vec<String> = invocation.invoke_async(&mut self.conn).await?;
        if let [by, to] = other.as_slice() {
            bail!(
                "another rollout of {} is running ({by}, to {to}); wait for it, or if it was killed, run this \
                 again once its updatedAt in {} is {}s old",
                self.options.worker_type,
                self.keys.rollout(),
                STALE.as_secs()
            );
        }
        Ok(())
    }

    /// Restarts the workers `batch` on `target`'s fields and waits until each is up on that
    /// version, or one fails.
    async fn restart(&mut self, batch: &[usize], target: Target) -> anyhow::Result<Result<(), (usize, Failure)>> {
        let mut steps = Vec::new();
        for &i in batch {
            let fields = self.fields(i, target);
            let key = self.touched[i].key.clone();
            let asked_ms = server_ms(&mut self.conn).await?;
            let restarting = ask_restart(&mut self.conn, &key, &fields).await?;
            let label = self.touched[i].version(target).label.clone();
            self.say("restart", Some(&key), &format!("restarting on {label}"));
            steps.push(Step {
                i,
                asked: Instant::now(),
                asked_ms,
                up_since: None,
                restarting,
                again: false,
                said_up: false,
            });
        }
        Ok(self.wait_up(&mut steps, target).await)
    }

    /// The fields a worker gets for `target`: the rollout's, or its own from before.
    fn fields(&self, i: usize, target: Target) -> Fields {
        match target {
            Target::New => self.options.change.clone(),
            Target::Old => self.touched[i].before.clone(),
        }
    }

    /// Waits until every worker of a batch is up on `target`'s version, or one fails.
    async fn wait_up(&mut self, steps: &mut [Step], target: Target) -> Result<(), (usize, Failure)> {
        let (settle, timeout) = (self.options.settle, self.options.step_timeout);
        loop {
            let mut all_up = true;
            for step in steps.iter_mut() {
                let touched = &self.touched[step.i];
                let (key, version, exits) =
                    (touched.key.clone(), touched.version(target).clone(), self.keys.exits(&touched.id));
                let seen = match look(&mut self.conn, &key, &version.digest, &exits, step.asked_ms).await {
                    Ok(seen) => seen,
                    // Redis away for a moment: the step's time-out still runs.
                    Err(e) => {
                        log::warn!("{key}: cannot look at it: {e}");
                        all_up = false;
                        continue;
                    }
                };
                // It was starting on the old fields when asked: ask once more, now that it runs.
                if !step.restarting && !step.again && seen.claimed && !seen.on_new_version {
                    step.again = true;
                    let fields = self.fields(step.i, target);
                    if let Ok(asked) = ask_restart(&mut self.conn, &key, &fields).await {
                        step.restarting = asked;
                    }
                }
                let up_for = step.up_since.map(|since| since.elapsed());
                match plan::judge(&seen, step.asked.elapsed(), up_for, settle, timeout) {
                    Health::Up => {
                        if !std::mem::replace(&mut step.said_up, true) {
                            self.say("up", Some(&key), &format!("up on {}", version.label));
                        }
                    }
                    Health::Settling => {
                        step.up_since.get_or_insert_with(Instant::now);
                        all_up = false;
                    }
                    Health::Waiting => {
                        step.up_since = None;
                        all_up = false;
                    }
                    Health::Failed(failure) => return Err((step.i, failure)),
                }
            }
            if let Ok(now) = server_ms(&mut self.conn).await {
                let _: Result<(), _> = self.conn.hset(self.keys.rollout(), "updatedAt", now).await;
            }
            if all_up {
                return Ok(());
            }
            tokio::time::sleep(LOOK).await;
        }
    }

    /// Puts every changed hash back and restarts the workers moved to the new version on
    /// their old one, in batches, each waited for; the exit code is 1.
    async fn roll_back(
        &mut self,
        moved: &[usize],
        idle: &[usize],
        key: &str,
        failure: &Failure,
    ) -> anyhow::Result<i32> {
        let from = self.touched[0].old.label.clone();
        self.say("rollback", None, &format!("{key} failed ({failure}); rolling back to {from}"));
        let _: () = self.conn.hset(self.keys.rollout(), "state", "rolling back").await?;
        let mut trouble = Vec::new();
        // An idle id may have started on the new version meanwhile: it is moved back too.
        let batches: Vec<Vec<usize>> = moved
            .iter()
            .chain(idle)
            .copied()
            .collect::<Vec<_>>()
            .chunks(self.options.max_unavailable)
            .map(<[usize]>::to_vec)
            .collect();
        for batch in batches {
            // Only the ids that run the new version (or were moved) are waited for.
            let mut waited = Vec::new();
            for &i in &batch {
                let fields = self.fields(i, Target::Old);
                let key = self.touched[i].key.clone();
                let asked_ms = server_ms(&mut self.conn).await?;
                let asked = ask_restart(&mut self.conn, &key, &fields).await?;
                // Its old fields are back: an id parked meanwhile may start again.
                let id = self.touched[i].id.clone();
                if !self.parked_before.contains(&id) {
                    requeue_parked(&mut self.conn, &self.keys, &id).await?;
                }
                if asked || moved.contains(&i) {
                    let step = Step {
                        i,
                        asked: Instant::now(),
                        asked_ms,
                        up_since: None,
                        restarting: asked,
                        again: false,
                        said_up: false,
                    };
                    waited.push(step);
                }
            }
            // One that fails again is reported; the others are still waited for.
            while let Err((i, failure)) = self.wait_up(&mut waited, Target::Old).await {
                trouble.push(format!("{} is not up on {from}: {failure}", self.touched[i].key));
                waited.retain(|step| step.i != i);
            }
        }
        let outcome = match trouble.is_empty() {
            true => "rolled back".to_string(),
            false => format!("rolled back, but {}", trouble.join("; ")),
        };
        let end = [
            ("state", outcome.clone()),
            ("error", format!("{key}: {failure}")),
            ("updatedAt", server_ms(&mut self.conn).await?.to_string()),
        ];
        let _: () = self.conn.hset_multiple(self.keys.rollout(), &end).await?;
        self.say("rolled back", None, &outcome);
        Ok(1)
    }

    /// A progress line on stdout, and in the audit log.
    fn say(&self, step: &str, key: Option<&str>, detail: &str) {
        let who = key.unwrap_or(&self.options.worker_type);
        println!("rollout {} to {}: {who}: {detail}", self.options.worker_type, self.to);
        crate::audit::rollout(step, &self.options.worker_type, key, &self.to, detail);
    }
}

/// What changes for one id: its own fields now, and its versions before and after.
async fn plan(
    conn: &mut Conn,
    keys: &Keys,
    type_hash: &HashMap<String, String>,
    change: &Fields,
    id: &str,
    running: bool,
) -> anyhow::Result<Touched> {
    let key = keys.worker(id);
    let own: HashMap<String, String> = conn.hgetall(&key).await?;
    let before = FIELDS.iter().map(|&field| (field, own.get(field).cloned().unwrap_or_default())).collect();
    let old = config::merged(&key, type_hash, own.clone())
        .with_context(|| format!("{key}: its hash does not describe a worker now"))?;
    let mut new_own = own;
    new_own.extend(change.iter().map(|(field, value)| (field.to_string(), value.clone())));
    let new = config::merged(&key, type_hash, new_own)
        .and_then(|new| config::check(&key, &new).map(|()| new))
        .with_context(|| format!("{key}: the new version"))?;
    let version =
        |c: &config::WorkerConfig| Version { label: config::version_label(c), digest: config::version_digest(c) };
    Ok(Touched { id: id.to_string(), key, before, old: version(&old), new: version(&new), running })
}

/// One worker's step: asked to restart, watched until up.
struct Step {
    i: usize,
    asked: Instant,
    /// Redis's clock at the ask: exits from then on count.
    asked_ms: u64,
    up_since: Option<Instant>,
    /// It claimed its hash when asked, so its supervisor restarts it.
    restarting: bool,
    /// Asked a second time already.
    again: bool,
    /// Its "up" line was printed.
    said_up: bool,
}

/// Sets a worker's fields (an empty value removes the field) and, if a worker claims its hash,
/// asks it to restart on them: its `pid` cleared, `restartAsked` set. In one script, so that a
/// worker starting meanwhile reads either all the old fields or all the new. Whether it asked.
async fn ask_restart(conn: &mut Conn, key: &WorkerKey, fields: &Fields) -> redis::RedisResult<bool> {
    const SCRIPT: &str = r#"
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if redis.call('HEXISTS', KEYS[1], 'pid') == 1 then
  redis.call('HSET', KEYS[1], 'restartAsked', '1')
  redis.call('HDEL', KEYS[1], 'pid')
  return 1
end
return 0
"#;
    let script = redis::Script::new(SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation.key(key.as_str());
    for (field, value) in fields {
        invocation.arg(*field).arg(value);
    }
    let asked: i64 = invocation.invoke_async(conn).await?;
    Ok(asked == 1)
}

/// Moves an id its supervisor parked on `failed:q` back to `start:q`, in one script.
async fn requeue_parked(conn: &mut Conn, keys: &Keys, id: &str) -> redis::RedisResult<()> {
    const SCRIPT: &str = r#"
if redis.call('LREM', KEYS[1], 0, ARGV[1]) > 0 then redis.call('RPUSH', KEYS[2], ARGV[1]) end
"#;
    redis::Script::new(SCRIPT).key(&keys.failed).key(&keys.start).arg(id).invoke_async(conn).await
}

/// What Redis shows of a worker: its claim, whether it runs `digest`, its failing exits since
/// `since_ms`.
async fn look(conn: &mut Conn, key: &WorkerKey, digest: &str, exits: &str, since_ms: u64) -> redis::RedisResult<Seen> {
    let (pid, running): (Option<String>, Option<String>) =
        redis::cmd("HMGET").arg(key).arg("pid").arg("runningDigest").query_async(conn).await?;
    let entries: redis::streams::StreamRangeReply = conn.xrange(exits, since_ms.to_string(), "+").await?;
    let failures = entries
        .ids
        .iter()
        .filter(|entry| entry.get::<String>("failure").as_deref() == Some("1"))
        .map(|entry| Ended {
            reason: entry.get::<String>("reason").unwrap_or_default(),
            error: entry.get::<String>("error"),
        })
        .collect();
    Ok(Seen { claimed: pid.is_some(), on_new_version: running.as_deref() == Some(digest), failures })
}

/// Redis's clock, in ms (the exits stream's ids come from it).
async fn server_ms(conn: &mut Conn) -> redis::RedisResult<u64> {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(seconds * 1000 + micros / 1000)
}
