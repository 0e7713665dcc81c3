//! Parallel scoped loops on rayon: per-item cleanups on the worker, the first error stops new
//! items, concurrent failures lose nothing, panics neither skip nor repeat a cleanup.

#![cfg(feature = "rayon")]

mod common;

use std::fs::File;
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Barrier, Mutex};

use common::{catch_expected, panic_message, quiet_panics};
use rayon::prelude::*;
use scoped_defer::{
    ConcurrentFailures, ParallelIteratorExt, Scope, ScopeError, Stats, par_for_each_scoped,
    par_for_each_scoped_in, par_try_for_each_scoped, par_try_for_each_scoped_in,
};

/// Runs `test` on rayon's global pool, then on a pool of 4 threads, with the pool's size.
fn on_both_pools(test: impl Fn(usize) + Sync) {
    test(rayon::current_num_threads());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| test(rayon::current_num_threads()));
}

/// Open file descriptors of this process.
#[cfg(target_os = "linux")]
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
#[cfg(target_os = "linux")]
#[cfg_attr(miri, ignore)] // files
fn every_item_closes_its_files_before_the_next() {
    on_both_pools(|threads| {
        let dir = tempfile::tempdir().unwrap();
        let before = open_fds();
        let peak = AtomicUsize::new(0);
        let result = (0..10_000).into_par_iter().try_for_each_scoped(|s, i| {
            let file = s.hold_fallible(File::create(dir.path().join(format!("{i}")))?, |mut f| {
                f.flush()
            });
            writeln!(file, "item {i}")?;
            if i % 16 == 0 {
                peak.fetch_max(open_fds(), SeqCst);
            }
            Ok::<_, io::Error>(())
        });
        result.unwrap();
        // One file per item, one item per thread at a time; the sampling's own directory
        // handle and other tests' files are the constant.
        let peak = peak.load(SeqCst) - before;
        assert!(
            peak <= threads + 8,
            "{peak} open at once on {threads} threads"
        );
        assert_eq!(
            open_fds(),
            before,
            "every file is closed when the call returns"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 10_000);
    });
}

/// The first item of every worker, started together; the first of all (seq 0) fails, and a
/// cleanup of it holds it until the other workers are done and look for their next item, so
/// that rayon's own short-circuit cannot stand in for the crate's stop flag.
struct FirstItems {
    threads: usize,
    started: AtomicUsize,
    barrier: Barrier,
    observed: AtomicBool,
    others_done: AtomicUsize,
}

impl FirstItems {
    fn new(threads: usize) -> Self {
        FirstItems {
            threads,
            started: AtomicUsize::new(0),
            barrier: Barrier::new(threads),
            observed: AtomicBool::new(false),
            others_done: AtomicUsize::new(0),
        }
    }

    /// Starts an item: `Some(true)` for the one that must fail, after registering the cleanup
    /// that holds it; `Some(false)` for the others, once the failure is observed; `None` for
    /// an item that should never have started (it is counted).
    fn start<'a>(&'a self, s: &Scope<'a>) -> Option<bool> {
        let seq = self.started.fetch_add(1, SeqCst);
        if seq >= self.threads {
            return None;
        }
        self.barrier.wait();
        if seq == 0 {
            // Runs once the failure is observed: releases the others, then waits for them.
            s.defer(|| {
                self.observed.store(true, SeqCst);
                while self.others_done.load(SeqCst) < self.threads - 1 {
                    std::thread::yield_now();
                }
            });
            return Some(true);
        }
        while !self.observed.load(SeqCst) {
            std::thread::yield_now();
        }
        Some(false)
    }

    /// Ends an item that did not fail.
    fn done(&self) {
        self.others_done.fetch_add(1, SeqCst);
    }

    fn started(&self) -> usize {
        self.started.load(SeqCst)
    }
}

