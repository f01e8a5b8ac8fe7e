//! The Redis keys of one worker type that the supervisor reads and writes: the type's hash,
//! its id queues, each id's hash and stats hash, and the type's stats.

/// The keys of one worker type.
#[derive(Debug, Clone)]
pub struct Keys {
    pub hash: String,
    pub start: String,
    pub started: String,
    pub failed: String,
    prefix: String,
}

impl Keys {
    pub fn new(worker_type: &str) -> Keys {
        Keys {
            hash: format!("{worker_type}:h"),
            start: format!("{worker_type}:start:q"),
            started: format!("{worker_type}:started:q"),
            failed: format!("{worker_type}:failed:q"),
            prefix: worker_type.to_string(),
        }
    }

    /// The hash of one id: `${type}:${id}:h`.
    pub fn worker(&self, id: &str) -> String {
        format!("{}:{id}:h", self.prefix)
    }

    /// The stats hash the supervisor publishes for one id: `${type}:${id}:stats:h`.
    pub fn stats(&self, id: &str) -> String {
        format!("{}:{id}:stats:h", self.prefix)
    }

    /// The type's stream numbers, `${type}:stats:h`.
    pub fn type_stats(&self) -> String {
        format!("{}:stats:h", self.prefix)
    }

    pub fn worker_type(&self) -> &str {
        &self.prefix
    }
}
