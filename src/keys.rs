//! Every Redis key denorun names, made in one place: a worker key (`${type}:${id}:h`, parsed
//! once into [`WorkerKey`]), the keys of a worker type ([`Keys`]: its hash, id queues, stats,
//! and its streams, sharded or not), and the keys of one request (its trace and reply list).

use std::collections::HashMap;
use std::fmt;

use crate::fields::{BadNumber, Fields};
use crate::shards;

/// A key or a type that does not name what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("worker key '{0}' must name a hash ending in ':h', e.g. demo-worker:1:h")]
    NotAHash(String),
    #[error("worker key '{0}' must look like <type>:<id>:h with a type and an id, e.g. demo-worker:1:h")]
    NoId(String),
    #[error("worker type '{0}' must match ^[a-z][-a-z0-9_]*$, e.g. demo-worker")]
    BadType(String),
}

/// The consumer group every handler worker reads its request streams in, as in the 2021 design.
pub const GROUP: &str = "worker";

/// The most shards a type's requests may be spread over.
pub const MAX_SHARDS: u64 = 1024;

/// How many exits [`Keys::exits`] keeps per worker.
pub const EXITS_KEPT: usize = 20;

/// A worker's key, `${type}:${id}:h`: the type is its first part, the id the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerKey {
    key: String,
    /// Where the `:` after the type is.
    colon: usize,
}

impl WorkerKey {
    pub fn parse(key: &str) -> Result<WorkerKey, KeyError> {
        let name = key.strip_suffix(":h").ok_or_else(|| KeyError::NotAHash(key.to_string()))?;
        let (worker_type, id) = name.split_once(':').ok_or_else(|| KeyError::NoId(key.to_string()))?;
        if id.is_empty() {
            return Err(KeyError::NoId(key.to_string()));
        }
        check_type(worker_type)?;
        Ok(WorkerKey { key: key.to_string(), colon: worker_type.len() })
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    pub fn worker_type(&self) -> &str {
        &self.key[..self.colon]
    }

    pub fn id(&self) -> &str {
        &self.key[self.colon + 1..self.key.len() - 2]
    }

    /// The key without `:h`, `${type}:${id}`: a name for logs and consumers.
    pub fn name(&self) -> &str {
        &self.key[..self.key.len() - 2]
    }

    /// The keys of its type.
    pub fn keys(&self) -> Keys {
        Keys::checked(self.worker_type())
    }
}

impl fmt::Display for WorkerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl std::str::FromStr for WorkerKey {
    type Err = KeyError;

    fn from_str(key: &str) -> Result<WorkerKey, KeyError> {
        WorkerKey::parse(key)
    }
}

impl std::ops::Deref for WorkerKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.key
    }
}

impl redis::ToRedisArgs for WorkerKey {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        self.key.write_redis_args(out)
    }
}

impl redis::ToSingleRedisArg for WorkerKey {}

/// A worker type names its keys (`${type}:h`, `${type}:start:q`, ...): `^[a-z][-a-z0-9_]*$`.
pub fn check_type(worker_type: &str) -> Result<(), KeyError> {
    let mut chars = worker_type.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err(KeyError::BadType(worker_type.to_string()));
    }
    Ok(())
}

/// The keys of one worker type.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Its defaults, `${type}:h`.
    pub hash: String,
    /// The ids waiting for a supervisor, `${type}:start:q`.
    pub start: String,
    /// The ids a supervisor runs, `${type}:started:q`.
    pub started: String,
    /// The ids parked after failing again and again, `${type}:failed:q`.
    pub failed: String,
    worker_type: String,
}

impl Keys {
    /// The keys of `worker_type`, which must follow the type rule ([`check_type`]).
    pub fn of(worker_type: &str) -> Result<Keys, KeyError> {
        check_type(worker_type)?;
        Ok(Keys::checked(worker_type))
    }

    fn checked(worker_type: &str) -> Keys {
        Keys {
            hash: format!("{worker_type}:h"),
            start: format!("{worker_type}:start:q"),
            started: format!("{worker_type}:started:q"),
            failed: format!("{worker_type}:failed:q"),
            worker_type: worker_type.to_string(),
        }
    }

    pub fn worker_type(&self) -> &str {
        &self.worker_type
    }

    /// The key of one id's hash: `${type}:${id}:h`.
    pub fn worker(&self, id: &str) -> WorkerKey {
        WorkerKey { key: format!("{}:{id}:h", self.worker_type), colon: self.worker_type.len() }
    }

    /// The stats hash the supervisor publishes for one id: `${type}:${id}:stats:h`.
    pub fn stats(&self, id: &str) -> String {
        format!("{}:{id}:stats:h", self.worker_type)
    }

    /// One id's latest exits, newest last (a stream capped at [`EXITS_KEPT`]):
    /// `${type}:${id}:exits:x`.
    pub fn exits(&self, id: &str) -> String {
        format!("{}:{id}:exits:x", self.worker_type)
    }

    /// The state of the type's rollout (`denorun rollout`), `${type}:rollout:h`.
    pub fn rollout(&self) -> String {
        format!("{}:rollout:h", self.worker_type)
    }

    /// The type's stream numbers, `${type}:stats:h`.
    pub fn type_stats(&self) -> String {
        format!("{}:stats:h", self.worker_type)
    }

    /// The request stream when the hash names none: `${type}:req:x`.
    pub fn request_stream(&self) -> String {
        format!("{}:req:x", self.worker_type)
    }

