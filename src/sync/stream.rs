//! The Redis side of a sync: the consumer group, reading (this consumer's own pending
//! entries first, then new ones, and others' entries left idle with XAUTOCLAIM), one XACK per
//! batch, dead letters, and trimming what every group has acked.

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
}

impl Group {
    /// The dead-letter stream: `<stream>:dead:x`.
    pub fn dead_letters(&self) -> String {
        crate::keys::dead_of(&self.stream)
    }

    /// Checks that the stream exists, and creates the group (from the stream's first entry)
    /// when it does not.
    pub async fn join(&self, conn: &mut Conn) -> anyhow::Result<()> {
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
    /// `stream` and `error`) and acks them, in one transaction.
    pub async fn dead_letter(&self, conn: &mut Conn, dead: &[(Entry, String)]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let dead_letters = self.dead_letters();
        for (entry, error) in dead {
            let cmd = pipe.cmd("XADD").arg(&dead_letters).arg("*");
            cmd.arg("id").arg(&entry.id).arg("stream").arg(&self.stream).arg("error").arg(error);
            for (name, value) in &entry.fields {
                cmd.arg(name).arg(value.as_slice());
            }
            cmd.ignore();
        }
        let ids: Vec<&str> = dead.iter().map(|(e, _)| e.id.as_str()).collect();
        pipe.cmd("XACK").arg(&self.stream).arg(&self.group).arg(&ids).ignore();
        pipe.query_async(conn).await
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

    /// XTRIM MINID to the first entry that some group has not acked yet.
    pub async fn trim_acked(&self, conn: &mut Conn) -> redis::RedisResult<u64> {
        let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(&self.stream).query_async(conn).await?;
        let mut floors = Vec::new();
        for group in groups {
            let fields = pairs(group);
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| text(v.clone()));
            let (Some(name), Some(last)) = (field("name"), field("last-delivered-id")) else { continue };
            let pending: (u64, Option<String>, Option<String>, Value) =
                redis::cmd("XPENDING").arg(&self.stream).arg(&name).query_async(conn).await?;
            floors.push(trim_floor(&last, pending.1.as_deref()));
        }
        match floors.into_iter().min_by_key(|id| id_key(id)) {
            Some(min_id) => redis::cmd("XTRIM").arg(&self.stream).arg("MINID").arg(min_id).query_async(conn).await,
            None => Ok(0),
        }
    }
}

/// The lowest id a group still needs: its first pending entry, else the one after the last
/// it was given.
pub fn trim_floor(last_delivered: &str, first_pending: Option<&str>) -> String {
    match first_pending {
        Some(id) => id.to_string(),
        None => {
            let (ms, seq) = id_key(last_delivered);
            match seq.checked_add(1) {
                Some(seq) => format!("{ms}-{seq}"),
                None => format!("{}-0", ms + 1),
            }
        }
    }
}

/// A stream id as numbers, for ordering.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

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
                    if let (Some(name), Value::BulkString(value)) = (text(name), value) {
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
    fn trim_floors() {
        assert_eq!(trim_floor("5-3", Some("2-0")), "2-0");
        assert_eq!(trim_floor("5-3", None), "5-4");
        assert_eq!(trim_floor(&format!("5-{}", u64::MAX), None), "6-0");
    }

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
        assert_eq!(read.entries[0].fields[1], ("data".to_string(), b"{}".to_vec()));
        assert_eq!(read.deleted, ["2-0"]);
    }
}
