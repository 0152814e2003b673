//! Threads that spin on the CPU while a benchmark runs (`linkage-bench http --contend N`): a busy
//! day, made reproducible. On a shared machine a busy day is one whose neighbours take CPU time;
//! N spinning threads take N cores' worth at the benchmark's own priority, from the baseline
//! and the work measured alike. Their own CPU time is left out of the CPU figures (`CpuSpent`),
//! which stay the work's own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The name each spinning thread runs under (`/proc/self/task/*/comm`).
pub const SPINNER_NAME: &str = "bench-spinner";

/// The `/proc` stat files of the threads spinning now.
static SPINNERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn spinners() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    SPINNERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spinning threads; they stop (and are joined) when this is dropped.
pub struct Contention {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Contention {
    /// Starts `threads` spinning threads; returns once each is spinning and counted.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        // Built first, so that the threads already started stop if a later one cannot start.
        let mut contention = Self {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::with_capacity(threads),
        };
        let (started, running) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let (stop, started) = (contention.stop.clone(), started.clone());
            contention.threads.push(
                std::thread::Builder::new()
                    .name(SPINNER_NAME.into())
                    .spawn(move || spin(&stop, &started))?,
            );
        }
        // Only the threads hold senders now: a thread gone before it said so ends the wait.
        drop(started);
        for _ in 0..threads {
            let _ = running.recv();
        }
        Ok(contention)
    }
}

impl Drop for Contention {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Spins until `stop`, its stat file registered in `SPINNERS` meanwhile.
fn spin(stop: &AtomicBool, started: &std::sync::mpsc::Sender<()>) {
    // "<pid>/task/<tid>": this thread's own directory under /proc.
    let stat = std::fs::read_link("/proc/thread-self")
        .ok()
        .map(|own| PathBuf::from("/proc").join(own).join("stat"));
    if let Some(stat) = &stat {
        spinners().push(stat.clone());
    }
    let _ = started.send(());
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    if let Some(stat) = stat {
        spinners().retain(|s| *s != stat);
    }
}

/// utime + stime of the threads spinning now, in ticks.
pub(crate) fn spinner_ticks() -> u64 {
    spinners().iter().map(|stat| crate::stat_ticks(stat)).sum()
}

/// Threads of this process spinning now, by their name in `/proc/self/task/*/comm`.
pub fn spinning_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim() == SPINNER_NAME)
        })
        .count()
}
