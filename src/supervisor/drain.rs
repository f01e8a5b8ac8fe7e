//! Draining on SIGTERM or SIGINT: the first signal stops taking ids and asks each worker to
//! stop after its current request; workers still running at the drain time-out, or at a
//! second signal, are stopped where they are.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// What a signal or the time-out asks of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first signal: begin the drain.
    Begin,
    /// A second signal, or the time-out: stop every worker now.
    StopAll,
}

/// The drain's state, and the signals that drive it.
pub struct Drain {
    timeout: Duration,
    deadline: Option<Instant>,
    terminate: Signal,
    interrupt: Signal,
}

impl Drain {
    pub fn new(timeout: Duration) -> std::io::Result<Drain> {
        Ok(Drain {
            timeout,
            deadline: None,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    pub fn is_draining(&self) -> bool {
        self.deadline.is_some()
    }

    /// Waits for the next signal, or the drain's time-out.
    pub async fn next(&mut self) -> Step {
        let deadline = self.deadline;
        let timed_out = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
            _ = timed_out => {
                // Stopped workers end at once; no second time-out is needed.
                self.deadline = Some(Instant::now() + Duration::from_secs(86_400));
                return Step::StopAll;
            }
        }
        if self.deadline.is_some() {
            return Step::StopAll;
        }
        self.deadline = Some(Instant::now() + self.timeout);
        Step::Begin
    }
}
