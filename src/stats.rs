//! [`Stats`]: how a scope was used, to make a Go-style pile-up of deferred closures visible.

use alloc::vec::Vec;
use core::fmt;
use core::panic::Location;

use smallvec::SmallVec;

use crate::sites::{SiteStats, same_line, sort_busiest_first, write_table};

/// How a scope (or a loop's scope, over all its iterations) has been used.
///
/// Tracked by scopes created with [`Scope::with_stats`](crate::Scope::with_stats), or after
/// [`Scope::track_stats`](crate::Scope::track_stats). Such a scope records the line of every
/// closure it is given, with the closure (a comparison per registration while the line stays
/// the same), and updates its counters when closures run, are dismissed or taken.
///
/// # Finding closures that pile up
///
/// Go's `defer` in a loop holds one record per iteration until the function returns. The same
/// bug with a [`Scope`](crate::Scope) shows as a `high_water` that grows with the input. Run
/// the code twice with inputs of different sizes and compare:
///
/// ```
/// use scoped_defer::{for_each_scoped_in, Scope};
///
/// fn process(items: u32, scope: &mut Scope<'_>) {
///     // The bug: every item defers into the one function-wide scope.
///     for _ in 0..items {
///         scope.defer(|| ());
///     }
/// }
///
/// let high_water = |items| {
///     let mut scope = Scope::with_stats();
///     process(items, &mut scope);
///     scope.run_now();
///     scope.stats().unwrap().high_water
/// };
/// assert_eq!((high_water(10), high_water(1000)), (10, 1000)); // grows with the input: a pile-up
///
/// // The fix: a scope per item. The high-water mark no longer depends on the input.
/// let fixed = |items| {
///     let mut scope = Scope::with_stats();
///     for_each_scoped_in(&mut scope, 0..items, |s, _| s.defer(|| ()));
///     scope.stats().unwrap().high_water
/// };
/// assert_eq!((fixed(10), fixed(1000)), (1, 1));
/// ```
///
/// [`sites`](Stats::sites) says which line piles up, and `Display` prints the counts with
/// the busiest lines:
///
/// ```
/// let scope = scoped_defer::Scope::with_stats();
/// for _ in 0..3 {
///     scope.defer(|| ());
/// }
/// let stats = scope.stats().unwrap();
/// assert_eq!(stats.sites()[0].location.line(), line!() - 3);
/// println!("{stats}");
/// // 3 registered, 3 pending, high water 3, 0 ran, 0 dismissed, 0 taken, 0 refused, ...
/// //   at high water registered  pending  site
/// //               3          3        3  src/main.rs:4:11
/// ```
///
/// To stop a pile-up instead of measuring it, create the scope
/// [`with_limit`](crate::Scope::with_limit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Closures accepted: `ran + dismissed + taken + pending`.
    pub registered: u64,
    /// Closures run (including outcome-aware ones that decided not to act).
    pub ran: u64,
    /// Closures dropped unrun by `dismiss`.
    pub dismissed: u64,
    /// Closures moved to another scope by `take`.
    pub taken: u64,
    /// Closures refused by `try_defer` at the limit.
    pub refused: u64,
    /// Closures pending now.
    pub pending: usize,
    /// The most closures pending at once.
    pub high_water: usize,
    /// Whether the stack has grown into the heap.
    pub spilled: bool,
    /// Bytes of heap the stack holds (zero while inline); boxed closures not included.
    pub heap_bytes: usize,
    /// Closures that panicked.
    pub panics: u64,
    /// Errors returned by fallible closures.
    pub errors: u64,
    sites: Vec<SiteStats>,
}

impl Stats {
    /// The lines that registered the closures, the one with the most pending at the
    /// high-water mark first: in a pile-up, the `defer` inside the loop. Every registration
    /// method records its caller's line in a scope with stats or a limit, and only there.
    #[must_use]
    pub fn sites(&self) -> &[SiteStats] {
        &self.sites
    }
}

impl fmt::Display for Stats {
    /// The counts on one line, then the five busiest sites.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} registered, {} pending, high water {}, {} ran, {} dismissed, {} taken, {} \
             refused, {} panics, {} errors",
            self.registered,
            self.pending,
            self.high_water,
            self.ran,
            self.dismissed,
            self.taken,
            self.refused,
            self.panics,
            self.errors
        )?;
        write_table(f, &self.sites, 5)
    }
}

