//! Concurrent async loops where every item gets its own [`AsyncScope`]: Go's `errgroup` with
//! `SetLimit`, Python's `asyncio.TaskGroup`, with every started item's cleanups awaited.
//!
//! Each item is a future that owns its scope. Cancelling an item drops only its body's future;
//! the item then awaits its scope's cleanups as after a failure, and the loop waits for that.
//! The items are polled by the loop itself, in the caller's task, each with a waker of its own
//! so that only the items that were woken are polled again.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::convert::Infallible;
use core::future::{Future, poll_fn};
use core::mem;
use core::panic::Location;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Mutex, PoisonError};
use std::task::Wake;

use crate::arena::{Payload, drop_payload, drop_quietly};
use crate::async_scope::AsyncScope;
use crate::deferred::{DrainContext, Outcome};
use crate::ending::unreported;
use crate::error::{BoxError, CleanupErrors, ScopeError};
use crate::report::{self, ReportKind};

/// Calls `body` for every item, at most `limit` items at a time, each with an [`AsyncScope`]
/// of its own whose cleanups are awaited when that item's body ends; returns once every item
/// has ended. [`try_for_each_concurrent_scoped`] without errors: see it for the details.
///
/// # Panics
///
/// If `limit` is 0. With the first panic of a body, a cleanup or the iterator, once every
/// started item's cleanups have been awaited: the first panic stops new items and cancels the
/// items in flight, as an error does in [`try_for_each_concurrent_scoped`]. If a fallible
/// cleanup failed, since nothing can return its error: use [`try_for_each_concurrent_scoped`]
/// for those.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use scoped_defer::for_each_concurrent_scoped;
///
/// let open = AtomicUsize::new(0);
/// let closed = std::sync::Arc::new(AtomicUsize::new(0));
/// for_each_concurrent_scoped(0..100, 10, async |s, _item| {
///     open.fetch_add(1, Ordering::Relaxed); // the body borrows from the caller
///     let closed = std::sync::Arc::clone(&closed);
///     s.defer_async(async move {
///         tokio::task::yield_now().await;
///         closed.fetch_add(1, Ordering::Relaxed);
///     });
///     tokio::task::yield_now().await;
/// })
/// .await;
/// assert_eq!((open.into_inner(), closed.load(Ordering::Relaxed)), (100, 100));
/// # }
/// ```
pub async fn for_each_concurrent_scoped<I>(
    items: I,
    limit: usize,
    body: impl AsyncFn(&AsyncScope, I::Item),
) where
    I: IntoIterator,
{
    run(items, limit, &body, |()| Ok::<(), Infallible>(()))
        .await
        .finish_without_errors();
}

