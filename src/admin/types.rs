//! The worker types a Redis holds, for `denorun console` without a type: every type with a
//! request stream under its own name, `${type}:req:x` or a shard `${type}:req:{t}:x`, that has
//! the workers' consumer group (`worker`) and whose `${type}:h`, if any, is a hash. Found with
//! one pass of SCAN over the keyspace (streams only), whose time grows with the number of
//! keys. A type whose workers all name another `requestStream`, or that has no stream yet, is
//! not found, and a stream another type names as its `requestStream` shows under its own
//! name: name types on the command line for those.

use std::collections::{BTreeSet, HashMap};

use crate::keys::{Keys, GROUP};
use crate::topology::Conn;

/// How many keys one SCAN step looks at.
const SCAN_COUNT: usize = 1000;

/// The type whose request stream (or shard of it) `key` is, if it is one.
pub fn type_of_stream(key: &str) -> Option<&str> {
    let worker_type = match key.strip_suffix(":req:x") {
        Some(worker_type) => worker_type,
        None => {
            let (worker_type, shard) = key.strip_suffix(":x")?.rsplit_once(":req:{")?;
            let tag = shard.strip_suffix('}')?;
            if tag.is_empty() || tag.contains(['{', '}']) {
                return None;
            }
            worker_type
        }
    };
    Keys::of(worker_type).is_ok().then_some(worker_type)
}

/// Every type with a request stream in this Redis, in name order (one SCAN of the keyspace,
/// streams only). Not on a Cluster, whose keys are spread over its masters: there the types
/// are named on the command line.
pub async fn discover(conn: &mut Conn, cluster: bool) -> anyhow::Result<Vec<String>> {
    if cluster {
        anyhow::bail!("on a Redis Cluster, name the worker types to show: denorun console <type>...");
    }
    let mut candidates = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("*:req:*x")
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .arg("TYPE")
            .arg("stream")
            .query_async(conn)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "looking for worker types with SCAN: {e}; name the types to show: denorun console <type>..."
                )
            })?;
        let names = keys.iter().filter_map(|key| std::str::from_utf8(key).ok());
        candidates.extend(names.filter_map(|key| Some((type_of_stream(key)?.to_string(), key.to_string()))));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut types = BTreeSet::new();
    for (worker_type, stream) in candidates {
        if !types.contains(&worker_type) && is_workers(conn, &worker_type, &stream).await? {
            types.insert(worker_type);
        }
    }
    Ok(types.into_iter().collect())
}

/// Whether `stream` is read by denorun's workers (it has their group) and the type's hash, if
/// any, is a hash: another application's `x:req:x` is not taken for a type.
async fn is_workers(conn: &mut Conn, worker_type: &str, stream: &str) -> anyhow::Result<bool> {
    let groups: Vec<HashMap<String, redis::Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let has_group = groups
        .iter()
        .any(|group| matches!(group.get("name"), Some(redis::Value::BulkString(name)) if name == GROUP.as_bytes()));
    if !has_group {
        return Ok(false);
    }
    let kind: String = redis::cmd("TYPE").arg(format!("{worker_type}:h")).query_async(conn).await?;
    Ok(kind == "none" || kind == "hash")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_is_found_by_its_request_stream_or_a_shard_of_it() {
        assert_eq!(type_of_stream("demo-worker:req:x"), Some("demo-worker"));
        assert_eq!(type_of_stream("greeter:req:{a1}:x"), Some("greeter"));
        for other in [
            "greeter:res:x",
            "greeter:dead:x",
            "greeter:req:x:dead:x",
            "req:x",
            ":req:x",
            "greeter:req:{}:x",
            "greeter:req:{a}b}:x",
            "greeter:req:a1:x",
            "Bad Type:req:x",
        ] {
            assert_eq!(type_of_stream(other), None, "{other}");
        }
    }
}
