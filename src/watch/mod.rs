//! `--watch`, as in Deno: the local files a worker's module graph was read from, and a watcher
//! that says when one of them changed.
//!
//! [`ModuleFiles`] is filled by the loader with every local file it reads for a worker (its
//! main module, static imports, a dynamic `import()` once it ran, a JSON import), npm packages'
//! files excepted, each by its path as imported and, behind a symbolic link, by the path it
//! leads to. [`Watcher::changed`] resolves once one of those files was written, created,
//! renamed onto, removed or touched, and no other such event for one of them followed for
//! [`DEBOUNCE`]: an editor's save, or a `git checkout` of many files, is one change. Events for
//! other files of the same directories (an editor's swap file, a log the worker writes) are
//! ignored and do not delay a change. The directories are watched, not the files, so that a
//! save by rename (write a new file, move it over the old one) is seen; a symbolic link to a
//! directory that is repointed is not.
//!
//! [`check_graph`] is how a change is checked before anything is restarted.
//!
//! What is done on a change is the caller's: `denorun <key> --watch` (`single`), `supervise
//! --watch` (the supervisor's `reload`) and `denorun test --watch` (`test_runner`).

pub mod single;

use std::panic::AssertUnwindSafe;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deno_runtime::deno_core::ModuleSpecifier;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::worker::{self, WorkerSpec};

/// How long a burst of events may pause and still be one change.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often a directory that could not be watched is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// The local files some workers' module graphs were read from; shared by their loaders and
/// the watcher, which starts watching a file's directory as soon as it is recorded.
#[derive(Debug, Clone, Default)]
pub struct ModuleFiles(Arc<Files>);

#[derive(Debug, Default)]
struct Files {
    paths: Mutex<BTreeSet<PathBuf>>,
    /// Wakes the watcher when a path is recorded.
    recorded: tokio::sync::Notify,
}

impl ModuleFiles {
    /// Notes a module the loader read, by its path and the path a symbolic link leads to;
    /// anything but a `file:` URL is not a local file.
    pub fn record(&self, specifier: &ModuleSpecifier) {
        if let Ok(path) = specifier.to_file_path() {
            let real = path.canonicalize().ok().filter(|real| *real != path);
            let mut paths = self.lock();
            let new = real.into_iter().chain([path]).fold(false, |new, path| paths.insert(path) | new);
            drop(paths);
            if new {
                self.0.recorded.notify_one();
            }
        }
    }

    /// Adds another graph's files (a checked graph that was not run, so that a file it read
    /// for the first time is watched too).
    pub fn extend(&self, other: &ModuleFiles) {
        let other = other.paths();
        self.lock().extend(other);
        self.0.recorded.notify_one();
    }

    pub fn paths(&self) -> BTreeSet<PathBuf> {
        self.lock().clone()
    }

    fn contains(&self, path: &Path) -> bool {
        self.lock().contains(path)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        self.0.paths.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Watches the directories of some [`ModuleFiles`].
pub struct Watcher {
    notify: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<PathBuf>,
    /// The directories watched now.
    dirs: BTreeSet<PathBuf>,
}

impl Watcher {
    pub fn new() -> anyhow::Result<Watcher> {
        let (sender, events) = mpsc::unbounded_channel();
        let notify = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_change(&event.kind) => {
                for path in event.paths {
                    let _ = sender.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("--watch: the file watcher reported an error: {e}"),
        })
        .map_err(|e| anyhow::anyhow!("--watch: cannot watch files: {e}"))?;
        Ok(Watcher { notify, events, dirs: BTreeSet::new() })
    }

    /// Waits for a change to one of `files`; returns the files that changed, once events
    /// have paused for [`DEBOUNCE`].
    pub async fn changed(&mut self, files: &ModuleFiles) -> BTreeSet<PathBuf> {
        let mut changed = BTreeSet::new();
        while changed.is_empty() {
            self.follow(files);
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(path) if files.contains(&path) => {
                        changed.insert(path);
                    }
                    Some(_) => {}
                    // The watcher is gone (it is owned by self): nothing will change any more.
                    None => std::future::pending().await,
                },
                _ = files.0.recorded.notified() => {}
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        let mut quiet_from = tokio::time::Instant::now() + DEBOUNCE;
        while let Ok(Some(path)) = tokio::time::timeout_at(quiet_from, self.events.recv()).await {
            if files.contains(&path) {
                changed.insert(path);
                quiet_from = tokio::time::Instant::now() + DEBOUNCE;
            }
        }
        changed
    }

    /// Watches the directory of each recorded file, and no other. [`Watcher::changed`] does
    /// it as files are recorded; call it before saying that changes are watched.
    pub fn follow(&mut self, files: &ModuleFiles) {
        let wanted: BTreeSet<PathBuf> =
            files.paths().iter().filter_map(|path| path.parent().map(Path::to_path_buf)).collect();
        for gone in self.dirs.difference(&wanted).cloned().collect::<Vec<_>>() {
            let _ = self.notify.unwatch(&gone);
            self.dirs.remove(&gone);
        }
        for dir in wanted.difference(&self.dirs).cloned().collect::<Vec<_>>() {
            match self.notify.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir);
                }
                // Tried again at the next follow: the directory may come back (a checkout).
                Err(e) => log::warn!("--watch: cannot watch {}: {e}", dir.display()),
            }
        }
    }
}

