//! The restart policy: what happens to a worker's id after its worker ended. A pure
//! function of why it ended, how long it ran and its recent history.

use std::time::Duration;

use crate::worker::Reason;

/// The policy's settings (`denorun supervise` flags).
#[derive(Debug, Clone)]
pub struct Policy {
    /// A run shorter than this is a quick exit.
    pub quick_exit: Duration,
    /// The first backoff; it doubles per quick exit in a row, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Quick failures in a row after which the id is parked on `failed:q`.
    pub max_failures: u32,
}

/// One id's recent runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Quick exits in a row, whatever their reason.
    pub quick_exits: u32,
    /// Quick failures (the worker's own fault) in a row.
    pub quick_failures: u32,
}

/// What to do with the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Back on `start:q` now.
    Requeue,
    /// Back on `start:q` after this long (before jitter).
    Backoff(Duration),
    /// Onto `failed:q`, until someone fixes the worker and requeues it.
    Park,
}

/// Decides an id's fate; returns the history to keep. During a drain every id goes back on
/// `start:q`. A lost Redis is not the worker's fault: it backs off (so a worker that
/// cannot reach its Redis does not spin) but is never parked for it. A failure backs off
/// even after a long run, since restarting a crashing or runaway worker at once rarely helps.
pub fn decide(
    policy: &Policy,
    reason: &Reason,
    ran_for: Duration,
    draining: bool,
    history: History,
) -> (Decision, History) {
    if draining {
        return (Decision::Requeue, History::default());
    }
    let quick = ran_for < policy.quick_exit;
    let failure = reason.is_failure();
    let history = History {
        quick_exits: if quick { history.quick_exits + 1 } else { 0 },
        quick_failures: if quick && failure { history.quick_failures + 1 } else { 0 },
    };
    if history.quick_failures >= policy.max_failures {
        return (Decision::Park, history);
    }
    let streak = if failure { history.quick_exits.max(1) } else { history.quick_exits };
    let decision = match streak {
        0 => Decision::Requeue,
        n => Decision::Backoff(policy.backoff.saturating_mul(1 << (n - 1).min(16)).min(policy.backoff_max)),
    };
    (decision, history)
}

/// Adds up to 25% to a backoff so that many workers do not restart in step.
pub fn jitter(delay: Duration) -> Duration {
    delay + delay.mul_f64(rand::random::<f64>() * 0.25)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy { quick_exit: 5 * S, backoff: 100 * MS, backoff_max: 2 * S, max_failures: 3 }
    }

    /// Runs a sequence of ends of one id through the policy.
    fn run(ends: &[(Reason, Duration)]) -> Vec<Decision> {
        let mut history = History::default();
        ends.iter()
            .map(|(reason, ran)| {
                let (decision, next) = decide(&policy(), reason, *ran, false, history);
                history = next;
                decision
            })
            .collect()
    }

    #[test]
    fn a_long_normal_run_requeues_at_once() {
        assert_eq!(run(&[(Reason::Exited(0), 60 * S)]), [Decision::Requeue]);
    }

    #[test]
    fn quick_exits_back_off_doubling_to_the_maximum() {
        let ends = vec![(Reason::Exited(0), MS); 7];
        let delays: Vec<_> = run(&ends)
            .into_iter()
            .map(|d| match d {
                Decision::Backoff(d) => d.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn quick_failures_park_and_a_good_run_resets() {
        let crash = (Reason::Uncaught("Error: boom".into()), MS);
        assert_eq!(
            run(&[crash.clone(), crash.clone(), (Reason::Exited(0), 60 * S), crash.clone(), crash.clone(), crash]),
            [
                Decision::Backoff(100 * MS),
                Decision::Backoff(200 * MS),
                Decision::Requeue,
                Decision::Backoff(100 * MS),
                Decision::Backoff(200 * MS),
                Decision::Park
            ]
        );
    }

    #[test]
    fn memory_and_cpu_back_off_even_after_a_long_run() {
        for reason in [Reason::Memory { limit_mb: 64 }, Reason::Cpu { blocked_ms: 10_000 }] {
            assert_eq!(run(&[(reason, 60 * S)]), [Decision::Backoff(100 * MS)]);
        }
    }

    #[test]
    fn a_lost_redis_backs_off_but_never_parks() {
        let lost = (Reason::RedisLost("broken pipe".into()), MS);
        let decisions = run(&vec![lost; 10]);
        assert!(decisions.iter().all(|d| matches!(d, Decision::Backoff(_))), "{decisions:?}");
        assert_eq!(run(&[(Reason::RedisLost("x".into()), 60 * S)]), [Decision::Requeue]);
    }

    #[test]
    fn a_drain_requeues_whatever_happened() {
        let history = History { quick_exits: 4, quick_failures: 2 };
        let (decision, after) = decide(&policy(), &Reason::Uncaught("Error".into()), MS, true, history);
        assert_eq!((decision, after), (Decision::Requeue, History::default()));
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        for _ in 0..100 {
            let d = jitter(400 * MS);
            assert!(d >= 400 * MS && d <= 500 * MS, "{d:?}");
        }
    }
}
