//! How a request ends: its reply (LPUSH `res:{ref}` + EXPIRE, XADD to the response stream,
//! the trace), its dead letter if any, its ack and its done marker, in one script that does
//! nothing if the marker says it ran already (so it is sent again safely after an outage); a
//! retry with backoff when the handler threw; after `maxAttempts`, a dead letter and a 500;
//! and `WAIT` for `replicaAcks` replicas.
//!
//! A client chooses the ref, so it chooses the keys `res:{ref}` and `req:{ref}:h`. One that
//! cannot take the reply (a key of another type; a ref that is empty or longer than
//! [`MAX_REF`]) does not stop the worker and is not acked silently: the request ends all the
//! same, once, with the reply and the reason on the response stream (field `error`).

use std::time::Instant;

use super::settings::retry_delay;
use super::{Delivery, Done, Error};
use crate::keys;
use crate::keys::GROUP;
use crate::metrics::Outcome;
use crate::shards;
use crate::topology;

/// The most fields of a request its dead letter keeps one by one.
const MOST_DEAD_FIELDS: usize = 2000;

/// The longest ref whose reply is pushed to `res:{ref}`.
pub const MAX_REF: usize = 1024;

/// Why a request's reply cannot go to `res:{ref}` (known before Redis is asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefProblem {
    Empty,
    TooLong(usize),
}

impl std::fmt::Display for RefProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefProblem::Empty => write!(f, "the ref is empty: the reply was not pushed"),
            RefProblem::TooLong(n) => write!(f, "the ref is {n} bytes, over {MAX_REF}: the reply was not pushed"),
        }
    }
}

/// Whether a reply can be pushed to `res:{reference}`.
pub fn check_ref(reference: &str) -> Result<(), RefProblem> {
    match reference.len() {
        0 => Err(RefProblem::Empty),
        n if n > MAX_REF => Err(RefProblem::TooLong(n)),
        _ => Ok(()),
    }
}

/// How a request ends: what the script (or, under Cluster, the commands) write.
struct Ending<'a> {
    stream: &'a str,
    id: &'a str,
    reference: Option<&'a str>,
    /// The reply's JSON; none: acked without a reply.
    reply: Option<String>,
    /// The trace's `handlerTrace` value.
    trace: Option<String>,
    /// The dead letter's fields.
    dead: Option<Vec<(String, String)>>,
}

/// KEYS: the request stream, the done marker, the response stream, `res:{ref}`, `req:{ref}:h`,
/// the dead-letter stream (unused keys repeat the marker). ARGV: the group, the entry id, the
/// marker's TTL, the response stream's MAXLEN, the ref, the reply ('' none), the reply's TTL ('0':
/// not pushed), the trace ('' none), its TTL, a note ('' none), then the dead letter's field
/// pairs. Returns the notes on what could not be written ('' none).
const END: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return '' end
local function fits(key, want)
  local kind = redis.call('TYPE', key)['ok']
  return kind == want or kind == 'none', kind
end
local ok, kind = fits(KEYS[3], 'stream')
if not ok then
  return redis.error_reply('WRONGTYPE the response stream ' .. KEYS[3] .. ' is a ' .. kind .. ', not a stream')
end
if #ARGV > 10 then
  ok, kind = fits(KEYS[6], 'stream')
  if not ok then
    return redis.error_reply('WRONGTYPE the dead-letter stream ' .. KEYS[6] .. ' is a ' .. kind .. ', not a stream')
  end
end
-- The dead letter first: the one write here that can still fail (memory) comes before any other.
if #ARGV > 10 then
  local add = {'XADD', KEYS[6], '*'}
  for i = 11, #ARGV do add[#add + 1] = ARGV[i] end
  redis.call(unpack(add))
