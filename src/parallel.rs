//! Parallel loops on rayon where every item gets its own [`Scope`]: Go's `errgroup`, with a
//! `defer` stack per task and no cleanup lost.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use rayon::iter::{IntoParallelIterator, ParallelIterator};

use crate::deferred::Outcome;
use crate::ending::{body_of, combine};
use crate::error::{BoxError, CleanupErrors, ScopeError};
use crate::{Scope, Stats};

/// Calls `body` for every item, in parallel on rayon's current pool, each with a scope whose
/// closures run when that item's body returns, on the worker thread that ran it.
///
/// A thread therefore has one item open at a time, unless an item's body itself waits on rayon
/// (a nested parallel iterator, `join` or `scope`): while it waits, rayon may run other items of
/// this loop on the same thread, each with its own scope, open until its own body returns, so
/// one thread can have several items open at once.
///
/// rayon hands the items out in batches (its splits of the iterator), and each batch reuses one
/// scope from item to item, so once that scope has grown to its largest item, the rest of the
/// batch allocates nothing. What an item sets on its scope (a limit, an error handler) may
/// therefore stay for later items of its batch, but not for the thread's other batches, and
/// which items share a batch is rayon's choice: set it in every item that needs it. Closures
/// need not be `Send`: a scope never leaves its worker. What they borrow from outside is shared
/// by the workers, which is why `body` is `Sync`.
///
/// # Panics
///
/// If an item's body panics, that item's closures run at once; items not yet started are
/// skipped, items already running finish and run their closures, and the first panic then
/// resumes on the caller. Errors of fallible closures panic like that too (the scopes have no
/// handler): use [`par_try_for_each_scoped`] to get them back.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use scoped_defer::par_for_each_scoped;
///
/// let open = AtomicUsize::new(0);
/// par_for_each_scoped(0..1000, |s, _item| {
///     open.fetch_add(1, Ordering::SeqCst); // "open a file"
///     s.defer(|| {
///         open.fetch_sub(1, Ordering::SeqCst); // closed when this item ends
///     });
/// });
/// assert_eq!(open.load(Ordering::SeqCst), 0);
/// ```
pub fn par_for_each_scoped<'env, I>(
    items: I,
    body: impl Fn(&mut Scope<'env>, I::Item) + Sync + Send,
) where
    I: IntoParallelIterator,
{
    run(None, items, body);
}

/// [`par_for_each_scoped`], adding to `stats` what the workers' scopes did: the counts are
/// summed, and `high_water` is the most closures one item left pending. The stats are added
/// when the loop ends, by a panic too.
///
/// ```
/// use scoped_defer::{par_for_each_scoped_in, Stats};
///
/// let mut stats = Stats::default();
/// par_for_each_scoped_in(&mut stats, 0..100, |s, _| {
///     s.defer(|| ());
///     s.defer(|| ());
/// });
/// assert_eq!((stats.registered, stats.ran, stats.high_water), (200, 200, 2));
/// ```
pub fn par_for_each_scoped_in<'env, I>(
    stats: &mut Stats,
    items: I,
    body: impl Fn(&mut Scope<'env>, I::Item) + Sync + Send,
) where
    I: IntoParallelIterator,
{
    let total = AddedOnExit::new(stats);
    run(Some(&total.stats), items, body);
}

/// Like [`par_for_each_scoped`], but stops at the first failed item, like Go's `errgroup`:
/// one whose body returned `Err`, or whose fallible cleanups failed. No item starts once the
/// failure is observed; items already running finish and run their closures.
///
/// # Errors
///
/// The first failure observed, as [`try_for_each_scoped`](crate::try_for_each_scoped) would
/// report it: [`ScopeError::Body`] with the failing item's cleanup errors as suppressed, or
/// [`ScopeError::Cleanup`]. Items that failed at the same time lose nothing in silence:
///
/// - their cleanup errors are added to the suppressed ones (or to the cleanup errors), after
///   the first item's own;
/// - their body errors, of the caller's type `E`, cannot be stored there; they are dropped,
///   and counted by a [`ConcurrentFailures`] placed last among the cleanup errors.
///
/// # Panics
///
/// As [`par_for_each_scoped`], for a panic in a body or a cleanup.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use scoped_defer::par_try_for_each_scoped;
///
/// let closed = AtomicUsize::new(0);
/// let result = par_try_for_each_scoped(0..100, |s, i| {
///     s.defer(|| {
///         closed.fetch_add(1, Ordering::SeqCst);
///     });
///     if i == 42 { Err("item 42 failed") } else { Ok(()) }
/// });
/// assert_eq!(result.unwrap_err().body_error(), Some(&"item 42 failed"));
/// // Every item that started closed what it opened, the failing one included.
/// assert!(closed.load(Ordering::SeqCst) >= 1);
/// ```
pub fn par_try_for_each_scoped<'env, I, E>(
    items: I,
    body: impl Fn(&mut Scope<'env>, I::Item) -> Result<(), E> + Sync + Send,
) -> Result<(), ScopeError<E>>
where
    I: IntoParallelIterator,
    E: Send,
{
    try_run(None, items, body)
}

