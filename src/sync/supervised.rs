//! A sync instance that `denorun supervise` runs like a worker: a hash `${type}:${id}:h` (or
//! its type's `${type}:h`) with `syncStream` names one. It gets a thread of its own, writes
//! its `pid` and ends after the batch in hand when that field changes (a drain), and its end
//! reaches the supervisor as an [`Exit`], so restarts, backoff, heartbeats and recovery are
//! the workers' own. The password is never in the hash in clear: it is `pgPassword` in the
//! hash's `encryptedJson` (sealed with the secret line's key, as `denorun encrypt --hset`
//! writes it), else the supervisor's `PGPASSWORD`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use zeroize::Zeroizing;

use super::{pg, Options, Stop};
use crate::cipher::cbc_pkcs7;
use crate::config::RedisTarget;
use crate::fields::{BadNumber, Fields};
use crate::keys::WorkerKey;
use crate::metrics::WorkerStats;
use crate::worker::{Exit, Reason, StopHandle};

/// The instance's options: `syncStream`, `syncTo`, `syncTable`, `syncGroup`, `syncBatch`, `syncWriters`,
/// `syncFlushMs`, `claimIdleMs`, `syncTrimAcked`; its consumer name is `<type>:<id>`.
pub fn options(key: &WorkerKey, fields: &HashMap<String, String>) -> anyhow::Result<Options> {
    let fields = Fields::new(key, fields);
    let field = |name: &str| fields.text(name);
    let number = |name: &str, default: u64, least: u64| -> Result<u64, BadNumber> {
        Ok(fields.number(name, least)?.unwrap_or(default))
    };
    let bounded = |name: &str, default: u64, most: usize| -> Result<u64, BadNumber> {
        Ok(fields.number_in(name, 1..=most as u64)?.unwrap_or(default))
    };
    let to = field("syncTo").unwrap_or("postgres:///").to_string();
    if has_password(&to) {
        anyhow::bail!(
            "{key}: syncTo holds a password in clear; remove it, and put pgPassword in the hash's \
             encryptedJson (denorun encrypt --hset {key}) or PGPASSWORD in the supervisor's environment"
        );
    }
    Ok(Options {
        stream: field("syncStream").context("no syncStream")?.to_string(),
        to,
        table: field("syncTable").map(str::to_string),
        group: field("syncGroup").unwrap_or("sync").to_string(),
        consumer: key.name().to_string(),
        batch: bounded("syncBatch", 2000, super::MOST_BATCH)? as usize,
        writers: bounded("syncWriters", 2, super::MOST_WRITERS)? as usize,
        flush: Duration::from_millis(number("syncFlushMs", 50, 0)?),
        claim_idle: Duration::from_millis(number("claimIdleMs", 30_000, 1)?),
        trim_acked: matches!(field("syncTrimAcked"), Some("1" | "true" | "yes")),
        metrics: None,
        allow_remote_metrics: false,
    })
}