end
local notes = {}
if ARGV[10] ~= '' then notes[#notes + 1] = ARGV[10] end
local reply = ARGV[6]
if reply ~= '' and ARGV[7] ~= '0' then
  ok, kind = fits(KEYS[4], 'list')
  if ok then
    redis.call('LPUSH', KEYS[4], reply)
    redis.call('EXPIRE', KEYS[4], ARGV[7])
  else
    notes[#notes + 1] = KEYS[4] .. ' is a ' .. kind .. ', not a list: the reply was not pushed'
  end
end
if ARGV[8] ~= '' then
  ok, kind = fits(KEYS[5], 'hash')
  if ok then
    redis.call('HSET', KEYS[5], 'handlerTrace', ARGV[8])
    redis.call('EXPIRE', KEYS[5], ARGV[9])
  else
    notes[#notes + 1] = KEYS[5] .. ' is a ' .. kind .. ', not a hash: no trace'
  end
end
local note = table.concat(notes, '; ')
if reply ~= '' then
  local add = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'ref', ARGV[5], 'xid', ARGV[2], 'res', reply}
  if note ~= '' then
    add[#add + 1] = 'error'
    add[#add + 1] = note
  end
  redis.call(unpack(add))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
return note
";

/// Under Cluster, one of the reply's keys (in a slot of its own): KEYS the key; ARGV `list` or
/// `hash`, the value (pushed, or the `handlerTrace` field), the TTL. A key of another type is
/// left as it is, and said.
const PUT_ONE: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= ARGV[1] and kind ~= 'none' then
  return KEYS[1] .. ' is a ' .. kind .. ', not a ' .. ARGV[1] .. ': not written'
end
if ARGV[1] == 'list' then
  redis.call('LPUSH', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], 'handlerTrace', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return ''
";

impl Delivery {
    /// Ends a request as the handler did: answered, retried later, or dead-lettered after
    /// `maxAttempts`.
    pub async fn done(&self, done: Done) -> Result<(), Error> {
        let finished = |outcome| {
            if let Some(stats) = &self.stats {
                stats.finished(outcome, done.took_ms);
            }
        };
        if done.error.is_none() {
            finished(Outcome::Ok);
            return self.answer(&done).await;
        }
        if done.attempt < self.settings.max_attempts {
            finished(Outcome::Retried);
            let due = Instant::now() + retry_delay(&self.settings, done.attempt);
            self.state.borrow_mut().retries.push((due, done.stream, done.id, done.attempt + 1));
            return Ok(());
        }
        finished(Outcome::Dead);
        self.bury(&done).await
    }

    /// Replies (to `res:{ref}`, the response stream, the trace) and acks (see `end`).
    pub(super) async fn answer(&self, done: &Done) -> Result<(), Error> {
        let s = &self.settings;
        let trace = match (&done.reply, s.trace, &done.reference) {
            (Some(_), true, Some(_)) => Some(
                serde_json::json!({
                    "id": done.id, "worker": s.key, "completed": now_ms(), "type": done.fields.get("type")
                })
                .to_string(),
            ),
            _ => None,
        };
        let ending = Ending {
            stream: &done.stream,
            id: &done.id,
            reference: done.reference.as_deref(),
            reply: done.reply.clone(),
            trace,
            dead: None,
        };
        self.end("replying", ending).await
    }

    /// After `maxAttempts`: the entry goes to the dead-letter stream with its error, the client
    /// gets a 500, and it is acked (see `end`).
    pub(super) async fn bury(&self, done: &Done) -> Result<(), Error> {
        let s = &self.settings;
        let error = done.error.as_deref().unwrap_or_default();
        let reply = serde_json::json!({ "code": 500, "error": error }).to_string();
        let mut names: Vec<&String> = done.fields.keys().collect();
        names.sort();
        let mut dead: Vec<(String, String)> = match names.len() {
            // A Lua call takes some 8,000 arguments at most: a request with more fields
            // than that keeps them as one JSON object.
            n if n > MOST_DEAD_FIELDS => vec![("deadFields".into(), serde_json::json!(done.fields).to_string())],
            _ => names.into_iter().map(|n| (n.clone(), done.fields[n].clone())).collect(),
        };
        dead.push(("deadId".into(), done.id.clone()));
        dead.push(("deadError".into(), error.to_string()));
        dead.push(("deadAttempts".into(), done.attempt.to_string()));
        dead.push(("deadWorker".into(), s.key.clone()));
        let ending = Ending {
            stream: &done.stream,
            id: &done.id,
            reference: done.reference.as_deref(),
            reply: Some(reply),
            trace: None,
            dead: Some(dead),
        };
        self.end("dead-lettering", ending).await
    }

    /// Ends a request once, through outages. On one server (or behind Sentinel) in one script
    /// that first checks the marker, so a try whose answer was lost is not done twice. Under
    /// Cluster, where the reply's keys and the stream lie in different slots, the reply first
    /// and then the ack with its marker: a crash between the two sends the reply again later
    /// (clients drop it by `ref`).
    async fn end(&self, what: &'static str, ending: Ending<'_>) -> Result<(), Error> {
        let s = &self.settings;
        let marker = marker(ending.stream, ending.id);
        let pushed = ending.reference.map(check_ref);
        let note = match pushed {
            Some(Err(problem)) => problem.to_string(),
            _ => String::new(),
        };
        let notes = if self.cluster {
            self.end_on_cluster(what, &ending, &marker, note).await?
        } else {
            let reference = ending.reference.unwrap_or("");
            let list = match pushed {
                Some(Ok(())) => keys::reply(reference),
                _ => marker.clone(),
            };
            let trace = match (&ending.trace, pushed) {
                (Some(_), Some(Ok(()))) => keys::trace(reference),
                _ => marker.clone(),
            };
            let mut script = redis::cmd("EVALSHA");
            script.arg(end_script().get_hash()).arg(6);
            script.arg(ending.stream).arg(&marker).arg(&s.response_stream).arg(list).arg(trace).arg(&s.dead_stream);
            script.arg(GROUP).arg(ending.id).arg(s.reply_ttl.max(60)).arg(s.response_maxlen).arg(reference);
            script.arg(ending.reply.as_deref().unwrap_or(""));
            script.arg(if matches!(pushed, Some(Ok(()))) { s.reply_ttl } else { 0 });
            let traced = ending.trace.as_deref().filter(|_| matches!(pushed, Some(Ok(()))));
            script.arg(traced.unwrap_or("")).arg(s.trace_ttl).arg(&note);
            for (name, value) in ending.dead.iter().flatten() {
                script.arg(name).arg(value);
            }
            self.run_end(what, &script).await?
        };
        if !notes.is_empty() {
            self.note_unpushed(ending.id, &notes);
        }
        self.state.borrow_mut().finished += 1;
        if s.replica_acks > 0 {
            self.wait_for_replicas().await;
        }
        Ok(())
    }

    /// The script, through outages: loaded when Redis does not have it (after a restart).
    async fn run_end(&self, what: &'static str, script: &redis::Cmd) -> Result<String, Error> {
        let mut backoff = topology::Backoff::default();
        loop {
            let mut writer = self.writer.clone();
            match script.query_async::<String>(&mut writer).await {
                Ok(notes) => return Ok(notes),
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    let _: String = self.write("SCRIPT LOAD", redis::cmd("SCRIPT").arg("LOAD").arg(END)).await?;
                }
                Err(e) if topology::is_outage(&e) => backoff.wait().await,
                Err(source) => return Err(Error::Redis { what, source }),
            }
        }
    }

    /// Under Cluster: the reply's commands one by one (a key of the wrong type skipped, and
    /// noted), then the ack and the marker in the stream's slot, through outages, once.
    async fn end_on_cluster(
        &self,
        what: &'static str,
        ending: &Ending<'_>,
        marker: &str,
        note: String,
    ) -> Result<String, Error> {
        let s = &self.settings;
        let done: Option<String> = self.write("GET", redis::cmd("GET").arg(marker)).await?;
        if done.is_some() {
            return Ok(String::new());
        }
        if let Some(dead) = &ending.dead {
            let mut add = redis::cmd("XADD");
            add.arg(&s.dead_stream).arg("*");
            for (name, value) in dead {
                add.arg(name).arg(value);
            }
            let _: String = self.write(what, &add).await?;
        }
        let mut notes: Vec<String> = [note].into_iter().filter(|n| !n.is_empty()).collect();
        let pushable = ending.reference.filter(|r| check_ref(r).is_ok());
        if let (Some(reply), Some(reference)) = (&ending.reply, pushable) {
            let mut writes = vec![(keys::reply(reference), "list", reply.as_str(), s.reply_ttl)];
            if let Some(trace) = &ending.trace {
                writes.push((keys::trace(reference), "hash", trace.as_str(), s.trace_ttl));
            }
            for (key, kind, value, ttl) in writes {
                let mut put = redis::cmd("EVAL");
                put.arg(PUT_ONE).arg(1).arg(key).arg(kind).arg(value).arg(ttl);
                let refused: String = self.write(what, &put).await?;
                if !refused.is_empty() {
                    notes.push(refused);
                }
            }
        }
        let notes = notes.join("; ");
        if let Some(reply) = &ending.reply {
            let mut add = redis::cmd("XADD");
            add.arg(&s.response_stream).arg("MAXLEN").arg("~").arg(s.response_maxlen).arg("*");
            add.arg("ref").arg(ending.reference.unwrap_or("")).arg("xid").arg(ending.id).arg("res").arg(reply);
            if !notes.is_empty() {
                add.arg("error").arg(&notes);
            }
            let _: String = self.write(what, &add).await?;
        }
        let mut pipe = redis::pipe();
        pipe.atomic().xack(ending.stream, GROUP, &[ending.id]).ignore().set_ex(marker, 1, s.reply_ttl.max(60)).ignore();
        self.write_pipe::<()>(what, &pipe).await?;
        Ok(notes)
    }

    /// Logs a reply that could not be pushed: the first time, then every thousandth (a client
    /// could send such refs in bulk).
    fn note_unpushed(&self, id: &str, notes: &str) {
        let mut state = self.state.borrow_mut();
        state.unpushed += 1;
        if state.unpushed % 1000 == 1 {
            log::warn!(
                "{}: request {id} was answered on the response stream {} only: {notes} ({} such so far)",
                self.settings.key,
                self.settings.response_stream,
                state.unpushed
            );
        }
    }

    /// `WAIT`s until `replicaAcks` replicas have the reply and the ack (or the time-out), so
    /// that a failover to one of them keeps it. Too few, or a `WAIT` that fails (a Redis user
    /// without it), is logged on the first time and then every thousandth: the reply is sent,
    /// and a failover may run the request again.
    async fn wait_for_replicas(&self) {
        let s = &self.settings;
        let mut wait = redis::cmd("WAIT");
        wait.arg(s.replica_acks).arg(s.replica_ack_timeout.as_millis() as u64);
        let acked: redis::RedisResult<u64> = wait.query_async(&mut self.writer.clone()).await;
        if matches!(acked, Ok(n) if n >= s.replica_acks) {
            return;
        }
        let mut state = self.state.borrow_mut();
        state.unreplicated += 1;
        if state.unreplicated % 1000 != 1 {
            return;
        }
        match acked {
            Ok(acked) => log::warn!(
                "{}: {acked} of the {} replica(s) replicaAcks asks for acknowledged a reply within {} ms \
                 ({} such replies so far); a failover now may run those requests again",
                s.key,
                s.replica_acks,
                s.replica_ack_timeout.as_millis(),
                state.unreplicated
            ),
            Err(e) => log::warn!(
                "{}: WAIT failed ({e}), so replicaAcks is not checked ({} replies so far); give the \
                 worker's Redis user the WAIT command (`denorun acl <type>` does), or unset replicaAcks",
                s.key,
                state.unreplicated
            ),
        }
    }
}

/// The script that ends a request.
fn end_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(END))
}

/// The key that marks entry `id` of `stream` done: named after the stream (so that an ACL
/// user's key patterns cover it) and in the stream's hash slot, by the stream's hash tag or,
/// for a stream without one, the whole name as the tag.
fn marker(stream: &str, id: &str) -> String {
    match shards::slot(stream) == shards::slot(&format!("{stream}:done")) {
        true => format!("{stream}:done:{id}"),
        false => format!("{stream}:done:{{{stream}}}:{id}"),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_share_their_streams_slot() {
        let fields: std::collections::HashMap<String, String> = [("streamShards".to_string(), "6".to_string())].into();
        let shards = keys::Keys::of("g").unwrap().type_streams(&fields).unwrap();
        for stream in shards.iter().chain([&"g:req:x".to_string()]) {
            assert_eq!(shards::slot(&marker(stream, "1-0")), shards::slot(stream), "{stream}");
        }
        assert_eq!(marker("g:req:x", "1-0"), "g:req:x:done:{g:req:x}:1-0");
        assert_eq!(marker("g:req:{3}:x", "1-0"), "g:req:{3}:x:done:1-0");
    }
}
