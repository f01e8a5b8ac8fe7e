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
    /// Ended to be started again on a change to its files (`--watch`): a normal stop.
    Reloaded,
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
            Reason::Drained | Reason::Reloaded | Reason::Stopped => 0,
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
            Reason::Reloaded => "reload",
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
            Reason::Stopped | Reason::Drained | Reason::Reloaded | Reason::RedisLost(_) => false,
        }
    }

    /// What went wrong, for `lastError`; nothing for a normal end.
    pub fn error(&self) -> Option<String> {
        match self {
            Reason::Exited(_) | Reason::Stopped | Reason::Drained | Reason::Reloaded => None,
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
            Reason::Reloaded => write!(f, "restarted for a change to its files"),
            Reason::RedisLost(message) => write!(f, "lost its Redis connection: {message}"),
            Reason::StartFailed(message) => write!(f, "could not start: {message}"),
        }
    }
}

/// The line an uncaught error is known by in the worker's hash, `status` and the console:
/// the report's first line (`SyntaxError: Expression expected`), without terminal colours,
/// with `place` (where it was thrown: `file:///w.ts:4:33`) when that line does not name it
/// already.
pub fn headline(report: &str, place: Option<&str>) -> String {
    let report = plain(report);
    let first = report.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or_default();
    match place {
        Some(place) if !first.contains(place) => format!("{first} (at {place})"),
        _ => first.to_string(),
    }
}

/// The first `at url:line:column` line of a report in plain text (a module that does not
/// parse: deno_ast's report, which names no frames), outside deno_runtime's own code.
pub fn place_in_text(report: &str) -> Option<String> {
    plain(report)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("at "))
        .map(|at| at.strip_prefix("async ").unwrap_or(at))
        .find_map(place)
        .map(str::to_string)
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `url:line:column` of a stack line's rest (`f (url:1:2)` or `url:1:2`), if it has one
/// and it is not deno_runtime's own code (`ext:`).
fn place(frame: &str) -> Option<&str> {
    let place = match frame.rsplit_once(" (") {
        Some((_, inner)) => inner.strip_suffix(')')?,
        None => frame,
    };
    let mut parts = place.rsplitn(3, ':');
    let numbers = parts.by_ref().take(2).all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let url = parts.next().filter(|url| !url.is_empty() && !url.starts_with("ext:"));
    (numbers && url.is_some()).then_some(place)
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
        let at = Some("file:///w/h.ts:10:11");
        assert_eq!(headline("Uncaught Error: boom\n    at x", at), "Uncaught Error: boom (at file:///w/h.ts:10:11)");
        assert_eq!(headline("Error: at file:///w/h.ts:10:11 it broke", at), "Error: at file:///w/h.ts:10:11 it broke");
        assert_eq!(headline("\n\nError: x", None), "Error: x", "the first line with text");
        let coloured = "\u{1b}[0m\u{1b}[1m\u{1b}[31merror\u{1b}[0m: Uncaught Error: boom";
        assert_eq!(headline(coloured, None), "error: Uncaught Error: boom", "no terminal colours");
    }

    #[test]
    fn a_module_that_does_not_parse_is_placed_by_its_report() {
        let syntax = "SyntaxError: Expression expected\n  |\n4 |     return (1 + };\n  |                 ~\n    at file:///w/bad.ts:4:33";
        assert_eq!(place_in_text(syntax).as_deref(), Some("file:///w/bad.ts:4:33"));
        let coloured =
            "SyntaxError: x\n    at \u{1b}[36mfile:///w/bad.ts\u{1b}[39m:\u{1b}[33m4\u{1b}[39m:\u{1b}[33m33\u{1b}[39m";
        assert_eq!(place_in_text(coloured).as_deref(), Some("file:///w/bad.ts:4:33"));
        let framed = "Error: x\n    at ext:core/01_core.js:7:9\n    at async f (file:///w/h.ts:3:5)";
        assert_eq!(place_in_text(framed).as_deref(), Some("file:///w/h.ts:3:5"), "not deno_runtime's own code");
        for none in ["Error: x", "", "Error: x\n    at foo (native)", "Error: x\n    at :1:2", "Error: x\n    at u:1:"]
        {
            assert_eq!(place_in_text(none), None, "{none:?}");
        }
    }

    #[test]
    fn only_faults_have_an_error() {
        assert_eq!(Reason::Drained.error(), None);
        assert_eq!(Reason::Exited(2).error(), None);
        assert!(Reason::Memory { limit_mb: 64 }.error().unwrap().contains("maxHeapMb"));
    }
}
