//! Reads a 2021 worker lost, given again.
//!
//! A 2021 worker reads its stream with `XREADGROUP … STREAMS <stream> >` and never acks. An
//! entry Redis delivered whose reply never reached the worker (the connection went silent or
//! closed during the read) stays in the consumer's pending list, where `>` never returns it;
//! so does one whose worker ended before its reply was written.
//!
//! So each client keeps, per stream, group and consumer it reads with `>`, the entry it last
//! gave the worker, and marks it handled in `<stream>:seen:h` (field `["<group>","<consumer>"]`,
//! the entry's id; a script that only moves the mark forward):
//! - a read that gave one entry is marked by the first transaction (`tx().flush()`) the worker
//!   sends on that client after it: the mark goes inside its MULTI, so it commits with the
//!   reply or not at all (its reply is taken out of what the worker sees);
//! - otherwise it is marked before the worker's next read, pipelined with it.
//!
//! The first such read on a new client (a new process, or a client connected again after a
//! lost connection, which takes over what the lost one had given) first gives, one read at a
//! time, the consumer's pending entries after the mark that were delivered only once, then
//! reads `>` again. An entry delivered twice is not given a third time, so a request that
//! makes its worker crash is passed over after one retry, as `>` passed it over in 2021.
//!
//! What this guarantees: an entry delivered once to a consumer, after its mark, is given to a
//! worker of that consumer again; an entry at or before the mark is never given again. Not
//! covered: a consumer with no mark yet (its first run) replays nothing, so entries left
//! pending before denorun stay where they are; a worker that flushes another transaction
//! between a read and its reply marks the entry with that one; a connection that comes back
//! to life after its worker was replaced can still deliver a read nobody receives, behind a
//! newer mark. Reads of several streams, NOACK reads and reads inside a pipeline pass through.

use std::collections::HashMap;
use std::fmt;

use deno_core::serde_v8::StringOrBuffer;
use redis::Value;

/// An `XREADGROUP GROUP <group> <consumer> [COUNT n] [BLOCK ms] STREAMS <stream> >`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub count: Option<u64>,
}

/// What a client follows: one consumer's reads of one stream, whatever their COUNT.
type Follows = (String, String, String);

impl Read {
    /// The read `args` make, if it is one this module follows (see the module doc).
    pub fn parse(args: &[StringOrBuffer]) -> Option<Read> {
        Read::of(&args.iter().map(|arg| &arg[..]).collect::<Vec<_>>())
    }

    fn of(args: &[&[u8]]) -> Option<Read> {
        let word = |i: usize, w: &str| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(w.as_bytes()));
        if !word(0, "XREADGROUP") || !word(1, "GROUP") {
            return None;
        }
        let text = |i: usize| args.get(i).and_then(|a| std::str::from_utf8(a).ok()).map(str::to_owned);
        let (group, consumer) = (text(2)?, text(3)?);
        let mut count = None;
        let mut i = 4;
        while !word(i, "STREAMS") {
            if word(i, "COUNT") {
                count = Some(text(i + 1)?.parse().ok()?);
            } else if !word(i, "BLOCK") {
                return None; // NOACK, or an option this module does not know
            }
            i += 2;
        }
        let [stream, id] = args.get(i + 1..)? else { return None };
        (*id == b">").then_some(Read { stream: std::str::from_utf8(stream).ok()?.to_owned(), group, consumer, count })
    }

    /// The hash that holds the mark, and this read's field in it.
    pub fn mark_key(&self) -> (String, String) {
        (format!("{}:seen:h", self.stream), serde_json::json!([self.group, self.consumer]).to_string())
    }

    /// The script that moves the mark forward to `id` (never back).
    pub fn mark(&self, id: Id) -> Vec<Vec<u8>> {
        let (key, field) = self.mark_key();
        [b"EVAL".as_slice(), MARK.as_bytes(), b"1", key.as_bytes(), field.as_bytes(), id.to_string().as_bytes()]
            .iter()
            .map(|word| word.to_vec())
            .collect()
    }

    /// Up to 100 of the consumer's pending entries after `after`, with their delivery counts.
    pub fn pending_after(&self, after: Id) -> Vec<Vec<u8>> {
        let start = format!("({after}");
        ["XPENDING", &self.stream, &self.group, &start, "+", "100", &self.consumer]
            .iter()
            .map(|word| word.as_bytes().to_vec())
            .collect()
    }

    /// Takes `ids` over for the consumer again (their entries, without deleted ones).
    pub fn claim(&self, ids: &[Id]) -> Vec<Vec<u8>> {
        let mut words: Vec<Vec<u8>> = ["XCLAIM", &self.stream, &self.group, &self.consumer, "0"]
            .iter()
            .map(|word| word.as_bytes().to_vec())
            .collect();
        words.extend(ids.iter().map(|id| id.to_string().into_bytes()));
        words
    }

    fn follows(&self) -> Follows {
        (self.stream.clone(), self.group.clone(), self.consumer.clone())
    }
}