/// [`par_try_for_each_scoped`], adding to `stats` what the workers' scopes did, as
/// [`par_for_each_scoped_in`] does.
///
/// # Errors
///
/// As [`par_try_for_each_scoped`].
///
/// ```
/// use scoped_defer::{par_try_for_each_scoped_in, Stats};
///
/// let mut stats = Stats::default();
/// let result = par_try_for_each_scoped_in(&mut stats, 0..10, |s, _| {
///     s.defer_fallible(|| Ok::<(), &str>(()));
///     Ok::<(), &str>(())
/// });
/// assert!(result.is_ok());
/// assert_eq!(stats.ran, 10);
/// ```
pub fn par_try_for_each_scoped_in<'env, I, E>(
    stats: &mut Stats,
    items: I,
    body: impl Fn(&mut Scope<'env>, I::Item) -> Result<(), E> + Sync + Send,
) -> Result<(), ScopeError<E>>
where
    I: IntoParallelIterator,
    E: Send,
{
    let total = AddedOnExit::new(stats);
    try_run(Some(&total.stats), items, body)
}

/// Method forms of [`par_for_each_scoped`] and [`par_try_for_each_scoped`] for every
/// parallel iterator, so that parallel code reads like the sequential
/// [`IteratorExt`](crate::IteratorExt).
///
/// ```
/// use rayon::prelude::*;
/// use scoped_defer::ParallelIteratorExt;
///
/// let names = vec!["a", "b", "c"];
/// let result = names.par_iter().try_for_each_scoped(|s, name| {
///     s.defer(move || println!("closing {name}"));
///     Ok::<(), std::io::Error>(())
/// });
/// assert!(result.is_ok());
/// ```
pub trait ParallelIteratorExt: ParallelIterator {
    /// See [`par_for_each_scoped`].
    fn for_each_scoped<'env>(self, body: impl Fn(&mut Scope<'env>, Self::Item) + Sync + Send) {
        par_for_each_scoped(self, body);
    }

    /// See [`par_try_for_each_scoped`].
    ///
    /// # Errors
    ///
    /// As [`par_try_for_each_scoped`].
    fn try_for_each_scoped<'env, E: Send>(
        self,
        body: impl Fn(&mut Scope<'env>, Self::Item) -> Result<(), E> + Sync + Send,
    ) -> Result<(), ScopeError<E>> {
        par_try_for_each_scoped(self, body)
    }
}

impl<I: ParallelIterator> ParallelIteratorExt for I {}

/// Among the cleanup errors of a parallel loop's result: how many other items failed at the
/// same time as the first one. Their body errors were dropped (they are of the caller's
/// type, which the cleanup errors cannot hold); their cleanups ran, and their cleanup errors
/// come before this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{count} more item(s) failed at the same time; their errors were dropped after their \
     cleanups ran"
)]
pub struct ConcurrentFailures {
    count: usize,
}

impl ConcurrentFailures {
    /// The number of items, besides the first, whose body failed.
    #[must_use]
    pub fn count(&self) -> usize {
        self.count
    }
}

/// What the workers of one loop share.
struct Shared<'s, E> {
    /// Set when the first failure (or panic) is observed: no item starts after it.
    stop: AtomicBool,
    failures: Mutex<Failures<E>>,
    stats: Option<&'s Mutex<Stats>>,
}

/// The failures observed so far.
struct Failures<E> {
    first: Option<ScopeError<E>>,
    /// Cleanup errors of the other failed items.
    later_errors: Vec<BoxError>,
    /// Other items whose body failed.
    later_failed: usize,
}

impl<'s, E> Shared<'s, E> {
    fn new(stats: Option<&'s Mutex<Stats>>) -> Self {
        Shared {
            stop: AtomicBool::new(false),
            failures: Mutex::new(Failures {
                first: None,
                later_errors: Vec::new(),
                later_failed: 0,
            }),
            stats,
        }
    }

    /// Whether new items may start.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops new items; true for the first caller.
    fn stop_first(&self) -> bool {
        !self.stop.swap(true, Ordering::SeqCst)
    }

    fn record(&self, error: ScopeError<E>, first: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if first {
            failures.first = Some(error);
            return;
        }
        let errors = match error {
            ScopeError::Body { suppressed, .. } => {
                failures.later_failed += 1;
                suppressed
            }
            ScopeError::Cleanup(errors) => Some(errors),
        };
        failures.later_errors.extend(errors.into_iter().flatten());
    }

