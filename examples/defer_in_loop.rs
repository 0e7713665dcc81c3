//! The classic Go bug, on real files: `defer f.Close()` inside a loop keeps every file open
//! until the function returns. This program opens 10,000 temporary files three ways and
//! reports, for each, the peak number of open file descriptors and pending defers:
//!
//! 1. `go-style`: one function-wide `Scope`, a `defer` per file (what Go does);
//! 2. `try_for_each_scoped`: each iteration gets its own scope;
//! 3. `defer!`: a block guard inside the loop body.
//!
//! Usage: `cargo run --release --example defer_in_loop -- [--files N] [--limit-fds N]`
//!
//! `--limit-fds N` lowers the process's open-file limit, so that the Go-style version fails
//! with "Too many open files", as the Go program does, while the scoped ones pass. The program
//! exits non-zero if the scoped versions ever hold more than one file open at a time, or if the
//! Go-style version does not pile up.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use scoped_defer::{defer, scope, try_for_each_scoped};

/// How often the open descriptors are counted: counting reads a directory of up to `--files`
/// entries, so doing it every iteration would dominate the run.
const SAMPLE_EVERY: usize = 250;

struct Options {
    files: usize,
    limit_fds: Option<u64>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        files: 10_000,
        limit_fds: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let text = args.next().ok_or(format!("{name} needs a number"))?;
            text.parse()
                .map_err(|_| format!("{name}: not a number: {text}"))
        };
        match arg.as_str() {
            "--files" => options.files = value("--files")? as usize,
            "--limit-fds" => options.limit_fds = Some(value("--limit-fds")?),
            "-h" | "--help" => {
                return Err("usage: defer_in_loop [--files N] [--limit-fds N]".to_string());
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(options)
}

/// Counts this process's open file descriptors.
fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

#[cfg(unix)]
fn limit_open_files(limit: u64) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = libc::rlimit {
        rlim_cur: limit.min(current.rlim_max),
        rlim_max: current.rlim_max,
    };
    // SAFETY: `setrlimit` reads one `rlimit` through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn limit_open_files(_limit: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "--limit-fds needs a Unix system",
    ))
}

/// What one strategy did.
struct Report {
    name: &'static str,
    processed: usize,
    peak_open: usize,
    peak_pending: usize,
    elapsed: Duration,
    error: Option<io::Error>,
}

/// Tracks open files (our own count, which works everywhere, and the kernel's when available)
/// and the peak of both.
struct Tracker {
    baseline_fds: Option<usize>,
    open: Cell<usize>,
    peak_open: Cell<usize>,
    peak_fds: Cell<usize>,
    peak_pending: Cell<usize>,
}

impl Tracker {
    fn new() -> Self {
        Tracker {
            baseline_fds: open_fds(),
            open: Cell::new(0),
            peak_open: Cell::new(0),
            peak_fds: Cell::new(0),
            peak_pending: Cell::new(0),
        }
    }

    fn opened(&self, iteration: usize, pending: usize) {
        self.open.set(self.open.get() + 1);
        self.peak_open
            .set(self.peak_open.get().max(self.open.get()));
        self.peak_pending.set(self.peak_pending.get().max(pending));
        if iteration % SAMPLE_EVERY == SAMPLE_EVERY - 1 {
            self.sample();
        }
    }

    fn closed(&self) {
        self.open.set(self.open.get() - 1);
    }

    fn sample(&self) {
        if let (Some(base), Some(now)) = (self.baseline_fds, open_fds()) {
            self.peak_fds
                .set(self.peak_fds.get().max(now.saturating_sub(base)));
        }
    }

    /// What a strategy did, sampled once more now that it is done.
    fn report(
        &self,
        name: &'static str,
        processed: usize,
        start: Instant,
        error: Option<io::Error>,
    ) -> Report {
        self.sample();
        Report {
            name,
            processed,
            peak_open: self.peak(),
            peak_pending: self.peak_pending.get(),
            elapsed: start.elapsed(),
            error,
        }
    }

    /// Peak open files: the larger of the kernel's count (which cannot be read once the
    /// process is out of descriptors) and the program's own.
    fn peak(&self) -> usize {
        self.peak_fds.get().max(self.peak_open.get())
    }
}

fn read_one(mut file: &File) -> io::Result<usize> {
    let mut text = String::new();
    file.read_to_string(&mut text)
}

