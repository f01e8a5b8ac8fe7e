//! A handler worker's settings: the fields of its hash (over its type's) that the delivery
//! loop reads, with their defaults, and the retry schedule they make.

use std::collections::HashMap;
use std::time::Duration;

use crate::fields::{BadNumber, Fields};
use crate::keys::WorkerKey;

/// A handler worker's settings: its hash's fields, with defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub key: String,
    /// The request streams: `requestStream`, or the `streamShards` shards.
    pub streams: Vec<String>,
    pub consumer: String,
    pub response_stream: String,
    pub response_maxlen: u64,
    pub dead_stream: String,
    pub concurrency: u32,
    pub request_limit: u64,
    pub reply_ttl: u64,
    pub trace: bool,
    pub trace_ttl: u64,
    pub max_attempts: u32,
    pub retry_delay: Duration,
    pub claim_idle: Duration,
    pub request_timeout: Duration,
    /// `WAIT <replica_acks> <replica_ack_timeout>` after each reply and ack (0: none).
    pub replica_acks: u64,
    pub replica_ack_timeout: Duration,
    /// What the request streams keep.
    pub trim: Trim,
}

/// What a handler type's request streams keep, trimmed by its workers about once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// What some group has not read or acked yet (the default): nothing unanswered is lost.
    Acked,
    /// About the newest N entries (`requestStreamMaxlen`), read or not: a request older than
    /// that is dropped unanswered.
    MaxLen(u64),
    /// Everything (`trimAcked` `0`): the stream grows until someone trims it.
    Off,
}

impl Trim {
    /// From `trimAcked` (`0` or `false`: off) and `requestStreamMaxlen` (which wins).
    pub fn of(trim_acked: Option<&str>, maxlen: Option<u64>) -> Trim {
        match (maxlen, trim_acked) {
            (Some(n), _) => Trim::MaxLen(n),
            (None, Some("0" | "false" | "no" | "off")) => Trim::Off,
            _ => Trim::Acked,
        }
    }
}

impl Settings {
    /// Reads the settings from a worker hash `${type}:${id}:h`.
    pub fn from_hash(key: &WorkerKey, hash: &HashMap<String, String>) -> Result<Settings, BadNumber> {
        let (fields, keys) = (Fields::new(key, hash), key.keys());
        let text = |name: &str, default: String| fields.text(name).map_or(default, str::to_string);
        let number = |name: &str, default: u64, least: u64| -> Result<u64, BadNumber> {
            Ok(fields.number(name, least)?.unwrap_or(default))
        };
        Ok(Settings {
            key: key.to_string(),
            streams: keys.request_streams(&fields)?,
            consumer: text("consumerId", key.id().to_string()),
            response_stream: keys.responses(&fields),
            response_maxlen: number("responseStreamMaxlen", 1000, 0)?,
            dead_stream: keys.dead_stream(),
            concurrency: number("concurrency", 1, 1)?.min(1024) as u32,
            request_limit: number("requestLimit", 0, 0)?,
            reply_ttl: number("replyTtl", 10, 1)?,
            trace: fields.text("trace").is_some_and(|v| v == "1" || v == "true"),
            trace_ttl: number("traceTtl", 3600, 1)?,
            max_attempts: number("maxAttempts", 5, 1)?.min(u32::MAX as u64) as u32,
            retry_delay: Duration::from_millis(number("retryDelayMs", 1000, 0)?),
            claim_idle: Duration::from_millis(number("claimIdleMs", 30_000, 1)?),
            request_timeout: Duration::from_millis(number("requestTimeoutMs", 30_000, 1)?),
            replica_acks: number("replicaAcks", 0, 0)?,
            replica_ack_timeout: Duration::from_millis(number("replicaAckTimeoutMs", 1000, 1)?),
            trim: Trim::of(fields.text("trimAcked"), fields.number("requestStreamMaxlen", 1)?),
        })
    }
}