/// Whether a libpq URL or `key=value` string carries a password.
fn has_password(to: &str) -> bool {
    if to.contains("password=") {
        return true;
    }
    let Some((_, rest)) = to.split_once("://") else { return false };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// `pgPassword` from the hash's `encryptedJson`, opened with the secret line's key.
fn password(key: &str, fields: &HashMap<String, String>, secret: &str) -> anyhow::Result<Option<Zeroizing<String>>> {
    let (Some(iv), Some(sealed)) = (fields.get("encryptedIv"), fields.get("encryptedJson")) else {
        return Ok(None);
    };
    let aes = crate::secret::key(secret)?;
    let iv = hex::decode(iv).with_context(|| format!("{key}: encryptedIv is not hex"))?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .with_context(|| format!("{key}: encryptedJson is not base64"))?;
    let plain = cbc_pkcs7(false, &aes, &iv, &sealed)
        .with_context(|| format!("{key}: encryptedJson does not open with the key on stdin"))?;
    let plain = Zeroizing::new(plain);
    let config: serde_json::Value = serde_json::from_slice(&plain)
        .map_err(|_| anyhow::anyhow!("{key}: encryptedJson does not open with the key on stdin"))?;
    Ok(config.get("pgPassword").and_then(|p| p.as_str()).map(|p| Zeroizing::new(p.to_string())))
}

/// Starts the instance on a thread of its own; `done` hears how it ended.
pub fn spawn(
    key: &WorkerKey,
    fields: &HashMap<String, String>,
    secret: &str,
    redis: &RedisTarget,
    stats: Arc<WorkerStats>,
    stop: StopHandle,
    done: impl FnOnce(Exit) + Send + 'static,
) -> anyhow::Result<()> {
    let options = options(key, fields)?;
    let sealed = password(key, fields, secret)?;
    let target = pg::Target::parse(&options.to, |name| match (name, &sealed) {
        ("PGPASSWORD", Some(password)) => Some(password.to_string()),
        _ => std::env::var(name).ok(),
    })?;
    let (key, redis) = (key.to_string(), redis.clone());
    std::thread::Builder::new().name(key.clone()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let ended = runtime.map_err(anyhow::Error::from).and_then(|runtime| {
            runtime.block_on(async {
                // A changed pid is a drain: after the batches in hand; the supervisor's stop
                // (a drain's time-out, a second signal) is at once.
                let (tell, stops) = tokio::sync::mpsc::unbounded_channel();
                let watch = async {
                    tokio::select! {
                        _ = stop.requested() => {},
                        _ = pid_changes(&redis, &key) => {
                            log::info!("{key}: its pid changed; stopping after the batch in hand");
                            let _ = tell.send(Stop::AfterBatches);
                            stop.requested().await;
                        }
                    }
                    let _ = tell.send(Stop::Now);
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    ended = super::serve(redis.clone(), target, options, Some(stats), stops) => ended,
                    () = watch => unreachable!("the watch never ends"),
                }
            })
        });
        done(Exit::new(match ended {
            Ok(super::Ended::Stopped) => Reason::Exited(0),
            Ok(super::Ended::Refused(e)) => Reason::StartFailed(format!("{e:#}")),
            Err(e) => Reason::Uncaught(format!("{e:#}")),
        }));
    })?;
    Ok(())
}

/// Writes this process's pid into the hash, then returns once the field holds anything else.
async fn pid_changes(redis: &RedisTarget, key: &str) {
    let pid = std::process::id().to_string();
    let mut conn = loop {
        match redis.connect().await {
            Ok(mut conn) => {
                if redis::cmd("HSET").arg(key).arg("pid").arg(&pid).query_async::<()>(&mut conn).await.is_ok() {
                    break conn;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now: redis::RedisResult<Option<String>> =
            redis::cmd("HGET").arg(key).arg("pid").query_async(&mut conn).await;
        if let Ok(now) = now {
            if now.as_deref() != Some(pid.as_str()) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_from_the_hash() {
        let o = options(
            &WorkerKey::parse("orders-sync:1:h").unwrap(),
            &fields(&[("syncStream", "orders:x"), ("syncTo", "postgres://app@db/orders"), ("syncBatch", "500")]),
        )
        .unwrap();
        assert_eq!((o.stream.as_str(), o.consumer.as_str(), o.batch), ("orders:x", "orders-sync:1", 500));
        assert_eq!(o.group, "sync");
        let t = WorkerKey::parse("t:1:h").unwrap();
        let e = options(&t, &fields(&[("syncStream", "s"), ("syncBatch", "many")])).unwrap_err().to_string();
        assert!(e.contains("syncBatch 'many'"), "{e}");
        let e = options(&t, &fields(&[("syncStream", "s"), ("syncWriters", "0")])).unwrap_err().to_string();
        assert!(e.contains("syncWriters '0' must be a whole number from 1 to 64"), "{e}");
        let e = options(&t, &fields(&[("syncStream", "s"), ("syncBatch", "100001")])).unwrap_err().to_string();
        assert!(e.contains("syncBatch '100001' must be a whole number from 1 to 100000"), "{e}");
    }

    #[test]
    fn a_password_in_clear_is_refused() {
        let e = options(
            &WorkerKey::parse("t:1:h").unwrap(),
            &fields(&[("syncStream", "s"), ("syncTo", "postgres://app:pw@db/x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("password in clear") && !e.contains("pw@"), "{e}");
        assert!(has_password("host=db password=x") && !has_password("postgres://app@db:5432/x"));
    }
}
