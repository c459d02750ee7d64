//! The durable-write floor: what one `fdatasync` costs on the disk under test.

use hdrhistogram::Histogram;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `n` writes of 256 bytes to a file in a fresh temporary directory, each
/// made durable by `fdatasync`: their latencies, µs. Appends grow the file;
/// an `overwrite` goes over blocks written and synced beforehand, as the
/// node's log does in a reused file.
pub fn fdatasync_floor(n: usize, overwrite: bool) -> Histogram<u64> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = std::fs::File::create(dir.path().join("floor")).expect("create");
    if overwrite {
        file.write_all(&vec![0u8; n * 256]).expect("write");
        file.sync_all().expect("fsync");
    }
    let mut hist = super::load::histogram();
    for i in 0..n {
        let started = Instant::now();
        if overwrite {
            file.write_all_at(&[7u8; 256], (i * 256) as u64)
        } else {
            file.write_all(&[7u8; 256])
        }
        .expect("write");
        file.sync_data().expect("fdatasync");
        let _ = hist.record(started.elapsed().as_micros().max(1) as u64);
    }
    hist
}

/// An `fdatasync` every [`FsyncProbe::EVERY`] beside a run, on the same
/// disk, timed like the generator times a request: from when it was due.
/// A closed loop of syncs, or syncs taken before or after the run, miss the
/// moments the disk stops: a stall is one slow sync to them, but every
/// request due during it waits. This counts the stall as often as the
/// generator does.
pub struct FsyncProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Histogram<u64>>,
}

impl FsyncProbe {
    /// How often a sync is due.
    pub const EVERY: Duration = Duration::from_millis(5);

    /// Starts syncing 256-byte overwrites of a file in `dir` (a directory
    /// on the disk under test; the file is removed at [`FsyncProbe::stop`]).
    pub fn start(dir: &Path) -> FsyncProbe {
        const SLOTS: u64 = 1024;
        let path = dir.join("fsync-probe");
        let file = std::fs::File::create(&path).expect("create the probe's file");
        file.write_all_at(&[0u8; 256 * SLOTS as usize], 0)
            .expect("write");
        file.sync_all().expect("fsync");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fsync-probe".into())
            .spawn(move || {
                let mut hist = super::load::histogram();
                let started = Instant::now();
                let mut i = 0u64;
                while !stopping.load(Ordering::Relaxed) {
                    let due = started + FsyncProbe::EVERY * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    // A sync that fails ends the probe: its figure would lie.
                    if file.write_all_at(&[7u8; 256], (i % SLOTS) * 256).is_err()
                        || file.sync_data().is_err()
                    {
                        eprintln!("warning: the fsync probe stopped: its write failed");
                        break;
                    }
                    let _ = hist.record(due.elapsed().as_micros().max(1) as u64);
                    i += 1;
                }
                let _ = std::fs::remove_file(&path);
                hist
            })
            .expect("spawn the fsync probe");
        FsyncProbe { stop, thread }
    }

    /// Stops the probe: the latencies of its syncs from when each was due, µs.
    pub fn stop(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the fsync probe panicked")
    }
}