    /// The loop's result: the first failure, with what the others left.
    fn into_result(self) -> Result<(), ScopeError<E>> {
        let Failures {
            first,
            mut later_errors,
            later_failed,
        } = self
            .failures
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(first) = first else {
            return Ok(());
        };
        if later_failed > 0 {
            later_errors.push(Box::new(ConcurrentFailures {
                count: later_failed,
            }));
        }
        let mut with_later = |errors: Option<CleanupErrors>| {
            let mut all = errors.map(CleanupErrors::into_vec).unwrap_or_default();
            all.append(&mut later_errors);
            CleanupErrors::from_vec(all)
        };
        Err(match first {
            ScopeError::Body { error, suppressed } => ScopeError::Body {
                error,
                suppressed: with_later(suppressed),
            },
            ScopeError::Cleanup(errors) => {
                ScopeError::Cleanup(with_later(Some(errors)).expect("not empty"))
            }
        })
    }
}

/// The scope of one batch of items (one of rayon's splits, made by `for_each_init`), reused from
/// item to item; adds its stats to the loop's when the batch is done.
struct Worker<'s, 'env> {
    scope: Scope<'env>,
    stats: Option<&'s Mutex<Stats>>,
}

impl<'s, 'env> Worker<'s, 'env> {
    fn new(stats: Option<&'s Mutex<Stats>>) -> Self {
        let mut scope = Scope::new();
        if stats.is_some() {
            scope.track_stats();
        }
        Worker { scope, stats }
    }
}

impl Drop for Worker<'_, '_> {
    fn drop(&mut self) {
        if let (Some(total), Some(stats)) = (self.stats, self.scope.stats()) {
            total
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .merge(&stats);
        }
    }
}

/// Sets the stop flag if the item's body or cleanups panic.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs an item's body on its scope, as the sequential loops do; a panic of the body sets
/// `stop` before the item's cleanups run, so that no item starts meanwhile.
fn item_body<'env, R>(
    stop: &AtomicBool,
    scope: &mut Scope<'env>,
    body: impl FnOnce(&mut Scope<'env>) -> R,
) -> R {
    body_of(scope, |scope| {
        let _stop = StopOnPanic(stop);
        body(scope)
    })
}

fn run<'env, I>(
    stats: Option<&Mutex<Stats>>,
    items: I,
    body: impl Fn(&mut Scope<'env>, I::Item) + Sync + Send,
) where
    I: IntoParallelIterator,
{
    let stop = AtomicBool::new(false);
    items.into_par_iter().for_each_init(
        || Worker::new(stats),
        |worker, item| {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let _stop = StopOnPanic(&stop); // for the cleanups' panics
            let scope = &mut worker.scope;
            item_body(&stop, scope, |scope| body(scope, item));
            scope.run_now();
        },
    );
}

fn try_run<'env, I, E>(
    stats: Option<&Mutex<Stats>>,
    items: I,
    body: impl Fn(&mut Scope<'env>, I::Item) -> Result<(), E> + Sync + Send,
) -> Result<(), ScopeError<E>>
where
    I: IntoParallelIterator,
    E: Send,
{
    let shared = Shared::new(stats);
    // The `Err(())` of an item only stops rayon's splitting; what failed is in `shared`.
    let _ = items.into_par_iter().try_for_each_init(
        || Worker::new(shared.stats),
        |worker, item| {
            if shared.stopped() {
                return Err(());
            }
            let _stop = StopOnPanic(&shared.stop); // for the cleanups' panics
            let scope = &mut worker.scope;
            let body = item_body(&shared.stop, scope, |scope| body(scope, item));
            // Observed as soon as the body returns it: no item starts while this one's
            // cleanups run.
            let first_body_error = body.is_err() && shared.stop_first();
            let cleanup = scope.end_with(Outcome::of(&body));
            match combine(body, cleanup) {
                Ok(()) => Ok(()),
                Err(error) => {
                    let first = match error {
                        ScopeError::Body { .. } => first_body_error,
                        ScopeError::Cleanup(_) => shared.stop_first(),
                    };
                    shared.record(error, first);
                    Err(())
                }
            }
        },
    );
    shared.into_result()
}

/// The workers' stats, added to the caller's when the loop ends, by a panic too (the caller
/// may catch it and look).
struct AddedOnExit<'a> {
    stats: Mutex<Stats>,
    into: &'a mut Stats,
}

impl<'a> AddedOnExit<'a> {
    fn new(into: &'a mut Stats) -> Self {
        AddedOnExit {
            stats: Mutex::new(Stats::default()),
            into,
        }
    }
}

impl Drop for AddedOnExit<'_> {
    fn drop(&mut self) {
        let stats = self.stats.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.into.merge(stats);
    }
}
