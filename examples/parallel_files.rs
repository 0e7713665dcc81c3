//! Go's `errgroup` scenario on real files, in parallel on rayon: write 10,000 files, each
//! synced and closed by a deferred cleanup, and report the peak number of open files for
//! three versions:
//!
//! 1. `naive`: the cleanups of every item collected in one shared stack that runs after the
//!    parallel loop (Go's function-wide `defer` around an errgroup): every file stays open;
//! 2. `rayon try_for_each`: the cleanup written by hand at the end of each item; the peak is
//!    right, but an early `?` skips the `sync_all`, and `File`'s drop discards close errors;
//! 3. `par_try_for_each_scoped`: each item's cleanups run on its worker before the next item,
//!    and a failed `sync_all` becomes the loop's error.
//!
//! Usage: `cargo run --release --example parallel_files --features rayon -- [--files N]`.
//! Exits non-zero if the scoped version ever holds more files open than there are workers
//! (plus a small constant), or if the naive version does not pile up.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Instant;

use rayon::prelude::*;
use scoped_defer::ParallelIteratorExt;

/// How often an item counts the process's open descriptors.
const SAMPLE_EVERY: usize = 250;

/// Open files: the program's own count, and the kernel's (`/proc/self/fd`) where available.
struct Tracker {
    baseline: Option<usize>,
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Tracker {
    fn new() -> Self {
        Tracker {
            baseline: open_fds(),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    fn opened(&self, item: usize) {
        let open = self.open.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(open, SeqCst);
        if item % SAMPLE_EVERY == 0 {
            if let (Some(base), Some(now)) = (self.baseline, open_fds()) {
                self.peak.fetch_max(now.saturating_sub(base), SeqCst);
            }
        }
    }

    fn closed(&self) {
        self.open.fetch_sub(1, SeqCst);
    }

    fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}

fn create(dir: &Path, item: usize) -> io::Result<File> {
    File::create(dir.join(format!("out-{item}.txt")))
}

/// A deferred cleanup of the naive version.
type Cleanup<'a> = Box<dyn FnOnce() -> io::Result<()> + Send + 'a>;

/// Every item's cleanup pushed onto one stack shared by the whole loop.
fn naive(dir: &Path, items: usize, tracker: &Tracker) -> io::Result<()> {
    let cleanups: Mutex<Vec<Cleanup<'_>>> = Mutex::new(Vec::new());
    let result = (0..items).into_par_iter().try_for_each(|item| {
        let mut file = create(dir, item)?;
        tracker.opened(item);
        writeln!(file, "record {item}")?;
        cleanups.lock().unwrap().push(Box::new(move || {
            let synced = file.sync_all();
            drop(file);
            tracker.closed();
            synced
        }));
        Ok(())
    });
    let mut cleanups = cleanups.into_inner().unwrap();
    while let Some(cleanup) = cleanups.pop() {
        cleanup()?;
    }
    result
}

/// Plain rayon: the cleanup written by hand where the item ends.
fn plain_rayon(dir: &Path, items: usize, tracker: &Tracker) -> io::Result<()> {
    (0..items).into_par_iter().try_for_each(|item| {
        let mut file = create(dir, item)?;
        tracker.opened(item);
        writeln!(file, "record {item}")?; // an error here skips the sync below
        file.sync_all()?;
        drop(file);
        tracker.closed();
        Ok(())
    })
}

/// Each item's cleanups run on its worker before the next item; errors are kept.
fn scoped(dir: &Path, items: usize, tracker: &Tracker) -> io::Result<()> {
    (0..items).into_par_iter().try_for_each_scoped(|s, item| {
        let file = s.hold_fallible(create(dir, item)?, |file| {
            let synced = file.sync_all();
            drop(file);
            tracker.closed();
            synced
        });
        tracker.opened(item);
        writeln!(file, "record {item}")?;
        Ok::<_, io::Error>(())
    })?;
    Ok(())
}

fn parse_files() -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    let mut files = 10_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--files" => {
                files = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--files needs a number")?;
            }
            other => return Err(format!("unknown argument {other}; usage: [--files N]")),
        }
    }
    Ok(files)
}

type Version = fn(&Path, usize, &Tracker) -> io::Result<()>;

fn main() -> ExitCode {
    let files = match parse_files() {
        Ok(files) => files,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let threads = rayon::current_num_threads();
    println!("Writing {files} files on {threads} rayon threads, three ways.\n");
    println!(
        "{:<28} {:>10} {:>9}  result",
        "version", "peak open", "time"
    );
    let versions: [(&str, Version); 3] = [
        ("naive shared stack", naive),
        ("rayon try_for_each", plain_rayon),
        ("par_try_for_each_scoped", scoped),
    ];
    let mut peaks = Vec::new();
    for (name, version) in versions {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let tracker = Tracker::new();
        let start = Instant::now();
        let result = version(dir.path(), files, &tracker);
        let written = count_files(dir.path());
        println!(
            "{name:<28} {:>10} {:>7.1}ms  {}",
            tracker.peak(),
            start.elapsed().as_secs_f64() * 1e3,
            match &result {
                Ok(()) => format!("ok, {written} files"),
                Err(e) => format!("FAILED: {e}"),
            }
        );
        peaks.push((tracker.peak(), result.is_ok() && written == files));
    }

    let [(naive_peak, _), _, (scoped_peak, scoped_ok)] = peaks[..] else {
        unreachable!("three versions")
    };
    let mut failures = Vec::new();
    if !scoped_ok || scoped_peak > threads + 8 {
        failures.push(format!(
            "the scoped version should write every file with at most {threads} (+8) open"
        ));
    }
    if naive_peak < files.min(1_000) {
        failures.push("the naive version should pile up".to_string());
    }
    println!(
        "\nThe naive stack held {naive_peak} files open at once; the scoped loop held \
         {scoped_peak}, one per worker at most."
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in failures {
            eprintln!("FAILED: {failure}");
        }
        ExitCode::FAILURE
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().is_file())
            .count()
    })
}
