//! A rollout's judgement of one restarted worker, as a pure function of what Redis shows of
//! it: up (its `pid` claimed on the new version, and no failure since, for the settle time),
//! failed (a failing exit since it was asked to restart, or not up by the step's time-out), or
//! not yet.

use std::time::Duration;

/// What Redis shows of a worker asked to restart, at one look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Its hash has a `pid`: a worker claims it.
    pub claimed: bool,
    /// Its `runningDigest` is the version waited for.
    pub on_new_version: bool,
    /// Its exits since the ask that were its own fault (`failure` 1 in its exits stream; the
    /// restart the rollout asked for is `reload`, not a failure).
    pub failures: Vec<Ended>,
}

/// An exit from a worker's exits stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub reason: String,
    pub error: Option<String>,
}

/// What the rollout makes of a worker now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not up yet, within its time.
    Waiting,
    /// Up on the new version for `up_for` (the settle time not reached yet).
    Settling,
    /// Up on the new version for the settle time: the next worker may go.
    Up,
    Failed(Failure),
}

/// Why a worker failed its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It ended on its own fault after the restart.
    Ended(Ended),
    /// It was not up on the new version within the step's time-out.
    NotUp(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Ended(Ended { reason, error: Some(error) }) => write!(f, "it ended ({reason}): {error}"),
            Failure::Ended(Ended { reason, error: None }) => write!(f, "it ended ({reason})"),
            Failure::NotUp(after) => write!(f, "it was not up on the version waited for after {}s", after.as_secs()),
        }
    }
}

/// Judges a worker `since_ask` after it was asked to restart, up on the new version since
/// `up_for` (none when it was not at the last look).
pub fn judge(
    seen: &Seen,
    since_ask: Duration,
    up_for: Option<Duration>,
    settle: Duration,
    timeout: Duration,
) -> Health {
    if let Some(failure) = seen.failures.first() {
        return Health::Failed(Failure::Ended(failure.clone()));
    }
    match up_for {
        Some(up_for) if seen.claimed && seen.on_new_version && up_for >= settle => Health::Up,
        _ if since_ask >= timeout => Health::Failed(Failure::NotUp(timeout)),
        _ if seen.claimed && seen.on_new_version => Health::Settling,
        _ => Health::Waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn up() -> Seen {
        Seen { claimed: true, on_new_version: true, failures: Vec::new() }
    }

    #[test]
    fn a_worker_is_up_once_it_has_claimed_its_hash_on_the_new_version_for_the_settle_time() {
        assert_eq!(judge(&up(), S, None, 3 * S, 60 * S), Health::Settling);
        assert_eq!(judge(&up(), 4 * S, Some(2 * S), 3 * S, 60 * S), Health::Settling);
        assert_eq!(judge(&up(), 5 * S, Some(3 * S), 3 * S, 60 * S), Health::Up);
    }

    #[test]
    fn the_old_version_still_claiming_the_hash_is_not_up() {
        let old = Seen { on_new_version: false, ..up() };
        assert_eq!(judge(&old, 5 * S, Some(10 * S), 3 * S, 60 * S), Health::Waiting);
        assert_eq!(judge(&Seen::default(), 5 * S, None, 3 * S, 60 * S), Health::Waiting);
    }

    #[test]
    fn a_failure_after_the_ask_fails_the_step_even_when_it_is_up_again() {
        let crashed = Ended { reason: "error".into(), error: Some("Error: boom (at file:///w/v2.ts:1:7)".into()) };
        let seen = Seen { failures: vec![crashed.clone()], ..up() };
        assert_eq!(judge(&seen, 5 * S, Some(10 * S), 3 * S, 60 * S), Health::Failed(Failure::Ended(crashed)));
    }

    #[test]
    fn not_up_by_the_time_out_fails_the_step() {
        assert_eq!(judge(&Seen::default(), 60 * S, None, 3 * S, 60 * S), Health::Failed(Failure::NotUp(60 * S)));
        // Settling when the time runs out is not up either.
        assert_eq!(judge(&up(), 60 * S, Some(S), 3 * S, 60 * S), Health::Failed(Failure::NotUp(60 * S)));
    }
}
