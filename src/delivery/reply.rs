//! How a request ends: answered (its reply to `res:{ref}` + EXPIRE, the response stream and
//! the trace, and its ack); retried with backoff when the handler threw; after `maxAttempts`, a
//! dead letter and a 500; and `WAIT` for `replicaAcks` replicas. The writes go out with the
//! other endings of the same turn (`ending`), or, under Cluster, command by command with a done
//! marker.
//!
//! A client chooses the ref, so it chooses the keys `res:{ref}` and `req:{ref}:h`. One that
//! cannot take the reply (a key of another type; a ref that is empty or longer than
//! [`MAX_REF`]) does not stop the worker and is not acked silently: the request ends all the
//! same, once, with the reply and the reason on the response stream (field `error`).

use std::time::Instant;

use super::ending::Ending;
use super::settings::retry_delay;
use super::{Delivery, Done, Error};
use crate::keys;
use crate::keys::GROUP;
use crate::metrics::Outcome;
use crate::shards;

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
                    "id": done.id, "worker": s.key, "completed": now_ms(), "type": done.kind
                })
                .to_string(),
            ),
            _ => None,
        };
        let ending = Ending {
            what: "replying",
            stream: done.stream.clone(),
            id: done.id.clone(),
            reference: done.reference.clone(),
            reply: done.reply.clone(),
            trace,
            dead: None,
        };
        self.end(ending).await
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
            what: "dead-lettering",
            stream: done.stream.clone(),
            id: done.id.clone(),
            reference: done.reference.clone(),
            reply: Some(reply),
            trace: None,
            dead: Some(dead),
        };
        self.end(ending).await
    }

    /// Ends a request once, through outages. On one server (or behind Sentinel) with the other
    /// endings of this turn, in one script that skips an entry no longer pending, so a try whose
    /// answer was lost is not done twice (`ending`). Under Cluster, where the reply's keys and
    /// the stream lie in different slots, the reply first and then the ack with a done marker:
    /// a crash between the two sends the reply again later (clients drop it by `ref`).
    async fn end(&self, ending: Ending) -> Result<(), Error> {
        // Counted at once (before the reply is in Redis), so that a `next` that runs meanwhile
        // keeps to `requestLimit`.
        self.state.borrow_mut().finished += 1;
        let id = ending.id.clone();
        let notes = match self.cluster {
            true => self.end_on_cluster(&ending).await?,
            false => self.end_together(ending).await?,
        };
        if !notes.is_empty() {
            self.note_unpushed(&id, &notes);
        }
        if self.settings.replica_acks > 0 {
            self.wait_for_replicas().await;
        }
        Ok(())
    }

    /// Under Cluster: the reply's commands one by one (a key of the wrong type skipped, and
    /// noted), then the ack and the marker in the stream's slot, through outages, once.
    async fn end_on_cluster(&self, ending: &Ending) -> Result<String, Error> {
        let (s, what) = (&self.settings, ending.what);
        let marker = marker(&ending.stream, &ending.id);
        let note = ending.ref_note();
        let done: Option<String> = self.write("GET", redis::cmd("GET").arg(&marker)).await?;
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
        if let (Some(reply), Some(reference)) = (&ending.reply, ending.pushable()) {
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
            add.arg("ref")
                .arg(ending.reference.as_deref().unwrap_or(""))
                .arg("xid")
                .arg(&ending.id)
                .arg("res")
                .arg(reply);
            if !notes.is_empty() {
                add.arg("error").arg(&notes);
            }
            let _: String = self.write(what, &add).await?;
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .xack(&ending.stream, GROUP, &[&ending.id])
            .ignore()
            .set_ex(marker, 1, s.reply_ttl.max(60))
            .ignore();
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

/// Under Cluster, the key that marks entry `id` of `stream` done: named after the stream (so that an ACL
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
