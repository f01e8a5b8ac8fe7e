//! How a request ends: its reply (LPUSH `res:{ref}` + EXPIRE, XADD to the response stream,
//! the trace) and its ack in one MULTI/EXEC, sent once through outages (a marker tells whether
//! an ack whose answer was lost arrived); a retry with backoff when the handler threw; after
//! `maxAttempts`, a dead letter and a 500; and `WAIT` for `replicaAcks` replicas.

use std::time::Instant;

use super::settings::retry_delay;
use super::{Delivery, Done, Error};
use crate::keys;
use crate::keys::GROUP;
use crate::metrics::Outcome;
use crate::shards;
use crate::topology;

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

    /// Replies (LPUSH `res:{ref}` + EXPIRE, XADD to the response stream, the trace) and acks
    /// (see `commit`).
    pub(super) async fn answer(&self, done: &Done) -> Result<(), Error> {
        let s = &self.settings;
        let mut reply = Vec::new();
        if let Some(value) = &done.reply {
            reply = self.respond(&done.id, done.reference.as_deref(), value);
            if let (true, Some(reference)) = (s.trace, &done.reference) {
                let trace = keys::trace(reference);
                let value = serde_json::json!({
                    "id": done.id, "worker": s.key, "completed": now_ms(), "type": done.fields.get("type")
                });
                reply.push(redis::cmd("HSET").arg(&trace).arg("handlerTrace").arg(value.to_string()).clone());
                reply.push(redis::cmd("EXPIRE").arg(&trace).arg(s.trace_ttl).clone());
            }
        }
        self.commit("replying", reply, &done.stream, &done.id).await
    }

    /// Sends a reply's commands and acks the entry, through outages, once. On one server (or
    /// behind Sentinel) all in one MULTI/EXEC: all of it happens or none. Under Cluster, where
    /// the reply's keys and the stream lie in different slots, the reply first and then the
    /// ack: a crash between the two sends the reply again later (clients drop it by `ref`).
    /// When the connection goes before the ack's answer came, the ack may or may not have
    /// reached Redis: its marker (in the stream's slot, kept a while) tells, so that it is not
    /// sent twice.
    async fn commit(&self, what: &'static str, reply: Vec<redis::Cmd>, stream: &str, id: &str) -> Result<(), Error> {
        let s = &self.settings;
        let marker = marker(stream, id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if self.cluster {
            let sent = futures::future::join_all(reply.iter().map(|cmd| self.write::<()>(what, cmd))).await;
            sent.into_iter().collect::<Result<Vec<()>, _>>()?;
        } else {
            for cmd in reply {
                pipe.add_command(cmd).ignore();
            }
        }
        pipe.xack(stream, GROUP, &[id]).ignore().set_ex(&marker, 1, s.reply_ttl.max(60)).ignore();
        let mut backoff = topology::Backoff::default();
        loop {
            let mut writer = self.writer.clone();
            match pipe.query_async::<()>(&mut writer).await {
                Ok(()) => break,
                Err(e) if topology::is_outage(&e) => {
                    backoff.wait().await;
                    let done: Option<String> = self.write("GET", redis::cmd("GET").arg(&marker)).await?;
                    if done.is_some() {
                        break;
                    }
                }
                Err(source) => return Err(Error::Redis { what, source }),
            }
        }
        self.state.borrow_mut().finished += 1;
        if s.replica_acks > 0 {
            self.wait_for_replicas().await;
        }
        Ok(())
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

    /// A reply's commands: LPUSH `res:{ref}` + EXPIRE (with a ref), and XADD to the response
    /// stream.
    fn respond(&self, id: &str, reference: Option<&str>, reply: &str) -> Vec<redis::Cmd> {
        let s = &self.settings;
        let mut cmds = Vec::new();
        if let Some(reference) = reference {
            let list = keys::reply(reference);
            cmds.push(redis::cmd("LPUSH").arg(&list).arg(reply).clone());
            cmds.push(redis::cmd("EXPIRE").arg(&list).arg(s.reply_ttl).clone());
        }
        let mut add = redis::cmd("XADD");
        add.arg(&s.response_stream).arg("MAXLEN").arg("~").arg(s.response_maxlen).arg("*");
        add.arg("ref").arg(reference.unwrap_or("")).arg("xid").arg(id).arg("res").arg(reply);
        cmds.push(add);
        cmds
    }

    /// After `maxAttempts`: the entry goes to the dead-letter stream with its error, the client
    /// gets a 500, and it is acked (see `commit`).
    pub(super) async fn bury(&self, done: &Done) -> Result<(), Error> {
        let s = &self.settings;
        let error = done.error.as_deref().unwrap_or_default();
        let reply = serde_json::json!({ "code": 500, "error": error }).to_string();
        let mut dead = redis::cmd("XADD");
        dead.arg(&s.dead_stream).arg("*");
        let mut names: Vec<&String> = done.fields.keys().collect();
        names.sort();
        for name in names {
            dead.arg(name).arg(&done.fields[name]);
        }
        dead.arg("deadId")
            .arg(&done.id)
            .arg("deadError")
            .arg(error)
            .arg("deadAttempts")
            .arg(done.attempt)
            .arg("deadWorker")
            .arg(&s.key);
        let mut cmds = vec![dead];
        cmds.extend(self.respond(&done.id, done.reference.as_deref(), &reply));
        self.commit("dead-lettering", cmds, &done.stream, &done.id).await
    }
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
