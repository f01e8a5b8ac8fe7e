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
    /// An uncaught error: its first line, and where it was thrown ([`headline`]).
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

/// The line an uncaught error is known by in the worker's hash, `status` and the console:
/// the report's first line (`SyntaxError: Expression expected`), with the first place its
/// report names (`at file:///w.ts:4:33`: the module and position of a syntax error, the top
/// frame of a thrown error) when that line does not name it already.
pub fn headline(report: &str) -> String {
    let mut lines = report.lines();
    let first = lines.next().unwrap_or_default().trim();
    let place = lines.map(str::trim).filter_map(|line| line.strip_prefix("at ")).find_map(place);
    match place {
        Some(place) if !first.contains(place) => format!("{first} (at {place})"),
        _ => first.to_string(),
    }
}

/// The `url:line:column` of a stack line's rest (`f (url:1:2)` or `url:1:2`), if it has one.
fn place(frame: &str) -> Option<&str> {
    let place = match frame.rsplit_once(" (") {
        Some((_, inner)) => inner.strip_suffix(')')?,
        None => frame,
    };
    let mut parts = place.rsplitn(3, ':');
    let numbers = parts.by_ref().take(2).all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (numbers && parts.next().is_some_and(|url| !url.is_empty())).then_some(place)
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
    fn an_uncaught_error_is_known_by_its_first_line_and_where_it_was_thrown() {
        let syntax = "SyntaxError: Expression expected\n  |\n4 |     return (1 + };\n  |                 ~\n    at file:///w/bad.ts:4:33";
        assert_eq!(headline(syntax), "SyntaxError: Expression expected (at file:///w/bad.ts:4:33)");
        let thrown = "Uncaught (in promise) Error: boom\n    at request (file:///w/h.ts:10:11)\n    at async Promise.all (index 0)";
        assert_eq!(headline(thrown), "Uncaught (in promise) Error: boom (at file:///w/h.ts:10:11)");
        let native = "Error: x\n    at async Promise.all (index 0)\n    at ext:core/01_core.js:7:9";
        assert_eq!(headline(native), "Error: x (at ext:core/01_core.js:7:9)", "the first frame with a place");
        let named = "TypeError: Module not found \"file:///w/a.ts\".\n    at file:///w/a.ts:1:1";
        assert_eq!(headline(named), "TypeError: Module not found \"file:///w/a.ts\". (at file:///w/a.ts:1:1)");
        let said = "Error: at file:///w/a.ts:1:1 it broke\n    at file:///w/a.ts:1:1";
        assert_eq!(headline(said), "Error: at file:///w/a.ts:1:1 it broke", "a place the line names already");
        for bare in ["Error: x", "", "Error: x\n    at foo (native)", "Error: x\n    at :1:2", "Error: x\n    at u:1:"]
        {
            assert_eq!(headline(bare), bare.lines().next().unwrap_or_default(), "{bare:?}");
        }
    }

    #[test]
    fn only_faults_have_an_error() {
        assert_eq!(Reason::Drained.error(), None);
        assert_eq!(Reason::Exited(2).error(), None);
        assert!(Reason::Memory { limit_mb: 64 }.error().unwrap().contains("maxHeapMb"));
    }
}