    /// The response stream when the hash names none: `${type}:res:x`.
    pub fn response_stream(&self) -> String {
        format!("{}:res:x", self.worker_type)
    }

    /// The response stream its fields name: `responseStream`, else [`Keys::response_stream`].
    pub fn responses(&self, fields: &Fields) -> String {
        fields.text("responseStream").map_or_else(|| self.response_stream(), str::to_string)
    }

    /// The pattern of every key named after the type, `${type}:*` (an ACL user's keys).
    pub fn pattern(&self) -> String {
        format!("{}:*", self.worker_type)
    }

    /// The dead letters of its handler workers: `${type}:dead:x`.
    pub fn dead_stream(&self) -> String {
        format!("{}:dead:x", self.worker_type)
    }

    /// The request streams a type's (or worker's) fields name: `streamShards` shards
    /// (`${type}:req:{t}:x`, see `shards`), else `requestStream`, else [`Keys::request_stream`].
    pub fn request_streams(&self, fields: &Fields) -> Result<Vec<String>, BadNumber> {
        let shards = fields.number_in("streamShards", 1..=MAX_SHARDS)?.unwrap_or(1) as usize;
        if shards > 1 {
            return Ok(shards::tags(shards).map(|tag| format!("{}:req:{{{tag}}}:x", self.worker_type)).collect());
        }
        Ok(vec![fields.text("requestStream").map_or_else(|| self.request_stream(), str::to_string)])
    }

    /// [`Keys::request_streams`] of a type's hash (`HGETALL ${type}:h`).
    pub fn type_streams(&self, type_hash: &HashMap<String, String>) -> Result<Vec<String>, BadNumber> {
        self.request_streams(&Fields::new(&self.hash, type_hash))
    }
}

/// The dead letters of a stream that sync reads: `${stream}:dead:x`.
pub fn dead_of(stream: &str) -> String {
    format!("{stream}:dead:x")
}

/// The trace of the request `reference`: `req:${ref}:h`.
pub fn trace(reference: &str) -> String {
    format!("req:{reference}:h")
}

/// The list the reply to `reference` is pushed on: `res:${ref}`.
pub fn reply(reference: &str) -> String {
    format!("res:{reference}")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any worker key gives a key or a typed error, never a panic.
        #[test]
        fn any_worker_key_parses_or_is_refused(key in "\\PC*", shaped in "[a-z:{}]{0,8}:[0-9a-z]{0,4}:h") {
            let _ = WorkerKey::parse(&key);
            if let Ok(parsed) = WorkerKey::parse(&shaped) {
                proptest::prop_assert_eq!(parsed.as_str(), shaped.as_str());
            }
        }
    }

    #[test]
    fn a_worker_key_is_parsed_once_into_its_parts() {
        let key = WorkerKey::parse("demo-worker:1:h").unwrap();
        assert_eq!((key.worker_type(), key.id(), key.name()), ("demo-worker", "1", "demo-worker:1"));
        assert_eq!(key.keys().hash, "demo-worker:h");
        let colons = WorkerKey::parse("t:a:b:h").unwrap();
        assert_eq!((colons.worker_type(), colons.id()), ("t", "a:b"));
        assert_eq!(Keys::of("t").unwrap().worker(colons.id()), colons);
        for (bad, error) in [
            ("not-a-hash-key", KeyError::NotAHash("not-a-hash-key".into())),
            ("t:1", KeyError::NotAHash("t:1".into())),
            ("x:h", KeyError::NoId("x:h".into())),
            ("t::h", KeyError::NoId("t::h".into())),
            (":1:h", KeyError::BadType("".into())),
            ("Demo:1:h", KeyError::BadType("Demo".into())),
        ] {
            assert_eq!(WorkerKey::parse(bad), Err(error), "{bad}");
        }
    }

    #[test]
    fn a_types_rule() {
        assert!(check_type("demo-worker_2").is_ok());
        for bad in ["", "Demo", "1demo", "demo:worker", "demo worker"] {
            assert!(check_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_types_keys() {
        let keys = Keys::of("g").unwrap();
        assert_eq!(
            [keys.hash.as_str(), &keys.start, &keys.started, &keys.failed],
            ["g:h", "g:start:q", "g:started:q", "g:failed:q"]
        );
        assert_eq!([keys.stats("1"), keys.type_stats()], ["g:1:stats:h", "g:stats:h"]);
        assert_eq!(
            [keys.request_stream(), keys.response_stream(), keys.dead_stream()],
            ["g:req:x", "g:res:x", "g:dead:x"]
        );
        assert_eq!([trace("r1"), reply("r1"), dead_of("s:x")], ["req:r1:h", "res:r1", "s:x:dead:x"]);
        let hash = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(keys.type_streams(&hash(&[])).unwrap(), ["g:req:x"]);
        assert_eq!(keys.type_streams(&hash(&[("requestStream", "in")])).unwrap(), ["in"]);
        assert_eq!(keys.type_streams(&hash(&[("streamShards", "1"), ("requestStream", "in")])).unwrap(), ["in"]);
        let six = keys.type_streams(&hash(&[("streamShards", "6")])).unwrap();
        assert_eq!(six.len(), 6);
        for (s, stream) in six.iter().enumerate() {
            assert!(stream.starts_with("g:req:{") && stream.ends_with("}:x"), "{stream}");
            assert_eq!(shards::for_ref(stream, 6), s, "{stream}");
        }
        for bad in ["0", "1025", "six"] {
            assert!(keys.type_streams(&hash(&[("streamShards", bad)])).is_err(), "{bad}");
        }
    }
}
