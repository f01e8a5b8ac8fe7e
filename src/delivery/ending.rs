//! Ending requests in Redis, together: the endings a worker reports in one turn of its event
//! loop go out in one script call (on one server, or behind Sentinel), so that eight requests
//! answered at once cost one round trip and one script, not eight.
//!
//! The script ends each request once: it acks the entry, and only if the ack found it still
//! pending writes its dead letter if there is one and its reply (`res:{ref}` + EXPIRE, the
//! trace, the response stream). An entry no longer pending was ended already (a try whose
//! answer was lost in an outage, sent again; or another consumer that took it over finished
//! first). Each entry's ack and writes happen in one script run, so a request is answered and
//! acked, or neither; except that an entry whose group is gone (destroyed by hand) is
//! answered and has nothing to ack.
//!
//! A call Redis refuses (the response stream of another type; a command the worker's Redis
//! user may not run) is sent again one ending at a time, so that each request gets its own
//! outcome. An entry the refused call acked before it failed gets that call's error: the
//! worker ends naming it rather than count the entry as answered. Outages are waited out, as
//! everywhere in delivery.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::reply::check_ref;
use super::{Delivery, Error, Settings};
use crate::keys;
use crate::keys::GROUP;
use crate::topology;

/// How a request ends: what the script (or, under Cluster, the commands) write.
pub(super) struct Ending {
    /// What is being done, for errors: replying or dead-lettering.
    pub what: &'static str,
    pub stream: String,
    pub id: String,
    pub reference: Option<String>,
    /// The reply's JSON; none: acked without a reply.
    pub reply: Option<String>,
    /// The trace's `handlerTrace` value.
    pub trace: Option<String>,
    /// The dead letter's fields.
    pub dead: Option<Vec<(String, String)>>,
}

impl Ending {
    /// The ref, when the reply can be pushed to `res:{ref}` (see [`check_ref`]).
    pub(super) fn pushable(&self) -> Option<&str> {
        self.reference.as_deref().filter(|reference| check_ref(reference).is_ok())
    }

    /// Why the reply cannot be pushed, for the response stream's `error` field ('' when it
    /// can, or when the request has no ref).
    pub(super) fn ref_note(&self) -> String {
        match self.reference.as_deref().map(check_ref) {
            Some(Err(problem)) => problem.to_string(),
            _ => String::new(),
        }
    }
}

/// An ending waiting for this turn's script call, and where its result goes: the notes on what
/// could not be written ('' none).
pub(super) type Waiting = (Ending, oneshot::Sender<Result<String, Error>>);

/// The most arguments one script call is given (a Lua call takes some 8,000).
const MOST_ARGS: usize = 6000;

/// The most endings one script call ends.
const MOST_ENDINGS: usize = 64;

/// KEYS: the response stream, the dead-letter stream, then for each ending its request stream,
/// `res:{ref}` and `req:{ref}:h` (the request stream again where unused). ARGV: the group, the
/// response stream's MAXLEN, then for each ending: the entry id, the ref, the reply ('' none),
/// the reply's TTL ('0': not pushed), the trace ('' none), its TTL, a note ('' none), the number
/// N of dead-letter arguments, then those N (field, value, ...). Returns each ending's notes on
/// what could not be written ('' none), or nil for an entry ended already.
///
/// An entry's XACK comes first and says whether it was still pending; an entry whose group (or
/// stream) is gone, destroyed by hand, is answered all the same, as its read will end the
/// worker with NOGROUP. Once a script has written, Redis lets it write on (an over-memory
/// refusal comes only before its first write, and XACK is not refused for memory). After the
/// XACK, each write either meets a key checked first (the streams' types, at the start, and no
/// reply or trace key may name them) or is caught and noted (LPUSH), so only a command the
/// worker's Redis user may not run can still fail there.
const END: &str = r"
local function fits(key, want)
  local kind = redis.call('TYPE', key)['ok']
  return kind == want or kind == 'none', kind
