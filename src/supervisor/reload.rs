//! Restarting a worker in place for a new version of its code: `supervise --watch`'s rolls,
//! and the restarts a rollout asks for (`denorun rollout`, which clears a worker's `pid` and
//! sets `restartAsked`). A worker restarted in place starts again at once on this supervisor,
//! without going back through `start:q`, and its quick-failure history is cleared: new code
//! is judged on its own. Its end is recorded as [`Reason::Reloaded`], unless it was a fault of
//! its own (a limit, a failed start), which is recorded as such.
//!
//! With `--watch`, when a local file of its workers' module graphs changes, the supervisor
//! restarts its workers one at a time, so that the others serve meanwhile.
//!
//! First the new version is checked: one worker's graph, as its hash now describes it, is
//! loaded without running anything. A version that does not load is reported and changes
//! nothing. Then each id this supervisor runs is restarted in turn: its `pid` is cleared (a
//! handler or 2021 worker stops after its current requests; what it had read stays pending
//! for its next run, under the same consumer), it is stopped where it is after the drain
//! time-out, and it starts again. The next id is restarted only once this one is up again: a
//! worker that claimed its `pid` before must claim it again (within [`NOT_UP`]), one that did
//! not must run for [`UP_AFTER`]. A restarted worker that ends, or is not up in time, stops
//! the roll; the ids not yet restarted keep the version they run. A change during a roll
//! rolls again after it. The files are read again by each start: a save during a roll is what
//! the ids after it run (the next change checks it).

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{launch, Event, Supervisor};
use crate::watch::{check_graph, describe, ModuleFiles};
use crate::worker::{Exit, Reason};

/// How long a restarted worker that never claimed `pid` must run to count as up.
pub const UP_AFTER: Duration = Duration::from_secs(5);

/// How long a restarted worker that claims `pid` has to claim it again.
pub const NOT_UP: Duration = Duration::from_secs(60);

/// Where a reload is.
#[derive(Debug, Default)]
pub struct Reload {
    /// The files every worker of this supervisor read.
    pub files: ModuleFiles,
    checking: bool,
    /// Ids still to restart, in order.
    queue: VecDeque<String>,
    current: Option<Current>,
    /// A change came during a check or a roll: check and roll again after it.
    again: bool,
}

/// The id being restarted.
#[derive(Debug)]
struct Current {
    id: String,
    /// When it was asked to stop, and whether it was stopped where it was.
    asked: Instant,
    stopped: bool,
    /// Whether its worker had claimed `pid` (and so must claim it again to be up).
    claims: bool,
    /// When its new run started.
    restarted: Option<Instant>,
}

impl Reload {
    /// Whether `id` is the worker being restarted for a change, not yet started again.
    pub fn is_stopping(&self, id: &str) -> bool {
        self.current.as_ref().is_some_and(|c| c.id == id && c.restarted.is_none())
    }
}

impl Supervisor {
    /// Files changed: check the new version, unless a check or a roll is under way.
    pub(super) async fn on_change(&mut self, changed: &BTreeSet<PathBuf>, draining: bool) {
        if draining {
            return;
        }
        if self.reload.checking || self.reload.current.is_some() {
            log::info!("{}: {} changed; reloading again after this reload", self.keys.hash, describe(changed));
            self.reload.again = true;
            return;
        }
        log::info!("{}: {} changed; checking that the new version loads", self.keys.hash, describe(changed));
        self.check().await;
    }

    /// Loads the graph of the first running worker as its hash now describes it, on a thread
    /// of its own; the result comes back as [`Event::Checked`]. With no worker running, the
    /// next start takes the change.
    async fn check(&mut self) {
        let Some(id) = self.running.keys().min().cloned() else {
            log::info!("{}: no worker runs; the next start takes the change", self.keys.hash);
            return;
        };
        self.reload.checking = true;
        let key = self.keys.worker(&id);
        let (events, files) = (self.events.clone(), self.reload.files.clone());
        let fields = launch::fields(&mut self.conn, &self.defaults, &key).await.map_err(anyhow::Error::from);
        let host = super::host(&self.redis, &self.options);
        let probe =
            fields.and_then(|(defaults, own)| launch::assemble(&host, &defaults, &key, own, Default::default()));
        let spawned = std::thread::Builder::new().name(format!("{key} check")).spawn(move || {
            let (loaded, checked) = match probe {
                Ok((_, probe)) => check_graph(probe),
                Err(e) => (Err(e), ModuleFiles::default()),
            };
            // A file only the new version reads is watched too: its fix is a change.
            files.extend(&checked);
            let _ = events.send(Event::Checked(loaded.map_err(|e| format!("{key}: {e:#}"))));
        });
        if let Err(e) = spawned {
            let _ = self.events.send(Event::Checked(Err(format!("cannot start a thread to check it: {e}"))));
        }
    }

