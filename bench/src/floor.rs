//! The Rust floors: the demo worker's loop (d) and the handler contract (f) with the `redis`
//! crate and no JavaScript, as `denorun-bench worker` and `denorun-bench handler-worker`.

use super::*;

/// The Rust forms' start: a connection to REDIS_URL (no response time-out, for BLOCK), and
/// the worker hash's request stream, response stream and consumer id.
pub(crate) async fn open_worker(
    key: &str,
) -> anyhow::Result<(redis::aio::MultiplexedConnection, String, String, String)> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    let hash: HashMap<String, String> = conn.hgetall(key).await?;
    let field = |name: &str| hash.get(name).cloned().with_context(|| format!("{key} has no {name}"));
    let (requests, responses, consumer) = (field("requestStream")?, field("responseStream")?, field("consumerId")?);
    Ok((conn, requests, responses, consumer))
}

/// Form (d): the demo worker's Redis traffic with the `redis` crate and no JavaScript.
pub(crate) async fn rust_worker(key: &str) -> anyhow::Result<()> {
    let (mut conn, requests, responses, consumer) = open_worker(key).await?;
    let pid = std::process::id().to_string();
    if conn.hexists::<_, _, bool>(key, "pid").await? {
        bail!("Expecting an empty 'pid' field: {key}");
    }
    let () = conn.hset(key, "pid", &pid).await?;
    println!("INFO Started");
    loop {
        let current: Option<String> = conn.hget(key, "pid").await?;
        if current.as_deref() != Some(pid.as_str()) {
            bail!("Aborting because 'pid' field removed/changed");
        }
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&["GROUP", "worker", &consumer, "COUNT", "1", "BLOCK", "2000", "STREAMS", &requests, ">"])
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let Some(entry) = reply.keys.first().and_then(|k| k.ids.first()) else { continue };
        let received = now_ms();
        let reference: String = entry.get("ref").context("request without ref")?;
        let res = serde_json::json!({
            "ref": reference, "source": "demo-worker", "type": "demo-worker-res", "code": 200,
            "worker": {"workerType": "demo-worker", "workerKey": key},
        })
        .to_string();
        let trace = serde_json::json!({"received": received, "completed": now_ms(), "res": res}).to_string();
        let res_key = format!("res:{reference}");
        let () = redis::pipe()
            .atomic()
            .lpush(&res_key, &res)
            .ignore()
            .expire(&res_key, 8)
            .ignore()
            .cmd("XADD")
            .arg(&responses)
            .arg(&["MAXLEN", "~", "1000", "*", "ref", &reference, "type", "demo-worker", "xid", &entry.id, "res", &res])
            .ignore()
            .cmd("HMSET")
            .arg(format!("req:{reference}:h"))
            .arg("demoWorkerTrace")
            .arg(&trace)
            .ignore()
            .query_async(&mut conn)
            .await?;
        println!("INFO Processed ref: {reference}");
    }
}

/// Form (f): the handler contract with the `redis` crate and no JavaScript: a batched
/// XREADGROUP, then per request one MULTI with the reply (LPUSH + EXPIRE, XADD to the response
/// stream) and its XACK.
pub(crate) async fn rust_handler_worker(key: &str) -> anyhow::Result<()> {
    let (mut conn, requests, responses, consumer) = open_worker(key).await?;
    let pid = std::process::id().to_string();
    let () = conn.hset(key, "pid", &pid).await?;
    loop {
        let current: Option<String> = conn.hget(key, "pid").await?;
        if current.as_deref() != Some(pid.as_str()) {
            return Ok(());
        }
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&[
                "GROUP",
                "worker",
                &consumer,
                "COUNT",
                HANDLER_CONCURRENCY,
                "BLOCK",
                "1000",
                "STREAMS",
                &requests,
                ">",
            ])
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for entry in reply.keys.iter().flat_map(|k| &k.ids) {
            let reference: String = entry.get("ref").context("request without ref")?;
            let res = serde_json::json!({
                "ref": reference, "source": "demo-worker", "type": "demo-worker-res", "code": 200,
                "worker": {"workerType": "demo-worker", "workerKey": key},
            })
            .to_string();
            let res_key = format!("res:{reference}");
            let () = redis::pipe()
                .atomic()
                .lpush(&res_key, &res)
                .ignore()
                .expire(&res_key, 10)
                .ignore()
                .cmd("XADD")
                .arg(&responses)
                .arg(&["MAXLEN", "~", "1000", "*", "ref", &reference, "xid", &entry.id, "res", &res])
                .ignore()
                .cmd("XACK")
                .arg(&requests)
                .arg("worker")
                .arg(&entry.id)
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
    }
}