end
local ok, kind = fits(KEYS[1], 'stream')
if not ok then
  return redis.error_reply('WRONGTYPE the response stream ' .. KEYS[1] .. ' is a ' .. kind .. ', not a stream')
end
local i = 3
while i <= #ARGV do
  local dead = tonumber(ARGV[i + 7])
  if dead > 0 then
    ok, kind = fits(KEYS[2], 'stream')
    if not ok then
      return redis.error_reply('WRONGTYPE the dead-letter stream ' .. KEYS[2] .. ' is a ' .. kind .. ', not a stream')
    end
    break
  end
  i = i + 8 + dead
end
local group, maxlen = ARGV[1], ARGV[2]
local out = {}
local a = 3
for k = 3, #KEYS, 3 do
  local stream, id, dead = KEYS[k], ARGV[a], tonumber(ARGV[a + 7])
  local first = a + 8
  local acked = redis.call('XACK', stream, group, id)
  if acked == 0 and not redis.pcall('XPENDING', stream, group).err then
    out[#out + 1] = false
  else
    if dead > 0 then
      local add = {'XADD', KEYS[2], '*'}
      for i = first, first + dead - 1 do add[#add + 1] = ARGV[i] end
      redis.call(unpack(add))
    end
    local reply, note = ARGV[a + 2], ARGV[a + 6]
    if reply ~= '' and ARGV[a + 3] ~= '0' then
      local list, why = KEYS[k + 1], nil
      if list == KEYS[1] or list == KEYS[2] then
        why = list .. ' names a stream of this worker: the reply was not pushed'
      else
        local pushed = redis.pcall('LPUSH', list, reply)
        if type(pushed) == 'number' then
          redis.call('EXPIRE', list, ARGV[a + 3])
        elseif string.sub(pushed.err, 1, 9) == 'WRONGTYPE' then
          why = list .. ' is a ' .. redis.call('TYPE', list)['ok'] .. ', not a list: the reply was not pushed'
        else
          return redis.error_reply(pushed.err)
        end
      end
      if why then note = note == '' and why or note .. '; ' .. why end
    end
    if ARGV[a + 4] ~= '' then
      local traced = KEYS[k + 2]
      ok, kind = fits(traced, 'hash')
      if traced == KEYS[1] or traced == KEYS[2] then ok, kind = false, 'stream of this worker' end
      if ok then
        redis.call('HSET', traced, 'handlerTrace', ARGV[a + 4])
        redis.call('EXPIRE', traced, ARGV[a + 5])
      else
        local why = traced .. ' is a ' .. kind .. ', not a hash: no trace'
        note = note == '' and why or note .. '; ' .. why
      end
    end
    if reply ~= '' then
      if note == '' then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'ref', ARGV[a + 1], 'xid', id, 'res', reply)
      else
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'ref', ARGV[a + 1], 'xid', id, 'res', reply, 'error', note)
      end
    end
    out[#out + 1] = note
  end
  a = first + dead
end
return out
";

/// The script that ends requests.
fn end_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(END))
}

/// The script calls that end `endings`, in order: each with the range of endings it ends, at
/// most [`MOST_ENDINGS`] and about [`MOST_ARGS`] arguments each (an ending with more goes alone).
fn calls(s: &Settings, endings: &[Ending]) -> Vec<(Range<usize>, redis::Cmd)> {
    let mut calls = Vec::new();
    let mut start = 0;
    while start < endings.len() {
        let (mut end, mut args) = (start, 0);
        while end < endings.len() && end - start < MOST_ENDINGS {
            let more = 11 + 2 * endings[end].dead.as_ref().map_or(0, Vec::len);
            if end > start && args + more > MOST_ARGS {
                break;
            }
            args += more;
            end += 1;
        }
        calls.push((start..end, call(s, &endings[start..end])));
        start = end;
    }
    calls
}