/// Calls `body` for every item, at most `limit` items at a time, each with an [`AsyncScope`]
/// of its own whose cleanups are awaited when that item's body ends; stops at the first
/// failure and returns once every started item's cleanups have been awaited. Go's `errgroup`
/// with `SetLimit`; Python's `asyncio.TaskGroup`.
///
/// - **Concurrency.** The bodies run concurrently in the caller's task (nothing is spawned),
///   so they may borrow from the caller. `limit` counts the items started and not yet ended,
///   including those still awaiting their cleanups; `usize::MAX` sets no limit.
/// - **The first failure** (a body's `Err`, a failed cleanup, a panic) stops new items. The
///   items in flight are cancelled at their next `.await`: their body's future is dropped,
///   then their cleanups are awaited as after a failure (so
///   [`defer_async_on_error`](AsyncScope::defer_async_on_error) ones too), and the loop waits
///   for them. When the call returns, every cleanup of every item that started has ended.
/// - **Cancelling the whole call** (dropping its future, a timeout) cancels every started
///   item's scope, which hands its pending cleanups over as any cancelled [`AsyncScope`]
///   does: see [Cancellation](AsyncScope#cancellation) (with the `tokio` feature, spawned on
///   the runtime and awaited there).
/// - **`Send`.** The loop's future is `Send` when the items, the body and its futures are, so
///   it can be `tokio::spawn`ed. Inside a spawned task, rustc rejects a body whose future
///   keeps a borrow of the closure's captures or of the caller's locals across an `.await`
///   ("implementation of `Send` is not general enough", the rust-lang/rust#110338 family):
///   make it `async move`, and clone into the future what it uses across an `.await`
///   (`async move |s, item| { let conns = Arc::clone(&conns); ... }`), as the example below
///   does.
///
/// # Across the runtime's threads
///
/// One task runs on one thread at a time: this is concurrency for I/O, not parallelism. For
/// CPU-bound items use `par_try_for_each_scoped` (the `rayon` feature). To spread I/O-bound
/// items over a multi-threaded runtime, split them into shards and spawn one loop per shard;
/// each loop keeps its items' promise, and an error in one shard stops only that shard:
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// use scoped_defer::try_for_each_concurrent_scoped;
///
/// let items: Vec<u32> = (0..100).collect();
/// let mut shards = tokio::task::JoinSet::new();
/// for shard in items.chunks(25).map(<[u32]>::to_vec) {
///     shards.spawn(try_for_each_concurrent_scoped(shard, 16, async move |s, item| {
///         s.defer_async(async move { tokio::task::yield_now().await });
///         if item == 1_000_000 { Err("no such item") } else { Ok(()) }
///     }));
/// }
/// while let Some(shard) = shards.join_next().await {
///     shard.expect("no shard panicked").expect("no item failed");
/// }
/// # }
/// ```
///
/// # Errors
///
/// The first failure: [`ScopeError::Body`] with the body's error, or [`ScopeError::Cleanup`]
/// if cleanups failed first. Every cleanup error of every item is kept, in the order the items
/// ended (the failed body's item's own first), as the suppressed errors or as the cleanup
/// errors. No body error is lost: only one body can fail, since the first failure is seen in
/// the poll where it happens and every other body is cancelled at its next poll, before it can
/// return.
///
/// # Panics
///
/// If `limit` is 0: no item could ever start. With the first panic of a body, a cleanup or
/// the iterator, once every started item's cleanups have been awaited; the first panic stops
/// new items and cancels the items in flight as an error does. A panic wins over errors: the
/// cleanup errors are then [reported](crate::report), the body errors dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use scoped_defer::try_for_each_concurrent_scoped;
///
/// let (started, closed) = (AtomicUsize::new(0), Arc::new(AtomicUsize::new(0)));
/// let result = try_for_each_concurrent_scoped(0..1000, 8, async |s, i| {
///     started.fetch_add(1, Ordering::Relaxed);
///     let closed = Arc::clone(&closed);
///     s.defer_async(async move {
///         tokio::task::yield_now().await; // a connection's shutdown().await
///         closed.fetch_add(1, Ordering::Relaxed);
///     });
///     tokio::task::yield_now().await; // where the others are cancelled
///     if i == 20 { Err(format!("item {i} failed")) } else { Ok(()) }
/// })
/// .await;
/// assert_eq!(result.unwrap_err().body_error().unwrap(), "item 20 failed");
/// // No item started after the failure, and every started one was closed.
/// assert!(started.load(Ordering::Relaxed) < 30);
/// assert_eq!(closed.load(Ordering::Relaxed), started.load(Ordering::Relaxed));
/// # }
/// ```
pub async fn try_for_each_concurrent_scoped<I, E>(
    items: I,
    limit: usize,
    body: impl AsyncFn(&AsyncScope, I::Item) -> Result<(), E>,
) -> Result<(), ScopeError<E>>
where
    I: IntoIterator,
{
    run(items, limit, &body, |result| result).await.finish()
}

/// How many items the loop starts in one poll before it yields to the runtime, so that items
/// that end without awaiting cannot keep the task busy for the whole iterator.
const STARTS_PER_POLL: usize = 64;