fn go_style(paths: &[PathBuf]) -> Report {
    let tracker = Tracker::new();
    let start = Instant::now();
    let mut processed = 0;
    let mut error = None;
    // One scope for the whole "function": every defer waits for its end, as Go's does.
    scope(|s| {
        for (i, path) in paths.iter().enumerate() {
            let file = match File::open(path) {
                Ok(file) => file,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            tracker.opened(i, s.len() + 1);
            if let Err(e) = read_one(&file) {
                error = Some(e);
                break;
            }
            let tracker = &tracker;
            defer!(s => { drop(file); tracker.closed(); });
            processed += 1;
        }
        tracker.sample(); // the peak: right before the function-wide scope ends
    });
    tracker.report(
        "go-style: one scope for the whole loop",
        processed,
        start,
        error,
    )
}

fn scoped_loop(paths: &[PathBuf]) -> Report {
    let tracker = Tracker::new();
    let start = Instant::now();
    let mut processed = 0;
    let mut error = None;
    let result = try_for_each_scoped(paths.iter().enumerate(), |s, (i, path)| {
        let file = File::open(path)?;
        tracker.opened(i, s.len() + 1);
        read_one(&file)?;
        let tracker = &tracker;
        defer!(s => { drop(file); tracker.closed(); });
        processed += 1;
        Ok(())
    });
    if let Err(e) = result {
        // The body's `io::Error`; these cleanups cannot fail, but a cleanup error would do too.
        error = Some(e.into_body_error().unwrap_or_else(io::Error::other));
    }
    tracker.report(
        "try_for_each_scoped: a scope per iteration",
        processed,
        start,
        error,
    )
}

fn block_guard(paths: &[PathBuf]) -> Report {
    let tracker = Tracker::new();
    let start = Instant::now();
    let mut processed = 0;
    let mut error = None;
    for (i, path) in paths.iter().enumerate() {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        tracker.opened(i, 1);
        defer! { tracker.closed(); }
        if let Err(e) = read_one(&file) {
            error = Some(e);
            break;
        }
        processed += 1;
        // `file` closes here, then the guard runs: both at the end of this iteration.
    }
    tracker.report("defer! in the loop body", processed, start, error)
}

fn make_files(dir: &Path, count: usize) -> io::Result<Vec<PathBuf>> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("data-{i}.txt"));
            File::create(&path)?.write_all(format!("record {i}\n").as_bytes())?;
            Ok(path)
        })
        .collect()
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let paths = make_files(dir.path(), options.files).expect("create the input files");
    if let Some(limit) = options.limit_fds {
        if let Err(e) = limit_open_files(limit) {
            eprintln!("cannot lower the open-file limit: {e}");
            return ExitCode::from(2);
        }
    }

    println!(
        "Opening {} files three ways{}; peak open files counted {}.\n",
        options.files,
        options
            .limit_fds
            .map_or(String::new(), |n| format!(" with at most {n} open files")),
        if open_fds().is_some() {
            "in /proc/self/fd"
        } else {
            "by the program"
        },
    );
    println!(
        "{:<42} {:>9} {:>10} {:>13} {:>9}",
        "strategy", "files", "peak open", "peak pending", "time"
    );
    let reports = [go_style(&paths), scoped_loop(&paths), block_guard(&paths)];
    for r in &reports {
        println!(
            "{:<42} {:>9} {:>10} {:>13} {:>7.1}ms{}",
            r.name,
            r.processed,
            r.peak_open,
            r.peak_pending,
            r.elapsed.as_secs_f64() * 1e3,
            r.error
                .as_ref()
                .map_or(String::new(), |e| format!("  FAILED: {e}")),
        );
    }

    let [go, looped, guarded] = &reports;
    let mut failures = Vec::new();
    for scoped in [looped, guarded] {
        if scoped.error.is_some() || scoped.processed != options.files || scoped.peak_open > 1 {
            failures.push(format!(
                "{} should process every file holding at most one open",
                scoped.name
            ));
        }
    }
    let piled_up = go.processed == options.files && go.peak_open >= options.files;
    let hit_limit = go
        .error
        .as_ref()
        .is_some_and(|e| e.raw_os_error() == Some(24));
    if !(piled_up || hit_limit) {
        failures.push("the go-style loop should hold every file open until its end".to_string());
    }
    println!();
    if failures.is_empty() {
        println!(
            "The go-style loop held {} files open at once{}; the scoped loops held 1.",
            go.peak_open,
            if hit_limit {
                " and ran out of file descriptors"
            } else {
                ""
            },
        );
        ExitCode::SUCCESS
    } else {
        for failure in failures {
            eprintln!("UNEXPECTED: {failure}");
        }
        ExitCode::FAILURE
    }
}