/// One script call for `endings` (see [`END`]).
fn call(s: &Settings, endings: &[Ending]) -> redis::Cmd {
    let mut keys: Vec<String> = vec![s.response_stream.clone(), s.dead_stream.clone()];
    let mut args: Vec<String> = vec![GROUP.to_string(), s.response_maxlen.to_string()];
    for ending in endings {
        let pushable = ending.pushable();
        let traced = ending.trace.as_deref().filter(|_| pushable.is_some());
        keys.push(ending.stream.clone());
        keys.push(pushable.map_or_else(|| ending.stream.clone(), keys::reply));
        keys.push(pushable.filter(|_| traced.is_some()).map_or_else(|| ending.stream.clone(), keys::trace));
        let dead = ending.dead.as_deref().unwrap_or_default();
        args.extend([
            ending.id.clone(),
            ending.reference.clone().unwrap_or_default(),
            ending.reply.clone().unwrap_or_default(),
            if pushable.is_some() { s.reply_ttl.to_string() } else { "0".into() },
            traced.unwrap_or_default().to_string(),
            s.trace_ttl.to_string(),
            ending.ref_note(),
            (2 * dead.len()).to_string(),
        ]);
        for (name, value) in dead {
            args.extend([name.clone(), value.clone()]);
        }
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(end_script().get_hash()).arg(keys.len()).arg(keys).arg(args);
    cmd
}

impl Delivery {
    /// Ends a request with the others ended in this turn of the worker's event loop: returns
    /// its notes on what could not be written ('' none), once Redis has its ending.
    pub(super) async fn end_together(&self, ending: Ending) -> Result<String, Error> {
        let (sent, result) = oneshot::channel();
        self.endings.borrow_mut().push((ending, sent));
        // The rest of this turn's endings join the queue meanwhile; the first of them polled
        // again sends them all.
        YieldOnce(false).await;
        let waiting = std::mem::take(&mut *self.endings.borrow_mut());
        if !waiting.is_empty() {
            self.send_endings(waiting).await;
        }
        result.await.unwrap_or(Err(Error::Unsent))
    }

    /// Sends endings in as few script calls as fit; a call Redis refuses is sent again one
    /// ending at a time.
    async fn send_endings(&self, waiting: Vec<Waiting>) {
        let (endings, senders): (Vec<Ending>, Vec<_>) = waiting.into_iter().unzip();
        let mut senders: Vec<Option<oneshot::Sender<Result<String, Error>>>> = senders.into_iter().map(Some).collect();
        let mut tell = |i: usize, result: Result<String, Error>| {
            if let Some(sender) = senders[i].take() {
                let _ = sender.send(result);
            }
        };
        for (range, cmd) in calls(&self.settings, &endings) {
            match self.run_end(endings[range.start].what, &cmd).await {
                Ok(notes) => {
                    let mut notes = notes.into_iter();
                    for i in range {
                        tell(i, Ok(notes.next().flatten().unwrap_or_default()));
                    }
                }
                Err(e) if range.len() == 1 => tell(range.start, Err(e)),
                Err(refused) => {
                    for i in range {
                        let single = call(&self.settings, &endings[i..i + 1]);
                        let result = match self.run_end(endings[i].what, &single).await {
                            Ok(notes) => match notes.into_iter().next().flatten() {
                                Some(notes) => Ok(notes),
                                // Acked already: perhaps by the refused call, before it failed.
                                None => Err(match &refused {
                                    Error::Redis { what, source } => Error::Redis { what, source: source.clone() },
                                    _ => Error::Unsent,
                                }),
                            },
                            Err(e) => Err(e),
                        };
                        tell(i, result);
                    }
                }
            }
        }
    }

    /// A script call, through outages: the script is loaded when Redis does not have it
    /// (after a restart).
    async fn run_end(&self, what: &'static str, script: &redis::Cmd) -> Result<Vec<Option<String>>, Error> {
        let mut backoff = topology::Backoff::default();
        loop {
            let mut writer = self.writer.clone();
            match script.query_async::<Vec<Option<String>>>(&mut writer).await {
                Ok(notes) => return Ok(notes),
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    let _: String = self.write("SCRIPT LOAD", redis::cmd("SCRIPT").arg("LOAD").arg(END)).await?;
                }
                Err(e) if topology::is_outage(&e) => backoff.wait().await,
                Err(source) => return Err(Error::Redis { what, source }),
            }
        }
    }
}

