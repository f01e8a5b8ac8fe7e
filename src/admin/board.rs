//! Reading what supervisors publish, for `denorun status` and `denorun top`: each worker of a
//! type (from its queues) with its hash (pid, restarts, last exit) and its stats hash
//! (requests/s, handling times, heap), and the type's stream numbers. Any host's supervisors
//! publish there, so this works from anywhere that reaches the Redis.

use std::collections::HashMap;

use crate::keys::Keys;
use crate::topology::Conn;
use redis::AsyncCommands;

/// One worker's row.
#[derive(Debug, Clone, Default)]
pub struct WorkerRow {
    pub id: String,
    pub state: String,
    pub pid: String,
    pub supervisor: String,
    pub uptime_s: Option<u64>,
    pub rps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub heap_used: Option<u64>,
    pub heap_limit: Option<u64>,
    pub restarts: String,
    pub last_exit: String,
    pub last_error: String,
    /// The version its latest start runs (`runningVersion`), shortened ([`short_version`]).
    pub version: String,
}

/// A type's board.
#[derive(Debug, Clone, Default)]
pub struct Board {
    /// The type hash's supervisor fields (`pid`, `host`, `startedCount`), if one signed in.
    pub supervisor: Option<String>,
    /// The type hash (`${type}:h`), whole.
    pub type_hash: HashMap<String, String>,
    pub stream: HashMap<String, String>,
    pub rows: Vec<WorkerRow>,
    /// The type's latest rollout (`${type}:rollout:h`), if any.
    pub rollout: HashMap<String, String>,
}

pub async fn read(conn: &mut Conn, keys: &Keys) -> anyhow::Result<Board> {
    let type_hash: HashMap<String, String> = conn.hgetall(&keys.hash).await?;
    let supervisor = type_hash.get("pid").map(|pid| {
        format!(
            "pid {pid} on {}, started {} time(s)",
            type_hash.get("host").map(String::as_str).unwrap_or("?"),
            type_hash.get("startedCount").map(String::as_str).unwrap_or("?")
        )
    });
    let stream: HashMap<String, String> = conn.hgetall(keys.type_stats()).await?;
    let rollout: HashMap<String, String> = conn.hgetall(keys.rollout()).await?;
    let mut ids: Vec<(String, &str)> = Vec::new();
    for (queue, state) in [(&keys.started, "started"), (&keys.start, "queued"), (&keys.failed, "failed")] {
        let listed: Vec<String> = conn.lrange(queue, 0, -1).await?;
        for id in listed {
            if !ids.iter().any(|(known, _)| *known == id) {
                ids.push((id, state));
            }
        }
    }
    ids.sort_by(|(a, _), (b, _)| natural(a).cmp(&natural(b)));
    // Sent together (one round trip on one server); not a pipeline, which a Cluster refuses
    // across slots.
    let reads = ids.iter().map(|(id, _)| {
        let mut conn = conn.clone();
        let (hash, stats) = (keys.worker(id), keys.stats(id));
        async move {
            let hash: HashMap<String, String> = conn.hgetall(hash).await?;
            let stats: HashMap<String, String> = conn.hgetall(stats).await?;
            Ok::<_, redis::RedisError>((hash, stats))
        }
    });
    let hashes = futures::future::try_join_all(reads).await?;
    let rows = ids.into_iter().zip(hashes).map(|((id, queue), (hash, stats))| row(id, queue, &hash, &stats)).collect();
    Ok(Board { supervisor, type_hash, stream, rows, rollout })
}

/// Ids in number order where they are numbers (`2` before `10`).
pub fn natural(id: &str) -> (u64, &str) {
    (id.parse().unwrap_or(u64::MAX), id)
}

