//! Limits and stats: what a scope that has either keeps besides its closures, and what
//! registration and the drains do with it. One implementation for [`Scope`] and
//! [`AsyncScope`], whose extras each hold a [`Tracking`].
//!
//! The lines of the pending closures are not here: they live with the closures, in the
//! arena's storage (see `sites.rs`). What is here describes the scope: its settings and its
//! history.
//!
//! [`Scope`]: crate::Scope
//! [`AsyncScope`]: crate::AsyncScope

use core::cell::{Cell, RefCell};
use core::panic::Location;

use crate::arena::Arena;
use crate::error::LimitExceeded;
use crate::stats::{Consumed, Counters, Stats};

/// A scope's limit and stats.
#[derive(Debug, Default)]
pub(crate) struct Tracking {
    /// Most closures that may be pending at once.
    limit: Option<usize>,
    /// Present when the scope tracks stats. In a cell, for entry handles, which consume one
    /// closure through `&self`; no user code runs while it is borrowed.
    counters: RefCell<Option<Counters>>,
    /// Where the scope began tracking (for stats or a limit): the line that closures whose
    /// own line is unknown are put down to, when a loop puts them back.
    started_at: Option<&'static Location<'static>>,
    /// Closures refused at the limit (counted through `&self`, by registration).
    refused: Cell<u64>,
}

impl Tracking {
    /// Whether the scope tracks stats.
    pub(crate) fn has_stats(&self) -> bool {
        self.counters.borrow().is_some()
    }

    /// Counts panics and errors of closures that a drain ran.
    pub(crate) fn failed(&mut self, panics: usize, errors: usize) {
        if let Some(counters) = self.counters.get_mut() {
            counters.failed(panics, errors);
        }
    }
}

/// The extras of a scope that can have a limit and stats.
pub(crate) trait Tracked: Default {
    fn tracking(&self) -> &Tracking;
    fn tracking_mut(&mut self) -> &mut Tracking;
}

impl Tracked for Tracking {
    fn tracking(&self) -> &Tracking {
        self
    }

    fn tracking_mut(&mut self) -> &mut Tracking {
        self
    }
}

/// The tracking of `arena`'s scope, created if it has no extras yet.
fn tracking_mut<'a, const N: usize, X: Tracked>(
    arena: &'a mut Arena<'_, N, X>,
) -> &'a mut Tracking {
    arena.extras_or_insert_with(X::default);
    arena.extras_mut().expect("just set").tracking_mut()
}

/// Caps the pending closures at `limit`; `site` is where tracking began if it had not.
pub(crate) fn set_limit<const N: usize, X: Tracked>(
    arena: &mut Arena<'_, N, X>,
    limit: usize,
    site: &'static Location<'static>,
) {
    tracking_mut(arena).limit = Some(limit);
    track_sites(arena, site);
    // The room the last registration saw is not the room left under the new limit.
    arena.forget_room();
}

/// Starts tracking stats; `site` is where tracking began if it had not.
pub(crate) fn track_stats<const N: usize, X: Tracked>(
    arena: &mut Arena<'_, N, X>,
    site: &'static Location<'static>,
) {
    tracking_mut(arena)
        .counters
        .get_mut()
        .get_or_insert_with(Counters::default);
    track_sites(arena, site);
}

/// Records the line of every closure from now on; the closures pending whose line is unknown
/// are put down to `site`.
fn track_sites<const N: usize, X: Tracked>(
    arena: &mut Arena<'_, N, X>,
    site: &'static Location<'static>,
) {
    tracking_mut(arena).started_at.get_or_insert(site);
    arena.start_tracking(site);
}

/// Makes sure the storage records every line if the scope needs them: after a loop put back
/// closures, or `take` left the scope with new storage.
pub(crate) fn keep_tracking<const N: usize, X: Tracked>(arena: &mut Arena<'_, N, X>) {
    if let Some(site) = arena
        .extras()
        .and_then(|extras| extras.tracking().started_at)
    {
        arena.start_tracking(site);
    }
}

/// The limit, if any.
pub(crate) fn limit<const N: usize, X: Tracked>(arena: &Arena<'_, N, X>) -> Option<usize> {
    arena.extras()?.tracking().limit
}

/// How many more closures the arena may take now: any number without a limit. Registration
/// asks on its slow path only (for scopes with extras or that track sites, and on growth),
/// and lets the next ones from the same line take the room without asking.
pub(crate) fn room<const N: usize, X: Tracked>(arena: &Arena<'_, N, X>) -> usize {
    limit(arena).map_or(usize::MAX, |limit| limit.saturating_sub(arena.len()))
}

/// Counts and describes a closure registered at `site` and refused at the limit.
#[cold]
#[inline(never)]
pub(crate) fn refuse<F, const N: usize, X: Tracked>(
    arena: &Arena<'_, N, X>,
    closure: F,
    site: &'static Location<'static>,
) -> LimitExceeded<F> {
    let tracking = arena.extras().expect("only a limit refuses").tracking();
    tracking.refused.set(tracking.refused.get() + 1);
    let limit = tracking.limit.expect("only a limit refuses");
    // The most; of equals, the line registered first.
    let busiest = arena
        .pending_by_line()
        .into_iter()
        .reduce(|best, next| if next.1 > best.1 { next } else { best });
    LimitExceeded::new(closure, limit, site, busiest)
}

/// Panics for a closure past the scope's limit, at the line that registered it, with `advice`
/// on what to do instead.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn limit_reached(refused: &LimitExceeded<()>, advice: &str) -> ! {
    panic!("{refused}; {advice}")
}

/// Tells the stats, if any, that every pending closure is leaving the scope as `how`, and
/// which lines registered them.
pub(crate) fn count_consumed<const N: usize, X: Tracked>(
    arena: &mut Arena<'_, N, X>,
    how: Consumed,
) {
    let arena = &*arena;
    with_counters(arena, |counters| {
        let new_high_water = counters.consumed(arena.len(), how);
        arena.visit_lines(|line, count| {
            counters.consumed_at(line, count, if new_high_water { count } else { 0 });
        });
    });
}

/// Tells the stats, if any, that one pending closure, registered at `line` (if known), is
/// leaving the scope early as `how`, through an entry handle.
pub(crate) fn count_entry<const N: usize, X: Tracked>(
    arena: &Arena<'_, N, X>,
    line: Option<&'static Location<'static>>,
    how: Consumed,
) {
    with_counters(arena, |counters| {
        // The closures pending now may be the most there ever were.
        if counters.reached(arena.len()) {
            arena.visit_lines(|line, count| counters.consumed_at(line, 0, count));
        }
        counters.count(how, 1);
        if let Some(line) = line {
            counters.consumed_at(line, 1, 0);
        }
    });
}

/// Runs `f` on the stats' counters, if the scope tracks stats.
fn with_counters<const N: usize, X: Tracked>(
    arena: &Arena<'_, N, X>,
    f: impl FnOnce(&mut Counters),
) {
    let Some(extras) = arena.extras() else {
        return;
    };
    if let Some(counters) = extras.tracking().counters.borrow_mut().as_mut() {
        f(counters);
    }
}

/// The stats, if the scope tracks them.
pub(crate) fn stats<const N: usize, X: Tracked>(arena: &Arena<'_, N, X>) -> Option<Stats> {
    let tracking = arena.extras()?.tracking();
    Some(tracking.counters.borrow().as_ref()?.snapshot(
        arena.len(),
        &arena.pending_by_line(),
        tracking.refused.get(),
        arena.spilled(),
        arena.heap_bytes(),
    ))
}