#[test]
fn the_first_error_stops_new_items() {
    on_both_pools(|threads| {
        let first = FirstItems::new(threads);
        let closed = AtomicUsize::new(0);
        let result = par_try_for_each_scoped(0..10_000, |s, _| {
            s.defer(|| {
                closed.fetch_add(1, SeqCst);
            });
            match first.start(s) {
                Some(true) => Err("the first item failed"),
                Some(false) => {
                    first.done();
                    Ok(())
                }
                None => Err("an item started after the error was observed"),
            }
        });
        let error = result.unwrap_err();
        assert_eq!(error.body_error(), Some(&"the first item failed"));
        assert!(
            error.cleanup_errors().is_none(),
            "nothing failed alongside it"
        );
        assert_eq!(first.started(), threads, "only the items already running");
        assert_eq!(
            closed.load(SeqCst),
            threads,
            "and each of them closed what it opened"
        );
    });
}

#[test]
fn concurrent_failures_keep_their_cleanup_errors_and_are_counted() {
    on_both_pools(|threads| {
        let started = AtomicUsize::new(0);
        let barrier = Barrier::new(threads);
        let result = par_try_for_each_scoped(0..10_000, |s, _| {
            let seq = started.fetch_add(1, SeqCst);
            s.defer_fallible(move || Err(format!("closing {seq} failed")));
            barrier.wait(); // every worker's first item fails at the same time
            Err(seq)
        });
        let Err(ScopeError::Body { error, suppressed }) = result else {
            panic!("a body error is primary");
        };
        let errors: Vec<String> = suppressed.unwrap().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), threads + 1, "{errors:?}");
        assert_eq!(
            errors[0],
            format!("closing {error} failed"),
            "its own cleanup first"
        );
        assert!(
            errors[1..threads].iter().all(|e| e.starts_with("closing ")),
            "{errors:?}"
        );
        let last = &errors[threads];
        assert!(
            last.starts_with(&format!("{} more item(s) failed", threads - 1)),
            "{last}"
        );
        assert_eq!(started.load(SeqCst), threads);
    });
}

#[test]
fn counted_failures_can_be_read_back() {
    let barrier = Barrier::new(4);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let result = pool.install(|| {
        par_try_for_each_scoped(0..4, |_, i| {
            barrier.wait();
            Err(i)
        })
    });
    let errors = result.unwrap_err();
    let suppressed = errors.cleanup_errors().expect("the count is among them");
    let count = suppressed
        .first()
        .downcast_ref::<ConcurrentFailures>()
        .unwrap();
    assert_eq!(count.count(), 3);
}