/// The loop: starts items while fewer than `limit` run and nothing failed, polls the items
/// that were woken, and settles each item as it ends.
async fn run<I, B, R, E>(
    items: I,
    limit: usize,
    body: &B,
    into_result: fn(R) -> Result<(), E>,
) -> Failures<E>
where
    I: IntoIterator,
    B: AsyncFn(&AsyncScope, I::Item) -> R,
{
    assert!(
        limit > 0,
        "a concurrent loop with a limit of 0 would start no item: pass usize::MAX for no limit"
    );
    let stop = Stop::default();
    let mut items = items.into_iter();
    let mut exhausted = false;
    let mut group = Group::new();
    let mut failures = Failures::new();
    poll_fn(|cx| {
        group.poll_woken(cx.waker(), &mut failures, &stop);
        let mut starts = 0;
        while !exhausted && !stop.stopped() && group.running < limit {
            if starts == STARTS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            starts += 1;
            match catch_unwind(AssertUnwindSafe(|| items.next())) {
                Ok(Some(item)) => {
                    let index = group.start(run_item(body, item, &stop, into_result));
                    group.poll_slot(index, &mut failures, &stop);
                }
                Ok(None) => exhausted = true,
                Err(payload) => {
                    exhausted = true;
                    failures.offer_panic(stop.observe(), payload);
                }
            }
        }
        if stop.stopped() {
            group.cancel_all();
        }
        if group.running == 0 && (exhausted || stop.stopped()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    failures
}

/// The failures observed so far, counted: each takes the next ticket, which orders them, and
/// any stops new items.
#[derive(Default)]
struct Stop {
    observed: AtomicUsize,
}

impl Stop {
    fn stopped(&self) -> bool {
        self.observed.load(Ordering::Relaxed) != 0
    }

    /// Records a failure; its ticket (0 for the first).
    fn observe(&self) -> usize {
        self.observed.fetch_add(1, Ordering::Relaxed)
    }
}

/// How an item's body ended.
enum BodyEnd<E> {
    Succeeded,
    /// Returned `Err`.
    Failed(E),
    /// Panicked (when called, polled, or dropped), with the failure's ticket.
    Panicked(Payload, usize),
    /// Dropped at an `.await` because another item failed.
    Cancelled,
}

/// What an item leaves: how its body ended, and what its cleanups did.
struct ItemEnd<E> {
    body: BodyEnd<E>,
    cleanups: DrainContext,
    panic: Option<Payload>,
}

/// One item: its body on its own scope, cancelled at the first poll after a failure, then
/// the scope's cleanups, awaited whatever happened to the body.
async fn run_item<B, T, R, E>(
    body: &B,
    item: T,
    stop: &Stop,
    into_result: fn(R) -> Result<(), E>,
) -> ItemEnd<E>
where
    B: AsyncFn(&AsyncScope, T) -> R,
{
    let mut scope = AsyncScope::new();
    let body_end = {
        let mut future = pin!(None);
        let mut end = match catch_unwind(AssertUnwindSafe(|| body(&scope, item))) {
            Ok(started) => {
                future.set(Some(started));
                poll_fn(|cx| {
                    if stop.stopped() {
                        return Poll::Ready(BodyEnd::Cancelled);
                    }
                    let running = future.as_mut().as_pin_mut().expect("polled until it ends");
                    match catch_unwind(AssertUnwindSafe(|| running.poll(cx))) {
                        Ok(Poll::Pending) => Poll::Pending,
                        Ok(Poll::Ready(output)) => Poll::Ready(match into_result(output) {
                            Ok(()) => BodyEnd::Succeeded,
                            // Observed now, so that no item starts while this one's cleanups run.
                            Err(error) => {
                                stop.observe();
                                BodyEnd::Failed(error)
                            }
                        }),
                        Err(payload) => Poll::Ready(BodyEnd::Panicked(payload, stop.observe())),
                    }
                })
                .await
            }
            Err(payload) => BodyEnd::Panicked(payload, stop.observe()),
        };
        // Ended or cancelled, the body goes before the cleanups run, as it would in a scope.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| future.set(None))) {
            end = match end {
                BodyEnd::Panicked(first, ticket) => {
                    drop_payload(payload);
                    BodyEnd::Panicked(first, ticket)
                }
                _ => BodyEnd::Panicked(payload, stop.observe()),
            };
        }
        end
    };
    let outcome = match body_end {
        BodyEnd::Succeeded => Outcome::Success,
        _ => Outcome::Failure,
    };
    let (cleanups, panic) = scope.drain_for_group(outcome).await;
    ItemEnd {
        body: body_end,
        cleanups,
        panic,
    }
}

/// The items in flight, each in a slot with its own waker; a slot is reused by later items.
struct Group<F> {
    slots: Vec<Slot<F>>,
    /// Slots without an item.
    free: Vec<usize>,
    /// Slots with an item.
    running: usize,
    woken: Arc<Woken>,
    /// The slots to poll now, taken from `woken` (kept to reuse its allocation).
    batch: Vec<usize>,
    /// Whether the items in flight were woken to see the loop's first failure.
    cancelling: bool,
}

struct Slot<F> {
    /// Boxed once per slot, not per item.
    item: Pin<alloc::boxed::Box<Option<F>>>,
    waker: Arc<SlotWaker>,
    /// The same, as a `Waker`.
    context_waker: Waker,
}

impl<F, E> Group<F>
where
    F: Future<Output = ItemEnd<E>>,
{
    fn new() -> Self {
        Group {
            slots: Vec::new(),
            free: Vec::new(),
            running: 0,
            woken: Arc::default(),
            batch: Vec::new(),
            cancelling: false,
        }
    }

    /// Puts `item` in a free slot (a new one if none is free), returning the slot's index.
    fn start(&mut self, item: F) -> usize {
        let index = self.free.pop().unwrap_or_else(|| {
            let waker = Arc::new(SlotWaker {
                index: self.slots.len(),
                queued: AtomicBool::new(false),
                woken: Arc::clone(&self.woken),
            });
            self.slots.push(Slot {
                item: alloc::boxed::Box::pin(None),
                context_waker: Waker::from(Arc::clone(&waker)),
                waker,
            });
            self.slots.len() - 1
        });
        self.slots[index].item.set(Some(item));
        self.running += 1;
        index
    }

    /// Polls the items woken since the last time, and registers `waker` for the next.
    fn poll_woken(&mut self, waker: &Waker, failures: &mut Failures<E>, stop: &Stop) {
        let mut batch = mem::take(&mut self.batch);
        self.woken.take(waker, &mut batch);
        for &index in &batch {
            self.poll_slot(index, failures, stop);
        }
        batch.clear();
        self.batch = batch;
    }

    /// Polls the item in slot `index`, if any, and settles it if it ended.
    fn poll_slot(&mut self, index: usize, failures: &mut Failures<E>, stop: &Stop) {
        let slot = &mut self.slots[index];
        // Before the poll, so that a wake during it queues the slot again; a swap, to see what
        // a wake that found the slot still queued had written before it.
        slot.waker.queued.swap(false, Ordering::AcqRel);
        // A slot freed after it was queued has nothing to poll.
        let Some(item) = slot.item.as_mut().as_pin_mut() else {
            return;
        };
        if let Poll::Ready(end) = item.poll(&mut Context::from_waker(&slot.context_waker)) {
            slot.item.set(None);
            self.free.push(index);
            self.running -= 1;
            failures.settle(end, stop);
        }
    }

    /// Wakes every item in flight once, after the first failure, so that each sees it at its
    /// next poll rather than whenever its own waker fires.
    fn cancel_all(&mut self) {
        if mem::replace(&mut self.cancelling, true) {
            return;
        }
        for slot in &self.slots {
            if slot.item.is_some() {
                slot.context_waker.wake_by_ref();
            }
        }
    }
}

/// The slots woken since the loop last polled, and the loop's own waker.
#[derive(Default)]
struct Woken {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    slots: Vec<usize>,
    loop_waker: Option<Waker>,
}

impl Woken {
    /// Moves the woken slots into `batch`, and keeps `waker` to wake the loop with.
    fn take(&self, waker: &Waker, batch: &mut Vec<usize>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if !queue
            .loop_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            queue.loop_waker = Some(waker.clone());
        }
        mem::swap(&mut queue.slots, batch);
    }
}

/// The waker of one slot: queues the slot and wakes the loop.
struct SlotWaker {
    index: usize,
    /// Set while the slot is in the queue, so that it is queued once.
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let loop_waker = {
            let mut queue = self
                .woken
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queue.slots.push(self.index);
            // The first slot queued wakes the loop; the loop takes the whole queue.
            if queue.slots.len() == 1 {
                queue.loop_waker.clone()
            } else {
                None
            }
        };
        if let Some(waker) = loop_waker {
            waker.wake();
        }
    }
}

