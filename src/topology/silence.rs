//! How a Redis connection notices a server that stops answering without closing (a paused
//! `redis-server`, a dead host, a dropped route, a proxy that stopped forwarding).
//!
//! Two mechanisms, because there are two kinds of silence:
//!
//! - The peer's host is gone: TCP keepalive (probes after 5 s idle, every 2 s, 3 of them) and
//!   `TCP_USER_TIMEOUT` (10 s of data unacknowledged) make the kernel close the socket, set on
//!   every connection [`tcp`] is given.
//! - The peer's kernel still acknowledges but nothing answers: only a time-out per command
//!   notices. [`deadline`] gives it: the response time-out (`--redis-timeout`, 5 s by default),
//!   or for a blocking command (`XREADGROUP … BLOCK`, `BRPOP`, `WAIT`, ...) its own block plus
//!   that much. A command that may block for ever (`BLOCK 0`, a `BRPOP` with 0) has none.
//!
//! A command past its deadline fails as a time-out, which [`super::is_outage`] counts as Redis
//! being away, and the connection it was sent on is dropped and never reused, so that a late
//! reply cannot reach a later caller.

use std::sync::OnceLock;
use std::time::Duration;

use redis::io::tcp::TcpSettings;

/// The response time-out when `--redis-timeout` is not given.
pub const DEFAULT_RESPONSE: Duration = Duration::from_secs(5);

static RESPONSE: OnceLock<Duration> = OnceLock::new();

/// Sets the response time-out for this process (`--redis-timeout`); the first call wins.
pub fn set_response_timeout(timeout: Duration) {
    let _ = RESPONSE.set(timeout);
}

/// The response time-out: how long a command that does not block may go unanswered.
pub fn response_timeout() -> Duration {
    *RESPONSE.get().unwrap_or(&DEFAULT_RESPONSE)
}

/// The socket options that let the kernel notice a peer whose host is gone.
pub fn tcp() -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    TcpSettings::default().set_nodelay(true).set_keepalive(keepalive).set_user_timeout(Duration::from_secs(10))
}

/// How long a command may go unanswered before its connection counts as silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    After(Duration),
    /// It may block for ever by request (`BLOCK 0`, a `BRPOP` with timeout 0).
    Never,
}

impl Deadline {
    /// The later of two (a pipeline waits for its slowest command).
    pub fn max(self, other: Deadline) -> Deadline {
        match (self, other) {
            (Deadline::After(a), Deadline::After(b)) => Deadline::After(a.max(b)),
            _ => Deadline::Never,
        }
    }
}

/// The deadline of a command given by its arguments (name first), with `response` as the
/// response time-out (and the margin over a blocking command's own wait).
pub fn deadline<'a>(mut args: impl Iterator<Item = &'a [u8]>, response: Duration) -> Deadline {
    let Some(name) = args.next() else { return Deadline::After(response) };
    let rest: Vec<&[u8]> = args.collect();
    let upper = name.to_ascii_uppercase();
    let blocks = match upper.as_slice() {
        b"XREAD" | b"XREADGROUP" => block_option(&rest),
        // The time-out in seconds (a float since Redis 6) is the last argument.
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BRPOPLPUSH" | b"BLMOVE" => {
            Some(rest.last().map_or(Some(Duration::ZERO), |t| seconds(t)))
        }
        // The time-out in seconds comes first.
        b"BLMPOP" | b"BZMPOP" => Some(rest.first().map_or(Some(Duration::ZERO), |t| seconds(t))),
        // WAIT numreplicas <ms>; WAITAOF numlocal numreplicas <ms>.
        b"WAIT" | b"WAITAOF" => Some(rest.last().map_or(Some(Duration::ZERO), |t| millis(t))),
        _ => None,
    };
    match blocks {
        None => Deadline::After(response),
        // Unreadable: Redis refuses it at once.
        Some(None) => Deadline::After(response),
        Some(Some(Duration::ZERO)) => Deadline::Never,
        Some(Some(wait)) => Deadline::After(wait + response),
    }
}

