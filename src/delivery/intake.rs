//! Where a worker's requests come from: new entries from the process's feed, and entries to
//! run again (due retries, this consumer's own pending entries once after a restart, and now
//! and then entries of consumers gone quiet, XAUTOCLAIMed), turned into requests. The `pid`
//! check and `requestLimit` decide when there are no more.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamRangeReply};

use super::settings::Trim;
use super::{Delivery, Done, Error, Request};
use crate::keys::GROUP;
use crate::metrics::Outcome;

/// How often a busy worker checks its `pid`.
const PID_CHECK: Duration = Duration::from_millis(100);

/// This consumer's own pending entries from before its start, all of them, a page (its free
/// slots) at a time: per stream, the last id taken, until a page comes back short. (New
/// entries are read only once a page came back empty, and they are newer than any of these.)
#[derive(Default)]
pub(super) struct History {
    from: HashMap<String, String>,
    done: HashSet<String>,
    pub(super) finished: bool,
}

/// How often a worker trims its request streams.
const TRIM_EVERY: Duration = Duration::from_secs(1);

impl Delivery {
    /// [`Delivery::next`]: retries and history first, then new entries.
    pub(super) async fn take(&self, free: u32) -> Result<Option<Vec<Request>>, Error> {
        let s = &self.settings;
        loop {
            {
                let state = self.state.borrow();
                if state.stopped || (s.request_limit > 0 && state.finished >= s.request_limit) {
                    return Ok(None);
                }
            }
            if self.pid_check_due() {
                self.state.borrow_mut().last_pid_check = Some(Instant::now());
                let pid: Option<String> = self.write("HGET pid", redis::cmd("HGET").arg(&s.key).arg("pid")).await?;
                if pid.as_deref() != Some(self.pid.as_str()) {
                    self.state.borrow_mut().stopped = true;
                    return Ok(None);
                }
            }
            self.trim_if_due().await;
            let mut requests = self.again(free).await?;
            // New entries only once the history is read: a page of it may give no request
            // (its entries trimmed, or refused) and the next page must not meet new entries
            // read meanwhile under the same consumer.
            if requests.is_empty() && self.state.borrow().history.finished {
                requests = self.read(free).await?;
            }
            self.state.borrow_mut().idle = requests.is_empty();
            if !requests.is_empty() {
                if let Some(stats) = &self.stats {
                    stats.began(requests.len());
                }
                return Ok(Some(requests));
            }
        }
    }

    /// About once a second, trims the request streams as `trimAcked`/`requestStreamMaxlen`
    /// say. A trim that fails (a Redis user without EVAL or XTRIM) is logged once and trims
    /// nothing; requests go on.
    async fn trim_if_due(&self) {
        let s = &self.settings;
        if s.trim == Trim::Off || self.state.borrow().last_trim.is_some_and(|t| t.elapsed() < TRIM_EVERY) {
            return;
        }
        self.state.borrow_mut().last_trim = Some(Instant::now());
        for stream in &s.streams {
            let mut writer = self.writer.clone();
            let trimmed = match s.trim {
                Trim::MaxLen(n) => {
                    redis::cmd("XTRIM").arg(stream).arg("MAXLEN").arg("~").arg(n).query_async(&mut writer).await
                }
                _ => crate::trim::acked(&mut writer, stream).await,
            };
            if let Err(e) = trimmed {
                if !std::mem::replace(&mut self.state.borrow_mut().trim_failed, true) {
                    log::warn!(
                        "{}: cannot trim {stream} ({e}); it keeps every request until trimmed otherwise: give the \
                         worker's Redis user EVAL and XTRIM (`denorun acl <type>` does), or set trimAcked 0",
                        s.key
                    );
                }
            }
        }
    }

    /// The `pid` is checked on each read cycle while idle, and at most every 100 ms while busy,
    /// so that a busy worker does not pay a round trip per request for it.
    fn pid_check_due(&self) -> bool {
        let state = self.state.borrow();
        state.idle || state.last_pid_check.is_none_or(|t| t.elapsed() >= PID_CHECK)
    }

