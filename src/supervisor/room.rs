//! How many ids a supervisor runs at once (`--max-workers`): its id taker reserves a place
//! before each BLMOVE and waits while there is none, so the ids it leaves on `start:q` go to
//! the other supervisors of the type. A place is freed when an id leaves this supervisor
//! (back on `start:q`, or parked). Without the flag the limit comes from the CPUs and memory
//! the process has.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Idle workers per CPU a supervisor takes by default.
const WORKERS_PER_CPU: usize = 250;

/// Memory a supervisor counts per worker by default: an idle handler worker takes about
/// 5 MiB (BENCHMARKS.md), a busy one several times that.
const MEMORY_PER_WORKER: u64 = 32 << 20;

/// The default `--max-workers`: as many as the memory holds at 32 MiB each, and no more than
/// 250 per CPU; at least one.
pub fn default_max_workers(cpus: usize, memory_bytes: u64) -> usize {
    let by_memory = usize::try_from(memory_bytes / MEMORY_PER_WORKER).unwrap_or(usize::MAX);
    by_memory.min(cpus.saturating_mul(WORKERS_PER_CPU)).max(1)
}

/// The CPUs this process may use and the memory it has: the cgroup's limit when one is set,
/// else the machine's.
pub fn resources() -> (usize, u64) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| mem_total(&text));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|text| text.trim().parse().ok());
    let memory = match (machine, cgroup) {
        (Some(machine), Some(cgroup)) => u64::min(machine, cgroup),
        (machine, cgroup) => machine.or(cgroup).unwrap_or(1 << 30),
    };
    (cpus, memory)
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The places of one supervisor, shared by its id taker (which reserves) and its event loop
/// (which frees).
pub struct Room {
    max: usize,
    held: Mutex<usize>,
    freed: Notify,
}

impl Room {
    pub fn new(max: usize) -> Room {
        Room { max: max.max(1), held: Mutex::new(0), freed: Notify::new() }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits for a free place and holds it; `false` once `stopping` is set (see `wake`).
    pub async fn reserve(&self, stopping: &AtomicBool) -> bool {
        loop {
            if stopping.load(Ordering::SeqCst) {
                return false;
            }
            if self.try_reserve() {
                return true;
            }
            self.freed.notified().await;
        }
    }

    fn try_reserve(&self) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if *held < self.max {
            *held += 1;
            return true;
        }
        false
    }

    /// Gives a place back: an id left, or a reserved place took none.
    pub fn release(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        *held = held.saturating_sub(1);
        self.freed.notify_one();
    }

    /// Whether every place is held.
    pub fn is_full(&self) -> bool {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) >= self.max
    }

    /// Wakes a `reserve` that waits, so that it sees `stopping`.
    pub fn wake(&self) {
        self.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_default_is_the_smaller_of_memory_and_cpus() {
        // 24 GiB hold 768 workers at 32 MiB each; two CPUs allow 500.
        assert_eq!(default_max_workers(2, 24 * GIB), 500);
        // A 1 GiB container on a big machine: its memory decides.
        assert_eq!(default_max_workers(64, GIB), 32);
        // Too little memory for one still runs one.
        assert_eq!(default_max_workers(1, 1 << 20), 1);
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24588120 kB\nMemFree:        20000000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24588120 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }

    #[tokio::test]
    async fn a_full_room_waits_until_a_place_is_freed_or_it_stops() {
        let room = std::sync::Arc::new(Room::new(2));
        let stopping = std::sync::Arc::new(AtomicBool::new(false));
        assert!(room.reserve(&stopping).await);
        assert!(room.reserve(&stopping).await);
        assert!(room.is_full());
        let (waiting_room, waiting_stop) = (room.clone(), stopping.clone());
        let third = tokio::spawn(async move { waiting_room.reserve(&waiting_stop).await });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        room.release();
        assert!(third.await.unwrap());
        let (waiting_room, waiting_stop) = (room.clone(), stopping.clone());
        let fourth = tokio::spawn(async move { waiting_room.reserve(&waiting_stop).await });
        stopping.store(true, Ordering::SeqCst);
        room.wake();
        assert!(!fourth.await.unwrap());
    }
}
