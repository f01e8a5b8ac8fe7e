//! The Redis side of a sync: the consumer group, reading (this consumer's own pending
//! entries first, then new ones, and others' entries left idle with XAUTOCLAIM), one XACK per
//! batch, dead letters (each acked only once it is written, in one script), and trimming what
//! every group has acked (`crate::trim`, one script that fails closed).

use redis::{AsyncCommands, Value};

use super::row::Entry;
use crate::topology::Conn;

/// The stream, the group and this consumer.
#[derive(Debug, Clone)]
pub struct Group {
    pub stream: String,
    pub group: String,
    pub consumer: String,
}

/// Entries read, and the ids of entries the stream no longer has (to be acked).
#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<Entry>,
    pub deleted: Vec<String>,
    /// Read with `>`: entries never delivered to the group before (so, normally, in no table
    /// yet); not a re-read of pending entries or a claim.
    pub fresh: bool,
}

impl Group {
    /// The dead-letter stream: `<stream>:dead:x`.
    pub fn dead_letters(&self) -> String {
        crate::keys::dead_of(&self.stream)
    }

    /// Checks that the stream exists and that its dead-letter key is a stream or nothing, and
    /// creates the group (from the stream's first entry) when it does not exist.
    pub async fn join(&self, conn: &mut Conn) -> anyhow::Result<()> {
        let dead = self.dead_letters();
        let kind: String = redis::cmd("TYPE").arg(&dead).query_async(conn).await?;
        if !matches!(kind.as_str(), "stream" | "none") {
            anyhow::bail!(
                "{dead}, where {}'s dead letters go, is a Redis {kind}, not a stream: rename or delete it \
                 (nothing is synced until then, so that no refused entry is lost)",
                self.stream
            );
        }
        let kind: String = redis::cmd("TYPE").arg(&self.stream).query_async(conn).await?;
        match kind.as_str() {
            "stream" => {}
            "none" => anyhow::bail!(
                "stream {} does not exist in this Redis: check its name (and --redis), or XADD to it first",
                self.stream
            ),
            other => anyhow::bail!("{} is a Redis {other}, not a stream", self.stream),
        }
        let created: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(&self.stream).arg(&self.group).arg("0").query_async(conn).await;
        match created {
            Ok(()) => log::info!("{}: created the consumer group {}", self.stream, self.group),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// XREADGROUP: `>` for new entries (blocking up to `block_ms`), `0` for this consumer's
    /// own pending ones.
    pub async fn read(
        &self,
        conn: &mut Conn,
        from: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> redis::RedisResult<Read> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.group).arg(&self.consumer).arg("COUNT").arg(count);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(from);
        let reply: Value = cmd.query_async(conn).await?;
        let mut read = Read::default();
        // [[stream, [[id, [field, value, ...]], ...]]], or nil after BLOCK.
        if let Value::Array(streams) = reply {
            for stream in streams {
                if let Value::Array(mut pair) = stream {
                    if let Some(entries) = pair.pop() {
                        collect(entries, &mut read);
                    }
                }
            }
        }
        Ok(read)
    }

    /// XAUTOCLAIM: entries of any consumer idle for `min_idle_ms`, from `cursor`; returns the
    /// next cursor (`0-0` when the scan is done).
    pub async fn claim(
        &self,
        conn: &mut Conn,
        min_idle_ms: u64,
        cursor: &str,
        count: usize,
    ) -> redis::RedisResult<(String, Read)> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle_ms)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await?;
        let mut read = Read::default();
        let mut next = "0-0".to_string();
        if let Value::Array(parts) = reply {
            let mut parts = parts.into_iter();
            if let Some(cursor) = parts.next() {
                next = text(cursor).unwrap_or(next);
            }
            if let Some(entries) = parts.next() {
                collect(entries, &mut read);
            }
            if let Some(Value::Array(deleted)) = parts.next() {
                read.deleted.extend(deleted.into_iter().filter_map(text));
            }
        }
        Ok((next, read))
    }

    /// One XACK for a batch.
    pub async fn ack(&self, conn: &mut Conn, ids: &[String]) -> redis::RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        conn.xack::<_, _, _, ()>(&self.stream, &self.group, ids).await
    }

    /// Writes rejected entries to the dead-letter stream (each field as it was, with `id`,
    /// `stream` and `error`), acking each only once its dead letter is written, in one script:
    /// a dead-letter key of another type fails it before anything is written or acked.
    pub async fn dead_letter(&self, conn: &mut Conn, dead: &[(Entry, String)]) -> redis::RedisResult<()> {
        let mut script = redis::cmd("EVAL");
        script.arg(DEAD_LETTER).arg(2).arg(self.dead_letters()).arg(&self.stream).arg(&self.group);
        for (entry, error) in dead {
            script.arg(&entry.id).arg(entry.fields.len() + 3);
            script.arg("id").arg(&entry.id).arg("stream").arg(&self.stream).arg("error").arg(error);
            for (name, value) in &entry.fields {
                script.arg(name.as_slice()).arg(value.as_slice());
            }
        }
        script.query_async(conn).await
    }

    /// Entries not yet acked by this group: read but pending, and not yet read.
    pub async fn backlog(&self, conn: &mut Conn) -> redis::RedisResult<Option<u64>> {
        let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(&self.stream).query_async(conn).await?;
        for group in groups {
            let fields = pairs(group);
            if fields.iter().any(|(k, v)| k == "name" && text(v.clone()).as_deref() == Some(self.group.as_str())) {
                let number = |name: &str| {
                    fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| match v {
                        Value::Int(n) => Some(*n as u64),
                        _ => None,
                    })
                };
                // `lag` is nil when Redis cannot tell (after deletions); then pending alone.
                return Ok(Some(number("pending").unwrap_or(0) + number("lag").unwrap_or(0)));
            }
        }
        Ok(None)
    }

    /// Trims the entries every group has acked (`crate::trim`).
    pub async fn trim_acked(&self, conn: &mut Conn) -> redis::RedisResult<u64> {
        crate::trim::acked(conn, &self.stream).await
    }
}