/// Cleanup errors, each with the line that registered its cleanup.
#[derive(Default)]
struct Errors {
    errors: Vec<BoxError>,
    sites: Vec<&'static Location<'static>>,
}

impl Errors {
    fn append(&mut self, mut other: Errors) {
        self.errors.append(&mut other.errors);
        self.sites.append(&mut other.sites);
    }
}

/// What the items that ended have left, settled into the loop's result.
///
/// At most one body fails: the first failure is observed in the poll where it happens, and
/// every other body is cancelled at its next poll, before it can return anything.
struct Failures<E> {
    /// The failed body's error, with its own item's cleanup errors.
    body_error: Option<(E, Errors)>,
    /// The other items' cleanup errors, in the order the items ended. The first failure's
    /// come first when only cleanups failed: it stopped the items that end after it.
    cleanup_errors: Errors,
    /// The panic with the lowest ticket.
    panic: Option<(usize, Payload)>,
}

impl<E> Failures<E> {
    fn new() -> Self {
        Failures {
            body_error: None,
            cleanup_errors: Errors::default(),
            panic: None,
        }
    }

    fn settle(&mut self, end: ItemEnd<E>, stop: &Stop) {
        let cleanup_errors = Errors {
            errors: end.cleanups.errors,
            sites: end.cleanups.error_sites,
        };
        match end.body {
            BodyEnd::Failed(error) => self.body_error = Some((error, cleanup_errors)),
            BodyEnd::Panicked(payload, ticket) => {
                self.offer_panic(ticket, payload);
                self.cleanup_errors.append(cleanup_errors);
            }
            BodyEnd::Succeeded | BodyEnd::Cancelled => {
                if !cleanup_errors.errors.is_empty() {
                    stop.observe();
                }
                self.cleanup_errors.append(cleanup_errors);
            }
        }
        if let Some(payload) = end.panic {
            self.offer_panic(stop.observe(), payload);
        }
    }