    /// The check's result: roll the running ids, or report why not.
    pub(super) async fn on_checked(&mut self, loaded: Result<(), String>, draining: bool) {
        self.reload.checking = false;
        if draining {
            return;
        }
        match loaded {
            Err(e) => {
                log::error!(
                    "{}: the new version does not load, so the workers keep running theirs: {e}",
                    self.keys.hash
                );
                self.reload_again().await;
            }
            Ok(()) => {
                let mut ids: Vec<String> = self.running.keys().cloned().collect();
                ids.sort();
                log::info!(
                    "{}: the new version loads; restarting {} worker(s) one at a time",
                    self.keys.hash,
                    ids.len()
                );
                self.reload.queue = ids.into();
                self.roll_next().await;
            }
        }
    }

    /// Asks the next id still running to stop, or ends the roll.
    async fn roll_next(&mut self) {
        self.reload.current = None;
        while let Some(id) = self.reload.queue.pop_front() {
            if !self.running.contains_key(&id) {
                continue;
            }
            let key = self.keys.worker(&id);
            log::info!(worker = key.as_str(), event = "reload"; "{key}: restarting it for the change");
            let cleared: Option<u32> =
                self.outage.note(redis::cmd("HDEL").arg(key.as_str()).arg("pid").query_async(&mut self.conn).await);
            let claims = cleared == Some(1);
            self.reload.current = Some(Current { id, asked: Instant::now(), stopped: false, claims, restarted: None });
            return;
        }
        log::info!("{}: reloaded; every worker it runs has the new version", self.keys.hash);
        self.reload_again().await;
    }

    /// Stops the roll where it is, for `why`.
    async fn stop_roll(&mut self, key: &str, why: &str) {
        log::error!(
            "{}: {key} {why}; the reload stops, and {} worker(s) keep their version until the next change",
            self.keys.hash,
            self.reload.queue.len()
        );
        self.reload.queue.clear();
        self.reload.current = None;
        self.reload_again().await;
    }

    /// A change that came meanwhile is checked now.
    async fn reload_again(&mut self) {
        if std::mem::take(&mut self.reload.again) {
            self.check().await;
        }
    }

    /// A worker asked to restart for a new version ended: it starts again at once, here.
    pub(super) async fn restart_in_place(&mut self, id: String, exit: Exit) {
        let key = self.keys.worker(&id);
        self.running.remove(&id);
        // A clean stop (a 2021 worker throws when its pid goes) is the restart; a fault of its
        // own is kept as what it was.
        let reason = match &exit.reason {
            Reason::Exited(_) | Reason::Uncaught(_) | Reason::Stopped | Reason::Drained => Reason::Reloaded,
            fault => fault.clone(),
        };
        let recorded = super::records::record_exit(&mut self.conn, &key, &reason).await;
        self.outage.note(recorded);
        self.metrics.ended(&self.labels(&id), reason.name(), "stopped");
        // New code: its quick failures so far say nothing about it.
        self.history.remove(&id);
        log::info!(
            worker = key.as_str(), event = "exit", reason = reason.name();
            "{key}: stopped for a new version ({}); starting it", exit.reason
        );
        if let Some(current) = self.reload.current.as_mut().filter(|current| current.id == id) {
            current.restarted = Some(Instant::now());
        }
        // It holds its place and stays on started:q. Boxed: starting may end it again.
        Box::pin(self.start_worker(id)).await;
    }

    /// Each second during a roll: the restarted worker, once up, lets the next one go; one
    /// that does not stop within the drain time-out is stopped where it is; one that ended,
    /// or is not up in time, stops the roll.
    pub(super) async fn tend_reload(&mut self) {
        let Some(current) = &mut self.reload.current else { return };
        let (id, claims) = (current.id.clone(), current.claims);
        let key = self.keys.worker(&id);
        let Some(restarted) = current.restarted else {
            if current.asked.elapsed() > self.options.drain_timeout && !current.stopped {
                current.stopped = true;
                if let Some(running) = self.running.get(&id) {
                    log::warn!(
                        "{key}: still running {:.0}s after it was asked to stop; stopping it where it is",
                        self.options.drain_timeout.as_secs_f64()
                    );
                    running.stop.stop();
                }
            }
            return;
        };
        if !self.running.contains_key(&id) {
            return self.stop_roll(&key, "ended before it was up").await;
        }
        let up = match claims {
            true => {
                let claimed: Option<bool> = self
                    .outage
                    .note(redis::cmd("HEXISTS").arg(key.as_str()).arg("pid").query_async(&mut self.conn).await);
                claimed == Some(true)
            }
            false => restarted.elapsed() >= UP_AFTER,
        };
        if up {
            self.roll_next().await;
        } else if restarted.elapsed() >= NOT_UP {
            self.stop_roll(&key, &format!("did not claim its hash within {}s", NOT_UP.as_secs())).await;
        }
    }
}