/// The delay before attempt `attempt + 1`: `retry_delay * 2^(attempt - 1)`, at most a minute
/// and at most half of `claim_idle` (so that no XAUTOCLAIM takes an entry waiting for its retry).
pub fn retry_delay(settings: &Settings, attempt: u32) -> Duration {
    let cap = Duration::from_secs(60).min(settings.claim_idle / 2);
    settings.retry_delay.saturating_mul(1 << (attempt.max(1) - 1).min(16)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str) -> WorkerKey {
        WorkerKey::parse(key).unwrap()
    }

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_come_from_the_key() {
        let s = Settings::from_hash(&key("greeter:7:h"), &hash(&[])).unwrap();
        assert_eq!((s.streams.as_slice(), s.consumer.as_str()), (&["greeter:req:x".to_string()][..], "7"));
        assert_eq!((s.response_stream.as_str(), s.dead_stream.as_str()), ("greeter:res:x", "greeter:dead:x"));
        assert_eq!((s.concurrency, s.max_attempts, s.reply_ttl, s.request_limit), (1, 5, 10, 0));
        assert_eq!((s.claim_idle, s.retry_delay), (Duration::from_secs(30), Duration::from_secs(1)));
        assert!(!s.trace);
        assert_eq!((s.replica_acks, s.replica_ack_timeout), (0, Duration::from_secs(1)));
    }

    #[test]
    fn fields_override_and_bad_numbers_are_named() {
        let s = Settings::from_hash(
            &key("g:1:h"),
            &hash(&[
                ("requestStream", "in"),
                ("consumerId", "c"),
                ("concurrency", "8"),
                ("trace", "1"),
                ("maxAttempts", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (s.streams[0].as_str(), s.consumer.as_str(), s.concurrency, s.trace, s.max_attempts),
            ("in", "c", 8, true, 2)
        );
        let e = Settings::from_hash(&key("g:1:h"), &hash(&[("concurrency", "many")])).unwrap_err().to_string();
        assert!(e.contains("concurrency 'many'"), "{e}");
        // One rule for every number of a hash (`fields::Fields`): 0 only where it means
        // something (no limit, no replicas).
        let e = Settings::from_hash(&key("g:1:h"), &hash(&[("concurrency", "0")])).unwrap_err().to_string();
        assert!(e.contains("concurrency '0' must be a whole number of at least 1"), "{e}");
        let s = Settings::from_hash(&key("g:1:h"), &hash(&[("requestLimit", "0"), ("replicaAcks", " 0 ")])).unwrap();
        assert_eq!((s.request_limit, s.replica_acks), (0, 0));
    }

    #[test]
    fn request_streams_keep_what_is_unacked_unless_told_otherwise() {
        assert_eq!(Trim::of(None, None), Trim::Acked);
        assert_eq!(Trim::of(Some("1"), None), Trim::Acked);
        assert_eq!(Trim::of(Some("0"), None), Trim::Off);
        assert_eq!(Trim::of(Some("false"), Some(500)), Trim::MaxLen(500));
        let s = Settings::from_hash(&key("g:1:h"), &hash(&[])).unwrap();
        assert_eq!(s.trim, Trim::Acked);
        let s = Settings::from_hash(&key("g:1:h"), &hash(&[("requestStreamMaxlen", "100")])).unwrap();
        assert_eq!(s.trim, Trim::MaxLen(100));
        let e = Settings::from_hash(&key("g:1:h"), &hash(&[("requestStreamMaxlen", "0")])).unwrap_err().to_string();
        assert!(e.contains("requestStreamMaxlen"), "{e}");
    }

    #[test]
    fn shards_come_from_the_types_keys() {
        let s = Settings::from_hash(&key("g:1:h"), &hash(&[("streamShards", "6")])).unwrap();
        assert_eq!(s.streams, key("g:1:h").keys().type_streams(&hash(&[("streamShards", "6")])).unwrap());
        assert_eq!(s.streams.len(), 6);
    }

    #[test]
    fn retries_back_off_doubling_up_to_a_minute() {
        let s = Settings::from_hash(&key("g:1:h"), &hash(&[("retryDelayMs", "100")])).unwrap();
        let delays: Vec<u128> = (1..=12).map(|a| retry_delay(&s, a).as_millis()).collect();
        assert_eq!(&delays[..4], &[100, 200, 400, 800]);
        assert_eq!(delays[11], 15_000, "half of claimIdleMs");
        let s =
            Settings::from_hash(&key("g:1:h"), &hash(&[("retryDelayMs", "100"), ("claimIdleMs", "600000")])).unwrap();
        assert_eq!(retry_delay(&s, 12).as_millis(), 60_000);
    }
}