/// Pending once, then ready: lets the rest of the event loop's turn run first.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let fields = [("requestStream".to_string(), "t:req:x".to_string())].into();
        Settings::from_hash(&crate::keys::WorkerKey::parse("t:1:h").unwrap(), &fields).unwrap()
    }

    fn ending(id: &str, reference: Option<&str>, dead: usize) -> Ending {
        Ending {
            what: "replying",
            stream: "t:req:x".into(),
            id: id.into(),
            reference: reference.map(str::to_string),
            reply: Some("{}".into()),
            trace: Some("{\"id\":1}".into()),
            dead: (dead > 0).then(|| (0..dead).map(|i| (format!("f{i}"), "v".into())).collect()),
        }
    }

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    #[test]
    fn each_ending_has_three_keys_and_its_arguments() {
        let s = settings();
        let endings = [ending("1-0", Some("a"), 0), ending("2-0", Some(""), 0), ending("3-0", None, 1)];
        let calls = calls(&s, &endings);
        assert_eq!(calls.len(), 1);
        let args = args(&calls[0].1);
        assert_eq!(args[2], "11", "two keys and three per ending");
        let keys = &args[3..14];
        assert_eq!(keys[..2], [s.response_stream.clone(), s.dead_stream.clone()]);
        assert_eq!(keys[2..5], ["t:req:x", "res:a", "req:a:h"], "a ref that takes the reply");
        assert_eq!(keys[5..8], ["t:req:x", "t:req:x", "t:req:x"], "an empty ref: nothing pushed, no trace");
        let argv = &args[14..];
        assert_eq!(argv[..2], ["worker".to_string(), s.response_maxlen.to_string()]);
        assert_eq!(
            argv[2..10],
            ["1-0", "a", "{}", &s.reply_ttl.to_string(), "{\"id\":1}", &s.trace_ttl.to_string(), "", "0"]
        );
        assert_eq!(
            argv[10..18],
            ["2-0", "", "{}", "0", "", &s.trace_ttl.to_string(), &RefProblem::Empty.to_string(), "0"]
        );
        assert_eq!(argv[18..], ["3-0", "", "{}", "0", "", &s.trace_ttl.to_string(), "", "2", "f0", "v"]);
    }

    #[test]
    fn calls_stay_within_lua_limits_and_keep_the_order() {
        let s = settings();
        let mut endings: Vec<Ending> = (0..150).map(|i| ending(&format!("{i}-0"), Some("r"), 0)).collect();
        endings.insert(70, ending("big-0", Some("r"), 3000));
        let calls = calls(&s, &endings);
        let ranges: Vec<Range<usize>> = calls.iter().map(|(range, _)| range.clone()).collect();
        assert_eq!(ranges, [0..64, 64..70, 70..71, 71..135, 135..151], "an ending over the limit goes alone");
        for (range, cmd) in &calls {
            let args = args(cmd);
            assert!(args.len() <= 3 + 4 + MOST_ARGS || range.len() == 1, "{range:?}");
            assert_eq!(args[2], (2 + 3 * range.len()).to_string());
            let ids: Vec<&String> = args.iter().filter(|a| a.ends_with("-0")).collect();
            let want: Vec<&String> = endings[range.clone()].iter().map(|e| &e.id).collect();
            assert_eq!(ids, want, "in order");
        }
    }

    use super::super::reply::RefProblem;
}