#[test]
fn a_failing_cleanup_alone_is_the_error() {
    on_both_pools(|_| {
        let result = par_try_for_each_scoped(0..100, |s, i| {
            s.defer_fallible(move || {
                if i == 7 {
                    Err("closing 7 failed")
                } else {
                    Ok(())
                }
            });
            Ok::<(), io::Error>(())
        });
        match result {
            Err(ScopeError::Cleanup(errors)) => {
                assert_eq!(errors.first().to_string(), "closing 7 failed");
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn panics_run_every_cleanup_once_then_resume() {
    quiet_panics();
    on_both_pools(|_| {
        let registered = AtomicUsize::new(0);
        let ran = AtomicUsize::new(0);
        let message = panic_message(|| {
            par_for_each_scoped(0..1_000, |s, i| {
                for _ in 0..3 {
                    registered.fetch_add(1, SeqCst);
                    s.defer(|| {
                        ran.fetch_add(1, SeqCst);
                    });
                }
                if i == 500 {
                    panic!("item 500 panicked");
                }
            })
        });
        assert_eq!(message.as_deref(), Some("item 500 panicked"));
        assert_eq!(
            ran.load(SeqCst),
            registered.load(SeqCst),
            "every started item cleaned up"
        );
    });
}

#[test]
fn a_panicking_cleanup_does_not_skip_the_others() {
    quiet_panics();
    on_both_pools(|_| {
        let ran = AtomicUsize::new(0);
        let result = catch_expected(|| {
            par_try_for_each_scoped(0..100, |s, i| {
                s.defer(|| {
                    ran.fetch_add(1, SeqCst);
                });
                if i == 50 {
                    s.defer(|| panic!("a cleanup panicked"));
                }
                s.defer(|| {
                    ran.fetch_add(1, SeqCst);
                });
                Ok::<(), io::Error>(())
            })
        });
        let payload = result.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a cleanup panicked"));
        let ran = ran.load(SeqCst);
        assert!(
            ran % 2 == 0 && ran >= 2,
            "both cleanups of every started item ran: {ran}"
        );
    });
}

#[test]
fn closures_need_not_be_send() {
    let total = &Mutex::new(0);
    par_for_each_scoped(0..100, |s, i| {
        let local = Rc::new(i); // not Send: it never leaves this worker
        s.defer(move || *total.lock().unwrap() += *local);
    });
    assert_eq!(*total.lock().unwrap(), (0..100).sum::<i32>());
}

#[test]
fn stats_add_up_over_workers() {
    on_both_pools(|_| {
        let mut stats = Stats::default();
        let (pile, once) = (line!() + 3, line!() + 5);
        par_for_each_scoped_in(&mut stats, 0..100, |s, i| {
            for _ in 0..i % 5 {
                s.defer(|| ());
            }
            s.defer(|| ());
        });
        let expected: u64 = (0..100).map(|i| i % 5).sum();
        assert_eq!(
            (stats.registered, stats.ran),
            (expected + 100, expected + 100)
        );
        assert_eq!(stats.high_water, 5, "the largest item, not a sum");
        assert_eq!(stats.pending, 0);
        // The sites of all workers, merged by line: the largest item's composition.
        let sites: Vec<_> = stats
            .sites()
            .iter()
            .map(|s| (s.location.line(), s.registered, s.pending_at_high_water))
            .collect();
        assert_eq!(sites, [(pile, expected, 4), (once, 100, 1)]);

        // Every kind of count adds up: dismissed, taken, refused, spilled and its heap.
        let mut stats = Stats::default();
        par_for_each_scoped_in(&mut stats, 0..40, |s, _| {
            s.defer(|| ());
            s.dismiss();
            s.defer(|| ());
            drop(s.take());
            for _ in 0..20 {
                s.defer(|| ()); // past the inline slots (which `take` just gave away)
            }
            s.set_limit(0);
            assert!(s.try_defer(|| ()).is_err());
            s.set_limit(usize::MAX); // the worker's scope, and its limit, serve its next item
        });
        assert_eq!((stats.dismissed, stats.taken, stats.refused), (40, 40, 40));
        assert_eq!(stats.registered, 40 * 22);
        assert!(stats.spilled && stats.heap_bytes > 0, "{stats:?}");

        let mut stats = Stats::default();
        let result = par_try_for_each_scoped_in(&mut stats, 0..10, |s, _| {
            s.defer_fallible(|| Err("closing failed"));
            Ok::<(), io::Error>(())
        });
        assert!(result.is_err());
        assert!(stats.errors >= 1 && stats.errors == stats.ran, "{stats:?}");
    });
}

#[test]
fn stats_are_added_up_when_the_loop_panics_too() {
    quiet_panics();
    let mut stats = Stats::default();
    let result = catch_expected(|| {
        par_for_each_scoped_in(&mut stats, 0..1, |s, _| {
            s.defer(|| panic!("a cleanup panicked"));
            s.defer(|| ());
        })
    });
    assert!(result.is_err());
    assert_eq!((stats.ran, stats.panics), (2, 1), "{stats:?}");
}

#[test]
fn a_panic_stops_new_items() {
    quiet_panics();
    on_both_pools(|threads| {
        let first = FirstItems::new(threads);
        let result = catch_expected(|| {
            par_for_each_scoped(0..10_000, |s, _| {
                if first.start(s) == Some(true) {
                    panic!("the first item panicked");
                }
                first.done();
            })
        });
        let payload = result.unwrap_err();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"the first item panicked")
        );
        assert_eq!(first.started(), threads, "only the items already running");
    });
}