fn row(id: String, queue: &str, hash: &HashMap<String, String>, stats: &HashMap<String, String>) -> WorkerRow {
    let field = |name: &str| hash.get(name).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| "-".into());
    let number = |name: &str| stats.get(name).and_then(|v| v.parse::<f64>().ok());
    let state = match (queue, hash.contains_key("pid"), stats.get("state")) {
        ("started", _, Some(published)) => published.clone(),
        ("started", true, None) => "running".into(),
        ("started", false, None) => "restarting".into(),
        (other, ..) => other.into(),
    };
    let last_exit = match (hash.get("lastReason"), hash.get("lastExit")) {
        (Some(reason), Some(code)) => format!("{reason} ({code})"),
        (None, Some(code)) => code.clone(),
        _ => "-".into(),
    };
    WorkerRow {
        id,
        state,
        pid: field("pid"),
        supervisor: field("supervisor"),
        uptime_s: number("uptimeS").map(|v| v as u64),
        rps: number("rps"),
        p50_ms: number("p50Ms"),
        p99_ms: number("p99Ms"),
        heap_used: number("heapUsed").map(|v| v as u64),
        heap_limit: number("heapLimit").map(|v| v as u64),
        restarts: field("restarts"),
        last_exit,
        last_error: field("lastError"),
        version: hash.get("runningVersion").map_or_else(|| "-".into(), |label| short_version(label)),
    }
}

/// A version as a column shows it: a tag as it is, a local worker's path by its file name.
pub fn short_version(label: &str) -> String {
    match label.rsplit_once('/') {
        Some((_, file)) if !file.is_empty() => file.to_string(),
        _ => label.to_string(),
    }
}

/// The rollout's line: `rollout: running to v2, 1/3 done (by host:123)`, or none.
pub fn rollout_line(board: &Board) -> Option<String> {
    let get = |name: &str| board.rollout.get(name).map(String::as_str).unwrap_or("?");
    let state = board.rollout.get("state")?;
    let mut line = format!(
        "rollout: {state} to {}, {}/{} done (by {})",
        short_version(get("to")),
        get("done"),
        get("total"),
        get("by")
    );
    if let Some(error) = board.rollout.get("error") {
        line.push_str(&format!("; {error}"));
    }
    Some(line)
}

/// `used/limit` in MiB, or `-`.
pub fn heap(row: &WorkerRow) -> String {
    match (row.heap_used, row.heap_limit) {
        (Some(used), Some(limit)) if limit > 0 => format!("{}/{}M", used >> 20, limit >> 20),
        _ => "-".into(),
    }
}

pub fn millis(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

/// `1h02m`, `3m05s`, `42s`, or `-`.
pub fn uptime(seconds: Option<u64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        Some(s) if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        Some(s) => format!("{s}s"),
    }
}

/// The stream's line: `greeter:req:x  length 12  pending 3 (oldest 1.2s)  dead 0`.
pub fn stream_line(board: &Board) -> String {
    let get = |name: &str| board.stream.get(name).map(String::as_str).unwrap_or("?");
    if board.stream.is_empty() {
        return "stream: no numbers yet (a supervisor publishes them every 2 s)".into();
    }
    let oldest = board.stream.get("oldestPendingMs").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1000.0;
    format!(
        "stream {}: length {}  pending {} (oldest {oldest:.1}s)  dead {}",
        get("stream"),
        get("length"),
        get("pending"),
        get("dead")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(uptime(Some(3725)), "1h02m");
        assert_eq!(uptime(Some(185)), "3m05s");
        assert_eq!(uptime(None), "-");
        let row = WorkerRow { heap_used: Some(5 << 20), heap_limit: Some(512 << 20), ..Default::default() };
        assert_eq!(heap(&row), "5/512M");
        assert_eq!(millis(Some(0.0567)), "0.06");
        let mut ids = vec!["10", "2", "a", "1"];
        ids.sort_by_key(|id| natural(id));
        assert_eq!(ids, ["1", "2", "10", "a"]);
    }

    #[test]
    fn versions_and_the_rollout_line() {
        assert_eq!(short_version("v1.2.3"), "v1.2.3");
        assert_eq!(short_version("/srv/greeter/v2.ts"), "v2.ts");
        assert_eq!(rollout_line(&Board::default()), None);
        let rollout = [("state", "rolled back"), ("to", "/w/v2.ts"), ("done", "1"), ("total", "3"), ("by", "vm:7")];
        let mut board = Board {
            rollout: rollout.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        assert_eq!(rollout_line(&board).unwrap(), "rollout: rolled back to v2.ts, 1/3 done (by vm:7)");
        board.rollout.insert("error".into(), "greeter:1:h: it ended (error)".into());
        assert!(rollout_line(&board).unwrap().ends_with("; greeter:1:h: it ended (error)"));
    }
}