/// XREAD(GROUP)'s `BLOCK <ms>`: among the options, so not the group's or consumer's name
/// (after `GROUP`) nor a key (after `STREAMS`).
fn block_option(args: &[&[u8]]) -> Option<Option<Duration>> {
    let mut i = 0;
    while i < args.len() {
        let word = args[i];
        if word.eq_ignore_ascii_case(b"GROUP") {
            i += 3;
            continue;
        }
        if word.eq_ignore_ascii_case(b"STREAMS") {
            return None;
        }
        if word.eq_ignore_ascii_case(b"BLOCK") {
            return Some(args.get(i + 1).and_then(|ms| millis(ms)));
        }
        i += 1;
    }
    None
}

fn text(arg: &[u8]) -> Option<&str> {
    std::str::from_utf8(arg).ok().map(str::trim)
}

fn millis(arg: &[u8]) -> Option<Duration> {
    text(arg)?.parse::<u64>().ok().map(Duration::from_millis)
}

fn seconds(arg: &[u8]) -> Option<Duration> {
    let secs: f64 = text(arg)?.parse().ok()?;
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any command gets a deadline, never a panic.
        #[test]
        fn any_command_has_a_deadline(args in proptest::collection::vec("\\PC{0,12}", 0..6)) {
            let _ = deadline(args.iter().map(|a| a.as_bytes()), R);
            let mut blocking = vec!["BRPOP".to_string()];
            blocking.extend(args);
            let _ = deadline(blocking.iter().map(|a| a.as_bytes()), R);
        }
    }

    const R: Duration = Duration::from_secs(5);

    fn of(args: &[&str]) -> Deadline {
        deadline(args.iter().map(|a| a.as_bytes()), R)
    }

    #[test]
    fn a_command_that_does_not_block_has_the_response_time_out() {
        assert_eq!(of(&["GET", "k"]), Deadline::After(R));
        assert_eq!(of(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]), Deadline::After(R));
        assert_eq!(of(&[]), Deadline::After(R));
    }

    #[test]
    fn a_blocking_command_gets_its_own_wait_plus_the_response_time_out() {
        let block = of(&["xreadgroup", "GROUP", "g", "c", "COUNT", "1", "block", "2000", "STREAMS", "s", ">"]);
        assert_eq!(block, Deadline::After(Duration::from_secs(7)));
        assert_eq!(of(&["BRPOP", "a", "b", "1.5"]), Deadline::After(Duration::from_millis(6500)));
        assert_eq!(of(&["BLMOVE", "a", "b", "LEFT", "RIGHT", "3"]), Deadline::After(Duration::from_secs(8)));
        assert_eq!(of(&["BLMPOP", "1", "1", "k", "LEFT"]), Deadline::After(Duration::from_secs(6)));
        assert_eq!(of(&["WAIT", "1", "1000"]), Deadline::After(Duration::from_secs(6)));
    }

    #[test]
    fn a_wait_of_zero_is_for_ever_and_nonsense_is_refused_at_once() {
        assert_eq!(of(&["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]), Deadline::Never);
        assert_eq!(of(&["BRPOP", "a", "0"]), Deadline::Never);
        assert_eq!(of(&["BRPOP", "a", "soon"]), Deadline::After(R));
        assert_eq!(of(&["BRPOP", "a", "-1"]), Deadline::After(R));
        assert_eq!(of(&["BRPOP", "a", "inf"]), Deadline::After(R));
        assert_eq!(of(&["XREAD", "BLOCK"]), Deadline::After(R));
    }

    #[test]
    fn a_group_consumer_or_key_named_block_is_not_the_option() {
        let named = of(&["XREADGROUP", "GROUP", "block", "BLOCK", "BLOCK", "0", "STREAMS", "s", ">"]);
        assert_eq!(named, Deadline::Never);
        assert_eq!(of(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "block", "0"]), Deadline::After(R));
        assert_eq!(of(&["XREAD", "COUNT", "1", "STREAMS", "BLOCK", "5"]), Deadline::After(R));
    }

    #[test]
    fn a_pipeline_waits_for_its_slowest_command() {
        let (a, b) = (Deadline::After(R), Deadline::After(Duration::from_secs(9)));
        assert_eq!(a.max(b), b);
        assert_eq!(a.max(Deadline::Never), Deadline::Never);
    }
}