/// Loads a changed graph without running it (no inspector: the running worker holds its
/// port): whether it loads, and the files it read. A panic in the runtime is a failure too.
pub fn check_graph(mut probe: WorkerSpec) -> (anyhow::Result<()>, ModuleFiles) {
    let checked = ModuleFiles::default();
    probe.watched = Some(checked.clone());
    probe.flags.inspect = None;
    let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| worker::load_graph(probe)))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the runtime panicked while loading it")));
    (loaded, checked)
}

/// Whether an event can change what a module reads as: not an open, read or close.
fn is_change(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any)
}

/// The changed files, for a log line: the first few by name.
pub fn describe(changed: &BTreeSet<PathBuf>) -> String {
    let mut names: Vec<String> = changed.iter().take(3).map(|path| path.display().to_string()).collect();
    if changed.len() > 3 {
        names.push(format!("and {} more", changed.len() - 3));
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn only_file_urls_are_recorded() {
        let files = ModuleFiles::default();
        files.record(&ModuleSpecifier::parse("file:///srv/w/main.ts").unwrap());
        files.record(&ModuleSpecifier::parse("https://deno.land/x/redis/mod.ts").unwrap());
        files.record(&ModuleSpecifier::parse("jsr:@std/assert").unwrap());
        assert_eq!(files.paths().into_iter().collect::<Vec<_>>(), vec![PathBuf::from("/srv/w/main.ts")]);
    }

    #[test]
    fn a_burst_of_writes_to_graph_files_is_one_change_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (main, dep, swap) = (dir.path().join("main.ts"), dir.path().join("dep.ts"), dir.path().join(".dep.ts.swp"));
        for path in [&main, &dep] {
            std::fs::write(path, "export {};\n").unwrap();
        }
        let files = ModuleFiles::default();
        for path in [&main, &dep] {
            files.record(&ModuleSpecifier::from_file_path(path).unwrap());
        }
        runtime().block_on(async {
            let mut watcher = Watcher::new().unwrap();
            watcher.follow(&files);
            // Only a file outside the graph: no change.
            std::fs::write(&swap, "x").unwrap();
            let quiet = tokio::time::timeout(Duration::from_millis(800), watcher.changed(&files)).await;
            assert!(quiet.is_err(), "a file outside the graph counted: {quiet:?}");
            // Writes to both, then a save by rename over one: one change naming both.
            let writer = tokio::spawn({
                let (main, dep, swap) = (main.clone(), dep.clone(), swap.clone());
                async move {
                    std::fs::write(&main, "export const a = 1;\n").unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    std::fs::write(&swap, "export const b = 2;\n").unwrap();
                    std::fs::rename(&swap, &dep).unwrap();
                }
            });
            let changed = watcher.changed(&files).await;
            writer.await.unwrap();
            assert_eq!(changed, BTreeSet::from([main.clone(), dep.clone()]));
            // The burst is over: nothing more is reported.
            let after = tokio::time::timeout(Duration::from_millis(800), watcher.changed(&files)).await;
            assert!(after.is_err(), "one burst was reported twice: {after:?}");
        });
    }

    #[test]
    fn describe_names_a_few() {
        let changed: BTreeSet<PathBuf> = (1..=5).map(|n| PathBuf::from(format!("/w/{n}.ts"))).collect();
        assert_eq!(describe(&changed), "/w/1.ts, /w/2.ts, /w/3.ts, and 2 more");
    }
}