    /// Entries to run again: due retries, this consumer's own pending entries once after
    /// start, and now and then entries of consumers gone quiet; from each stream in turn.
    async fn again(&self, free: u32) -> Result<Vec<Request>, Error> {
        let s = &self.settings;
        let now = Instant::now();
        let mut due: Vec<(String, String)> = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            state.retries.sort_by_key(|(due, ..)| *due);
            while due.len() < free as usize && state.retries.first().is_some_and(|(at, ..)| *at <= now) {
                let (_, stream, id, _) = state.retries.remove(0);
                due.push((stream, id));
            }
        }
        let history = !self.state.borrow().history.finished;
        // Not while the history is paged through: an entry claimed now could come up again
        // in a later page.
        let claim = !history && self.state.borrow().last_claim.is_none_or(|t| t.elapsed() >= s.claim_idle / 2);
        if claim {
            self.state.borrow_mut().last_claim = Some(now);
        }
        let mut requests = Vec::new();
        for stream in &s.streams {
            let left = (free as usize).saturating_sub(requests.len());
            if left == 0 {
                break;
            }
            let ids: Vec<String> = due.iter().filter(|(st, _)| st == stream).map(|(_, id)| id.clone()).collect();
            requests.extend(self.again_from(stream, ids, left, history, claim).await?);
        }
        if history {
            let mut state = self.state.borrow_mut();
            state.history.finished = s.streams.iter().all(|stream| state.history.done.contains(stream));
        }
        Ok(requests)
    }

    /// [`Delivery::again`] for one stream: `ids` due for a retry, then (`history`) this consumer's
    /// own pending entries and (`claim`) entries idle for `claimIdleMs`, up to `free` in all.
    /// Each is XCLAIMed to this consumer, which counts the delivery.
    async fn again_from(
        &self,
        stream: &str,
        mut ids: Vec<String>,
        free: usize,
        history: bool,
        claim: bool,
    ) -> Result<Vec<Request>, Error> {
        let s = &self.settings;
        let paging = history && !self.state.borrow().history.done.contains(stream);
        if paging && ids.len() < free {
            let wanted = free - ids.len();
            let start = match self.state.borrow().history.from.get(stream) {
                Some(last) => format!("({last}"),
                None => "-".to_string(),
            };
            let mut cmd = redis::cmd("XPENDING");
            cmd.arg(stream).arg(GROUP).arg(start).arg("+").arg(wanted).arg(&s.consumer);
            let own: StreamPendingCountReply = self.write("XPENDING", &cmd).await?;
            let mut state = self.state.borrow_mut();
            match own.ids.last() {
                Some(last) if own.ids.len() == wanted => {
                    _ = state.history.from.insert(stream.to_string(), last.id.clone())
                }
                _ => _ = state.history.done.insert(stream.to_string()),
            }
            ids.extend(own.ids.into_iter().map(|p| p.id));
        }
        let mut claimed: Vec<StreamId> = Vec::new();
        if claim && ids.len() < free {
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(stream)
                .arg(GROUP)
                .arg(&s.consumer)
                .arg(s.claim_idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(free - ids.len());
            let reply: StreamAutoClaimReply = self.write("XAUTOCLAIM", &cmd).await?;
            if !reply.deleted_ids.is_empty() {
                let mut ack = redis::cmd("XACK");
                ack.arg(stream).arg(GROUP).arg(&reply.deleted_ids);
                let _: () = self.write("XACK", &ack).await?;
            }
            claimed = reply.claimed;
        }
        if !ids.is_empty() {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(stream).arg(GROUP).arg(&s.consumer).arg(0).arg(&ids);
            let reply: StreamRangeReply = self.write("XCLAIM", &cmd).await?;
            claimed.extend(reply.ids);
        }
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // The delivery counts, which XCLAIM and XAUTOCLAIM have just raised.
        let mut pipe = redis::pipe();
        for entry in &claimed {
            pipe.cmd("XPENDING").arg(stream).arg(GROUP).arg(&entry.id).arg(&entry.id).arg(1);
        }
        let counts: Vec<StreamPendingCountReply> = self.write_pipe("XPENDING", &pipe).await?;
        let attempts = counts.iter().map(|c| c.ids.first().map_or(1, |p| p.times_delivered as u32));
        self.admit(stream, claimed.into_iter().zip(attempts).collect()).await
    }

    /// New entries, from the feed: waiting until some come, a retry is due, or a second has
    /// passed (so that the `pid` is checked once a second while idle).
    async fn read(&self, free: u32) -> Result<Vec<Request>, Error> {
        let most = Instant::now() + Duration::from_secs(1);
        let next_retry = self.state.borrow().retries.iter().map(|(due, ..)| *due).min();
        let until = next_retry.map_or(most, |due| due.min(most));
        let batch = self.intake.lock().await.read(free as usize, until).await;
        let mut requests = Vec::new();
        for (stream, entries) in batch.map_err(|source| Error::Redis { what: "XREADGROUP", source })? {
            requests.extend(self.admit(&stream, entries.into_iter().map(|e| (e, 1)).collect()).await?);
        }
        Ok(requests)
    }

    /// Turns entries into requests; one whose `data` is not JSON is refused at once (400).
    async fn admit(&self, stream: &str, entries: Vec<(StreamId, u32)>) -> Result<Vec<Request>, Error> {
        let mut requests = Vec::with_capacity(entries.len());
        for (entry, attempt) in entries {
            let fields: HashMap<String, String> = entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap_or_default()))
                .collect();
            // Handed out maxAttempts times already without an answer or a dead letter: each
            // time its worker ended (a crash, a memory or CPU overrun) before it could report.
            // It goes to the dead letters rather than round again.
            if attempt > self.settings.max_attempts {
                if let Some(stats) = &self.stats {
                    stats.count(Outcome::Dead);
                }
                let error = format!("its worker ended while handling it, {} time(s)", attempt - 1);
                let dead = Done {
                    stream: stream.to_string(),
                    id: entry.id,
                    reference: fields.get("ref").cloned(),
                    kind: fields.get("type").cloned(),
                    attempt: attempt - 1,
                    fields,
                    reply: None,
                    error: Some(error),
                    took_ms: None,
                };
                self.bury(&dead).await?;
                continue;
            }
            let data = match fields.get("data") {
                None => serde_json::Value::Null,
                Some(text) => match serde_json::from_str(text) {
                    Ok(data) => data,
                    Err(e) => {
                        let reply = serde_json::json!({ "code": 400, "error": format!("data is not JSON: {e}") });
                        if let Some(stats) = &self.stats {
                            stats.count(Outcome::Refused);
                        }
                        let refused = Done {
                            stream: stream.to_string(),
                            id: entry.id,
                            reference: fields.get("ref").cloned(),
                            kind: fields.get("type").cloned(),
                            attempt,
                            fields,
                            reply: Some(reply.to_string()),
                            error: None,
                            took_ms: None,
                        };
                        self.answer(&refused).await?;
                        continue;
                    }
                },
            };
            requests.push(Request {
                stream: stream.to_string(),
                id: entry.id,
                reference: fields.get("ref").cloned(),
                kind: fields.get("type").cloned(),
                data,
                fields,
                attempt,
            });
        }
        Ok(requests)
    }
}