impl Stats {
    /// Adds what another, ended, scope did: counts are summed, `high_water` is the larger one.
    #[cfg(feature = "rayon")]
    pub(crate) fn merge(&mut self, other: &Stats) {
        self.registered += other.registered;
        self.ran += other.ran;
        self.dismissed += other.dismissed;
        self.taken += other.taken;
        self.refused += other.refused;
        // Nothing is pending in a worker's scope once its item has ended.
        debug_assert_eq!(other.pending, 0);
        self.high_water = self.high_water.max(other.high_water);
        self.spilled |= other.spilled;
        self.heap_bytes += other.heap_bytes;
        self.panics += other.panics;
        self.errors += other.errors;
        for site in &other.sites {
            match self
                .sites
                .iter_mut()
                .find(|s| same_line(s.location, site.location))
            {
                Some(mine) => {
                    mine.registered += site.registered;
                    mine.pending_at_high_water =
                        mine.pending_at_high_water.max(site.pending_at_high_water);
                }
                None => self.sites.push(*site),
            }
        }
        sort_busiest_first(&mut self.sites);
    }
}

/// The counters behind [`Stats`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    ran: u64,
    dismissed: u64,
    taken: u64,
    high_water: usize,
    panics: u64,
    errors: u64,
    /// Per line, in order of first registration: closures consumed, and how many were
    /// pending when the scope reached `high_water`.
    lines: SmallVec<[LineTotal; 2]>,
}

#[derive(Clone, Copy, Debug)]
struct LineTotal {
    location: &'static Location<'static>,
    consumed: u64,
    at_high_water: usize,
}

/// What happened to the closures a drain, `dismiss` or `take` consumed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Consumed {
    Ran,
    Dismissed,
    Taken,
}

impl Counters {
    /// Records that the `pending` closures are being consumed, as `how`; returns whether this
    /// is a new high-water mark, to pass to [`Counters::consumed_at`].
    pub(crate) fn consumed(&mut self, pending: usize, how: Consumed) -> bool {
        self.count(how, pending);
        // Pending closures only accumulate between two consumptions, so one sees the most
        // that were pending since the last.
        self.reached(pending)
    }

    /// Counts `count` closures consumed as `how`.
    pub(crate) fn count(&mut self, how: Consumed, count: usize) {
        let counter = match how {
            Consumed::Ran => &mut self.ran,
            Consumed::Dismissed => &mut self.dismissed,
            Consumed::Taken => &mut self.taken,
        };
        *counter += count as u64;
    }

    /// Records that `pending` closures are pending; returns whether this is a new high-water
    /// mark, whose lines are then to be given to [`Counters::consumed_at`].
    pub(crate) fn reached(&mut self, pending: usize) -> bool {
        let new_high_water = pending > self.high_water;
        if new_high_water {
            self.high_water = pending;
            for line in &mut self.lines {
                line.at_high_water = 0;
            }
        }
        new_high_water
    }

    /// Records that `count` of the closures being consumed were registered at `location`, and
    /// `at_high_water` of those pending at a new high-water mark.
    pub(crate) fn consumed_at(
        &mut self,
        location: &'static Location<'static>,
        count: usize,
        at_high_water: usize,
    ) {
        let index = match self
            .lines
            .iter()
            .position(|line| same_line(line.location, location))
        {
            Some(index) => index,
            None => {
                self.lines.push(LineTotal {
                    location,
                    consumed: 0,
                    at_high_water: 0,
                });
                self.lines.len() - 1
            }
        };
        let line = &mut self.lines[index];
        line.consumed += count as u64;
        line.at_high_water += at_high_water;
    }

    pub(crate) fn failed(&mut self, panics: usize, errors: usize) {
        self.panics += panics as u64;
        self.errors += errors as u64;
    }

    /// The stats, with `pending` closures pending now, `by_line` of them per line.
    pub(crate) fn snapshot(
        &self,
        pending: usize,
        by_line: &[(&'static Location<'static>, usize)],
        refused: u64,
        spilled: bool,
        heap_bytes: usize,
    ) -> Stats {
        // Pending now beyond every earlier consumption: the high-water mark is now.
        let high_water_is_now = pending > self.high_water;
        let mut sites: Vec<SiteStats> = self
            .lines
            .iter()
            .map(|line| SiteStats {
                location: line.location,
                registered: line.consumed,
                pending: 0,
                pending_at_high_water: if high_water_is_now {
                    0
                } else {
                    line.at_high_water
                },
            })
            .collect();
        for &(location, count) in by_line {
            let index = match sites.iter().position(|s| same_line(s.location, location)) {
                Some(index) => index,
                None => {
                    sites.push(SiteStats {
                        location,
                        registered: 0,
                        pending: 0,
                        pending_at_high_water: 0,
                    });
                    sites.len() - 1
                }
            };
            let site = &mut sites[index];
            site.registered += count as u64;
            site.pending += count;
            if high_water_is_now {
                site.pending_at_high_water += count;
            }
        }
        sort_busiest_first(&mut sites);
        Stats {
            registered: self.ran + self.dismissed + self.taken + pending as u64,
            ran: self.ran,
            dismissed: self.dismissed,
            taken: self.taken,
            refused,
            pending,
            high_water: self.high_water.max(pending),
            spilled,
            heap_bytes,
            panics: self.panics,
            errors: self.errors,
            sites,
        }
    }
}
