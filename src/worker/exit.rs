//! Why a worker ended: one enum that the restart policy decides on, that the supervisor
//! writes to the worker's hash (`lastExit`, `lastReason`, `lastError`) and that
//! `denorun status` shows.

use std::fmt;

/// Put in the worker's `OpState` when a Redis connection is refused or drops: the worker's
/// end, if it follows, is Redis's fault rather than the worker's.
pub struct RedisLost(pub String);

/// Why a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Its event loop ran out of work, or it called `Deno.exit(code)`.
    Exited(i32),
    /// An uncaught error; its first line.
    Uncaught(String),
    /// Terminated near its heap limit (`maxHeapMb`).
    Memory { limit_mb: u64 },
    /// Terminated after its JavaScript held the thread longer than `maxBlockMs`.
    Cpu { blocked_ms: u64 },
    /// Terminated because a handler worker's request ran far past its `requestTimeoutMs`.
    Timeout { timeout_ms: u64 },
    /// Stopped where it was by its host (a drain's time-out, a second signal).
    Stopped,
    /// Ended during a drain, after the supervisor cleared its `pid`: a normal stop.
    Drained,
    /// Its Redis connection was refused or dropped; the message says how.
    RedisLost(String),
    /// It never ran: a bad hash, module, flag or inspector address.
    StartFailed(String),
}

impl Reason {
    /// The exit code a process running only this worker would have had.
    pub fn code(&self) -> i32 {
        match self {
            Reason::Exited(code) => *code,
            Reason::Drained | Reason::Stopped => 0,
            _ => 1,
        }
    }

    /// The word written to `lastReason`.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Exited(_) => "exit",
            Reason::Uncaught(_) => "error",
            Reason::Memory { .. } => "memory",
            Reason::Cpu { .. } => "cpu",
            Reason::Timeout { .. } => "timeout",
            Reason::Stopped => "stopped",
            Reason::Drained => "drain",
            Reason::RedisLost(_) => "redis",
            Reason::StartFailed(_) => "start",
        }
    }

    /// Whether the worker itself is at fault (its restarts back off and can park it).
    pub fn is_failure(&self) -> bool {
        match self {
            Reason::Exited(code) => *code != 0,
            Reason::Uncaught(_)
            | Reason::Memory { .. }
            | Reason::Cpu { .. }
            | Reason::Timeout { .. }
            | Reason::StartFailed(_) => true,
            Reason::Stopped | Reason::Drained | Reason::RedisLost(_) => false,
        }
    }

    /// What went wrong, for `lastError`; nothing for a normal end.
    pub fn error(&self) -> Option<String> {
        match self {
            Reason::Exited(_) | Reason::Stopped | Reason::Drained => None,
            other => Some(other.to_string()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Exited(code) => write!(f, "exited with code {code}"),
            Reason::Uncaught(message) => write!(f, "{message}"),
            Reason::Memory { limit_mb } => write!(f, "terminated near its heap limit of {limit_mb} MiB (maxHeapMb)"),
            Reason::Cpu { blocked_ms } => {
                write!(f, "terminated after its JavaScript ran {blocked_ms} ms without yielding (maxBlockMs)")
            }
            Reason::Timeout { timeout_ms } => {
                write!(f, "terminated: a request was still running at twice its requestTimeoutMs of {timeout_ms} ms")
            }
            Reason::Stopped => write!(f, "stopped"),
            Reason::Drained => write!(f, "stopped by a drain"),
            Reason::RedisLost(message) => write!(f, "lost its Redis connection: {message}"),
            Reason::StartFailed(message) => write!(f, "could not start: {message}"),
        }
    }
}

/// How a worker ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub reason: Reason,
    /// The uncaught error as `deno run` prints it (`Uncaught ...` with the stack), for the host
    /// to print when the error is news.
    pub report: Option<String>,
}

impl Exit {
    pub fn new(reason: Reason) -> Exit {
        Exit { reason, report: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_faults() {
        let cases = [
            (Reason::Exited(0), 0, "exit", false),
            (Reason::Exited(3), 3, "exit", true),
            (Reason::Uncaught("Error: x".into()), 1, "error", true),
            (Reason::Memory { limit_mb: 64 }, 1, "memory", true),
            (Reason::Cpu { blocked_ms: 10 }, 1, "cpu", true),
            (Reason::Timeout { timeout_ms: 10 }, 1, "timeout", true),
            (Reason::Stopped, 0, "stopped", false),
            (Reason::Drained, 0, "drain", false),
            (Reason::RedisLost("gone".into()), 1, "redis", false),
            (Reason::StartFailed("bad".into()), 1, "start", true),
        ];
        for (reason, code, name, failure) in cases {
            assert_eq!((reason.code(), reason.name(), reason.is_failure()), (code, name, failure), "{reason:?}");
        }
    }

    #[test]
    fn only_faults_have_an_error() {
        assert_eq!(Reason::Drained.error(), None);
        assert_eq!(Reason::Exited(2).error(), None);
        assert!(Reason::Memory { limit_mb: 64 }.error().unwrap().contains("maxHeapMb"));
    }
}