/// Sets a mark to ARGV[2] unless it is at or past it already (ids compared as numbers, digit
/// strings by length first).
const MARK: &str = r#"
local function before(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local cm, cs = string.match(current, '^(%d+)-(%d+)$')
  local nm, ns = string.match(ARGV[2], '^(%d+)-(%d+)$')
  if cm and nm and (before(nm, cm) or (nm == cm and not before(cs, ns))) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// A stream entry's id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(u64, u64);

impl Id {
    pub fn parse(text: &[u8]) -> Option<Id> {
        let (ms, seq) = std::str::from_utf8(text).ok()?.split_once('-')?;
        Some(Id(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Where a client stands with one consumer's reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Progress {
    /// Whether the next read first gives the consumer's lost entries.
    resume: bool,
    /// The last entry given and not marked yet, and whether its read gave it alone.
    given: Option<(Id, bool)>,
}

/// One client's reads; a consumer absent here has not been resumed on this client yet.
#[derive(Default)]
pub struct Reads(HashMap<Follows, Progress>);

impl Reads {
    /// Whether this read should resume first; if so, it is the one that does (a read beside
    /// it on the same client does not resume too).
    pub fn begin_resume(&mut self, read: &Read) -> bool {
        let progress = self.0.entry(read.follows()).or_insert(Progress { resume: true, given: None });
        std::mem::take(&mut progress.resume)
    }

    /// The resume gave `entries`: the next read resumes again, until one finds nothing.
    pub fn resumed(&mut self, read: &Read, entries: &[Id]) {
        if let Some(last) = entries.iter().max() {
            let progress = self.0.entry(read.follows()).or_default();
            *progress = Progress { resume: true, given: Some((*last, entries.len() == 1)) };
        }
    }

    /// The id the next read should mark first, if any.
    pub fn unmarked(&self, read: &Read) -> Option<Id> {
        self.0.get(&read.follows()).and_then(|progress| progress.given).map(|(id, _)| id)
    }

    /// A read came back with `entries`; a mark sent with it committed.
    pub fn gave(&mut self, read: &Read, entries: &[Id]) {
        let progress = self.0.entry(read.follows()).or_default();
        progress.given = entries.iter().max().map(|last| (*last, entries.len() == 1));
    }

    /// The given entries that a transaction marks: those a read gave alone.
    pub fn for_transaction(&self) -> Vec<(Read, Id)> {
        let single = |((stream, group, consumer), progress): (&Follows, &Progress)| match progress.given {
            Some((id, true)) => {
                let read =
                    Read { stream: stream.clone(), group: group.clone(), consumer: consumer.clone(), count: None };
                Some((read, id))
            }
            _ => None,
        };
        self.0.iter().filter_map(single).collect()
    }

    /// A transaction carrying `marks`, or a mark sent alone, committed.
    pub fn committed(&mut self, marks: &[(Read, Id)]) {
        for (read, id) in marks {
            if let Some(progress) = self.0.get_mut(&read.follows()) {
                if progress.given.map(|(given, _)| given) == Some(*id) {
                    progress.given = None;
                }
            }
        }
    }

    /// The connection was lost: every read resumes first; what was given stays given, for
    /// the client that takes these reads over.
    pub fn lost(&mut self) {
        for progress in self.0.values_mut() {
            progress.resume = true;
        }
    }
}

/// The entries of an XREADGROUP reply of one stream (RESP2 shape), if it has that shape.
pub fn entries_mut(reply: &mut Value) -> Option<&mut Vec<Value>> {
    let Value::Array(streams) = reply else { return None };
    let Some(Value::Array(stream)) = streams.first_mut() else { return None };
    match stream.get_mut(1) {
        Some(Value::Array(entries)) => Some(entries),
        _ => None,
    }
}

/// The id of one entry of such a reply.
pub fn entry_id(entry: &Value) -> Option<Id> {
    match entry {
        Value::Array(parts) => match parts.first() {
            Some(Value::BulkString(id)) => Id::parse(id),
            _ => None,
        },
        _ => None,
    }
}

/// The ids and delivery counts of an `XPENDING` (extended form) reply.
pub fn pending(reply: &Value) -> Vec<(Id, i64)> {
    let Value::Array(rows) = reply else { return Vec::new() };
    let row = |row: &Value| match row {
        Value::Array(fields) => match (fields.first(), fields.get(3)) {
            (Some(Value::BulkString(id)), Some(Value::Int(deliveries))) => Some((Id::parse(id)?, *deliveries)),
            _ => None,
        },
        _ => None,
    };
    rows.iter().filter_map(row).collect()
}

/// An XREADGROUP reply (RESP2 shape) of `entries` read from `stream`.
pub fn read_reply(stream: &str, entries: Vec<Value>) -> Value {
    Value::Array(vec![Value::Array(vec![Value::BulkString(stream.as_bytes().to_vec()), Value::Array(entries)])])
}

/// Whether an entry of such a reply was deleted from the stream (its fields are nil).
pub fn deleted(entry: &Value) -> bool {
    matches!(entry, Value::Array(parts) if matches!(parts.get(1), Some(Value::Nil) | None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(args: &str) -> Option<Read> {
        Read::of(&args.split(' ').map(str::as_bytes).collect::<Vec<_>>())
    }

    #[test]
    fn the_2021_read_is_followed_and_others_pass_through() {
        let demo = read("XREADGROUP GROUP worker 1 COUNT 1 BLOCK 2000 STREAMS demo-worker:req:x >").unwrap();
        assert_eq!(
            demo,
            Read { stream: "demo-worker:req:x".into(), group: "worker".into(), consumer: "1".into(), count: Some(1) }
        );
        assert_eq!(read("xreadgroup group g c streams s >").unwrap().count, None);
        for other in [
            "XREADGROUP GROUP g c STREAMS s 0",
            "XREADGROUP GROUP g c NOACK STREAMS s >",
            "XREADGROUP GROUP g c STREAMS s t > >",
            "XREADGROUP GROUP g c COUNT x STREAMS s >",
            "XREADGROUP GROUP g c COUNT 1",
            "XREAD COUNT 1 STREAMS s $",
            "XREADGROUP GROUP g",
        ] {
            assert_eq!(read(other), None, "{other}");
        }
    }

    #[test]
    fn the_mark_field_cannot_mix_up_groups_and_consumers() {
        let a = read("XREADGROUP GROUP a:b c STREAMS s >").unwrap();
        let b = read("XREADGROUP GROUP a b:c STREAMS s >").unwrap();
        assert_ne!(a.mark_key(), b.mark_key());
        assert_eq!(a.mark_key(), ("s:seen:h".into(), r#"["a:b","c"]"#.into()));
    }

    #[test]
    fn ids_order_as_redis_orders_them() {
        assert!(Id::parse(b"10-0").unwrap() > Id::parse(b"9-5").unwrap());
        assert!(Id::parse(b"10-10").unwrap() > Id::parse(b"10-9").unwrap());
        assert_eq!(Id::parse(b"1700000000000-3").unwrap().to_string(), "1700000000000-3");
        assert_eq!(Id::parse(b">"), None);
    }

    #[test]
    fn a_transaction_marks_a_single_entry_and_a_read_marks_the_rest() {
        let r = read("XREADGROUP GROUP g c COUNT 5 STREAMS s >").unwrap();
        let mut reads = Reads::default();
        assert!(reads.begin_resume(&r), "a new client resumes first");
        assert!(!reads.begin_resume(&r), "once");
        reads.gave(&r, &[]);
        assert_eq!(reads.unmarked(&r), None);

        let (one, two) = (Id(5, 0), Id(6, 0));
        reads.gave(&r, &[two, one]);
        assert_eq!(reads.unmarked(&r), Some(two));
        assert!(reads.for_transaction().is_empty(), "several entries: only the next read marks");

        reads.gave(&r, &[one]);
        let marks = reads.for_transaction();
        assert_eq!(marks.len(), 1);
        assert_eq!((&marks[0].0.stream, &marks[0].0.consumer, marks[0].1), (&r.stream, &r.consumer, one));
        reads.committed(&marks);
        assert_eq!(reads.unmarked(&r), None);
        assert!(reads.for_transaction().is_empty(), "one transaction marks a read");
    }

    #[test]
    fn a_lost_connection_resumes_and_keeps_what_it_gave_whatever_the_count() {
        let r = read("XREADGROUP GROUP g c COUNT 1 STREAMS s >").unwrap();
        let other_count = read("XREADGROUP GROUP g c COUNT 7 BLOCK 5 STREAMS s >").unwrap();
        let mut reads = Reads::default();
        assert!(reads.begin_resume(&r));
        reads.gave(&r, &[Id(9, 0)]);
        assert!(!reads.begin_resume(&other_count), "the same consumer, whatever its COUNT");
        reads.lost();
        assert!(reads.begin_resume(&r));
        assert_eq!(reads.unmarked(&r), Some(Id(9, 0)), "still to be marked by the reply's transaction");
    }

    #[test]
    fn a_resume_goes_on_until_it_finds_nothing() {
        let r = read("XREADGROUP GROUP g c COUNT 1 STREAMS s >").unwrap();
        let mut reads = Reads::default();
        assert!(reads.begin_resume(&r));
        reads.resumed(&r, &[Id(3, 0)]);
        assert_eq!(reads.unmarked(&r), Some(Id(3, 0)));
        assert!(reads.begin_resume(&r), "the next read looks for more");
        reads.resumed(&r, &[]);
        assert!(!reads.begin_resume(&r));
    }

    #[test]
    fn pending_rows_give_ids_and_delivery_counts() {
        let row = |id: &str, n: i64| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::BulkString(b"c".to_vec()),
                Value::Int(10),
                Value::Int(n),
            ])
        };
        let reply = Value::Array(vec![row("1-0", 1), row("2-5", 3), Value::Nil]);
        assert_eq!(pending(&reply), vec![(Id(1, 0), 1), (Id(2, 5), 3)]);
        assert_eq!(pending(&Value::Nil), vec![]);
        let mut built = read_reply("s", vec![row("1-0", 1)]);
        assert_eq!(entries_mut(&mut built).map(|e| e.len()), Some(1));
    }

    #[test]
    fn a_deleted_entry_is_told_apart() {
        let entry = |fields: Value| Value::Array(vec![Value::BulkString(b"1-0".to_vec()), fields]);
        assert!(deleted(&entry(Value::Nil)));
        assert!(!deleted(&entry(Value::Array(vec![]))));
        assert_eq!(entry_id(&entry(Value::Nil)), Some(Id(1, 0)));
        let mut reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![entry(Value::Nil)]),
        ])]);
        assert_eq!(entries_mut(&mut reply).map(|e| e.len()), Some(1));
        assert_eq!(entries_mut(&mut Value::Nil), None);
    }
}