    /// Keeps the panic with the lower ticket; drops the other.
    fn offer_panic(&mut self, ticket: usize, payload: Payload) {
        match &self.panic {
            Some((first, _)) if *first < ticket => drop_payload(payload),
            _ => {
                if let Some((_, replaced)) = self.panic.replace((ticket, payload)) {
                    drop_payload(replaced);
                }
            }
        }
    }

    /// Every cleanup error, the failed body's item's first.
    fn all_cleanup_errors(&mut self) -> Errors {
        let mut all = match &mut self.body_error {
            Some((_, own)) => mem::take(own),
            None => Errors::default(),
        };
        all.append(mem::take(&mut self.cleanup_errors));
        all
    }

    /// The loop's result, after resuming the first panic, if any (the cleanup errors are
    /// reported then).
    fn finish(mut self) -> Result<(), ScopeError<E>> {
        let all = self.all_cleanup_errors();
        if let Some((_, payload)) = self.panic.take() {
            // Reported, then dropped with the body's error before the panic resumes, each drop's
            // own panic caught: it would replace the panic, or abort during its unwind.
            for (error, site) in all.errors.into_iter().zip(all.sites) {
                report::send(ReportKind::ErrorLostToPanic, site, Some(&*error));
                drop_quietly(error);
            }
            drop_quietly(self);
            resume_unwind(payload);
        }
        let suppressed = CleanupErrors::from_vec(all.errors);
        match (self.body_error, suppressed) {
            (Some((error, _)), suppressed) => Err(ScopeError::Body { error, suppressed }),
            (None, Some(errors)) => Err(ScopeError::Cleanup(errors)),
            (None, None) => Ok(()),
        }
    }

    /// For a loop whose bodies cannot fail: the cleanup errors, or a panic naming the line
    /// of the first, since nothing can return them.
    fn finish_without_errors(mut self) {
        let all = self.all_cleanup_errors();
        let site = all.sites.first().copied();
        self.cleanup_errors = all;
        match self.finish() {
            Ok(()) => {}
            Err(ScopeError::Cleanup(errors)) => {
                unreported(errors, site.expect("a failed cleanup records its site"))
            }
            Err(ScopeError::Body { .. }) => unreachable!("only cleanups can fail"),
        }
    }
}