/// KEYS: the dead-letter stream, the stream; ARGV: the group, then per entry its id, the
/// number of field pairs and the pairs. The dead-letter key's type is checked first, and each
/// entry is acked only after its XADD, so a failure leaves no entry acked without its letter.
/// An entry no longer pending (dead-lettered already, by a batch read twice) is skipped.
const DEAD_LETTER: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is a ' .. kind .. ', not a stream: no dead letter written')
end
local i = 2
while i <= #ARGV do
  local id, pairs = ARGV[i], tonumber(ARGV[i + 1])
  local add = {'XADD', KEYS[1], '*'}
  for j = i + 2, i + 1 + 2 * pairs do add[#add + 1] = ARGV[j] end
  if #redis.call('XPENDING', KEYS[2], ARGV[1], id, id, 1) > 0 then
    redis.call(unpack(add))
    redis.call('XACK', KEYS[2], ARGV[1], id)
  end
  i = i + 2 + 2 * pairs
end
return 'OK'
";

/// `[[id, [field, value, ...] | nil], ...]` into entries, and the ids whose entry is gone.
fn collect(entries: Value, read: &mut Read) {
    let Value::Array(entries) = entries else { return };
    for entry in entries {
        let Value::Array(mut parts) = entry else { continue };
        let fields = if parts.len() > 1 { parts.pop() } else { None };
        let Some(id) = parts.pop().and_then(text) else { continue };
        match fields {
            Some(Value::Array(values)) => {
                let mut fields = Vec::with_capacity(values.len() / 2);
                let mut values = values.into_iter();
                while let (Some(name), Some(value)) = (values.next(), values.next()) {
                    if let (Value::BulkString(name), Value::BulkString(value)) = (name, value) {
                        fields.push((name, value));
                    }
                }
                read.entries.push(Entry { id, fields });
            }
            _ => read.deleted.push(id),
        }
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A flat `[name, value, ...]` reply (or a RESP3 map) as pairs.
fn pairs(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                if let Some(k) = text(k) {
                    out.push((k, v));
                }
            }
            out
        }
        Value::Map(items) => items.into_iter().filter_map(|(k, v)| text(k).map(|k| (k, v))).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_with_deleted_entries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("ref"), bulk("r1"), bulk("data"), bulk("{}")])]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let mut read = Read::default();
        collect(reply, &mut read);
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.entries[0].fields[1], (b"data".to_vec(), b"{}".to_vec()));
        assert_eq!(read.deleted, ["2-0"]);
    }
}
