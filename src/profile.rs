//! A process-wide view of pending closures by registration line, across every scope and
//! thread: what `pprof`'s heap profile is to a Go program that leaks through `defer` in a loop.
//!
//! Profiling is off until [`enable`] (exact counts) or [`enable_sampled`] (an estimate, cheap
//! enough to leave on in production). From then on every scope of every kind ([`Scope`],
//! [`SendScope`], the function forms, the loop helpers, rayon's workers, [`AsyncScope`]) is
//! counted, with no change to the code that creates it, and [`report`] names the lines whose
//! closures are pending.
//!
//! A pile-up outgrows a scope's inline slots by definition, so a scope is counted from the
//! moment it first needs its heap storage: a scope that never holds more than its `N` inline
//! closures costs nothing extra and is never in the report. The closures that were pending
//! when counting began are put down to the line that registered the first closure counted,
//! which in a pile-up is the line that piles up. What the report counts lives with the
//! closures, so a closure leaves the report whenever it leaves the storage: run, dismissed,
//! dropped by a panic, or in a scope that ended; a closure moved by `take` or set aside by a
//! loop stays counted where it went.
//!
//! ```
//! use scoped_defer::{Scope, profile};
//!
//! profile::enable();
//! let request = Scope::new(); // no option: every scope is seen
//! for item in 0..100 {
//!     request.defer(move || assert!(item < 100)); // the pile-up
//! }
//! let report = profile::report();
//! let top = &report.sites()[0];
//! assert_eq!((top.location.line(), top.pending), (line!() - 4, 100));
//! println!("{report}");
//! drop(request);
//! assert!(profile::report().sites().iter().all(|site| site.location.line() != line!() - 8));
//! # profile::disable();
//! ```
//!
//! # Sampled profiles
//!
//! [`enable_sampled`] records one registration in `period`, at random (the gap to the next
//! sample is drawn from a geometric distribution, as Go draws the next heap sample, so that no
//! periodic pattern hides from it), and counts each sample `period` times. Registrations that
//! are not sampled cost what they cost with profiling off. The report then says it is an
//! estimate: a line with `P` pending closures shows a multiple of `period` whose expected value
//! is `P`, with a relative standard error of about `sqrt(period / P)`. At the default period of
//! 128, a pile-up of 10,000 closures is estimated within ±11% (one standard error), and a line
//! with 5,000 pending comes out ahead of one with 2,500 with a probability above 0.99.
//!
//! [`Scope`]: crate::Scope
//! [`SendScope`]: crate::SendScope
//! [`AsyncScope`]: crate::AsyncScope

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt::{self, Write as _};
use core::panic::Location;
use core::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::sites::same_line;

/// The sampling period that [`enable_sampled`] is meant to be called with: one registration
/// in 128 is recorded, which adds about 7 instructions per registration past a scope's inline
/// slots (`benches/instructions.sh`, row `Scope::defer, sampled`).
pub const DEFAULT_SAMPLE_PERIOD: usize = 128;

/// One registration in `PERIOD` is counted; zero when profiling is off, one when exact.
static PERIOD: AtomicUsize = AtomicUsize::new(0);

/// Starts counting every registration exactly. Scopes that already hold closures are counted
/// from their next growth on (see the module docs).
pub fn enable() {
    PERIOD.store(1, Ordering::Relaxed);
}

/// Starts counting one registration in `period` at random, weighted `period`: an estimate for
/// production, at [`DEFAULT_SAMPLE_PERIOD`] or another period. A period of 1 is [`enable`].
///
/// ```
/// use scoped_defer::profile;
///
/// profile::enable_sampled(profile::DEFAULT_SAMPLE_PERIOD);
/// let scope = scoped_defer::Scope::new();
/// for _ in 0..20_000 {
///     scope.defer(|| ());
/// }
/// let report = profile::report();
/// assert!(report.is_estimate());
/// let estimate = report.sites()[0].pending as f64;
/// assert!((estimate - 20_000.0).abs() < 8_000.0, "{estimate}"); // five standard errors wide
/// # drop(scope);
/// # profile::disable();
/// ```
///
/// # Panics
///
/// If `period` is zero.
pub fn enable_sampled(period: usize) {
    assert!(
        period > 0,
        "a sampling period of zero samples nothing: use disable"
    );
    PERIOD.store(period, Ordering::Relaxed);
}

/// Stops counting new registrations. Closures already counted leave the report as they leave
/// their scopes, so the report always adds up.
pub fn disable() {
    PERIOD.store(0, Ordering::Relaxed);
}

/// The sampling period in force: 0 when off.
#[inline]
pub(crate) fn period() -> usize {
    PERIOD.load(Ordering::Relaxed)
}

/// The closures of one line counted at one weight: what the pending closures' records point
/// to. Entries are created once and never freed, so that a record can hold a `&'static`.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) location: &'static Location<'static>,
    /// How many closures each count stands for: the sampling period.
    pub(crate) weight: usize,
    /// Counted closures pending now, in units of `weight`. Any thread adds and subtracts.
    pending: AtomicIsize,
}

impl Entry {
    /// Counts `count` more pending closures.
    #[inline]
    pub(crate) fn add(&self, count: usize) {
        self.pending.fetch_add(count as isize, Ordering::Relaxed);
    }

    /// Counts `count` fewer pending closures.
    #[inline]
    pub(crate) fn remove(&self, count: usize) {
        self.pending.fetch_sub(count as isize, Ordering::Relaxed);
    }

    /// Whether the entry is for `location` at `weight`.
    pub(crate) fn is_for(&self, location: &'static Location<'static>, weight: usize) -> bool {
        self.weight == weight && same_line(self.location, location)
    }
}

/// Every entry, by the address of its `Location` and its weight.
type Entries = HashMap<(usize, usize), &'static Entry>;

static ENTRIES: Mutex<Option<Entries>> = Mutex::new(None);

fn entries() -> MutexGuard<'static, Option<Entries>> {
    // Entries are only ever added whole: a panic elsewhere cannot leave the map inconsistent.
    ENTRIES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The entry for `location` at `weight`, created the first time.
pub(crate) fn entry(location: &'static Location<'static>, weight: usize) -> &'static Entry {
    let key = (core::ptr::from_ref(location).addr(), weight);
    let mut entries = entries();
    let entry: &&'static Entry = entries
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| {
            Box::leak(Box::new(Entry {
                location,
                weight,
                pending: AtomicIsize::new(0),
            }))
        });
    entry
}

std::thread_local! {
    /// The state of this thread's generator of sampling gaps (xorshift64*), seeded lazily.
    static RANDOM: Cell<u64> = const { Cell::new(0) };
    /// The last period a gap was drawn for, and `1 / ln(1 - 1 / period)`: so that a gap
    /// takes one logarithm.
    static SCALE: Cell<(usize, f64)> = const { Cell::new((0, 0.0)) };
}

/// The number of registrations up to and including the next sampled one, when each is
/// sampled with probability `1 / period`: geometric, with mean `period`.
pub(crate) fn gap(period: usize) -> usize {
    if period <= 1 {
        return 1;
    }
    let bits = RANDOM.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // A nonzero seed that differs between threads: a stack address and a count of
            // seeded threads.
            static SEEDED: AtomicUsize = AtomicUsize::new(0);
            let local = 0u8;
            let count = SEEDED.fetch_add(1, Ordering::Relaxed) as u64;
            x = (core::ptr::from_ref(&local).addr() as u64
                ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .max(1);
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    });
    // Uniform in (0, 1]: the top 53 bits, plus one.
    let uniform = ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let scale = SCALE.with(|scale| match scale.get() {
        (cached, value) if cached == period => value,
        _ => {
            let value = 1.0 / (1.0 - 1.0 / period as f64).ln();
            scale.set((period, value));
            value
        }
    });
    let gap = (uniform.ln() * scale).floor() + 1.0;
    if gap >= usize::MAX as f64 {
        usize::MAX
    } else {
        gap as usize
    }
}

/// The closures pending now in every scope, by line, the most first.
#[must_use]
pub fn report() -> Profile {
    let mut estimate = false;
    let mut sites: Vec<ProfiledSite> = Vec::new();
    if let Some(entries) = entries().as_ref() {
        for entry in entries.values() {
            let pending = entry.pending.load(Ordering::Relaxed);
            if pending <= 0 {
                continue;
            }
            estimate |= entry.weight > 1;
            let pending = (pending as usize).saturating_mul(entry.weight);
            match sites
                .iter_mut()
                .find(|site| same_line(site.location, entry.location))
            {
                Some(site) => site.pending += pending,
                None => sites.push(ProfiledSite {
                    location: entry.location,
                    pending,
                }),
            }
        }
    }
    sites.sort_by_key(|site| site.location);
    // Stable: ties stay in file and line order.
    sites.sort_by_key(|site| core::cmp::Reverse(site.pending));
    Profile { sites, estimate }
}

/// A snapshot of the pending closures of every scope, by line. `Display` prints a table, the
/// busiest line first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    sites: Vec<ProfiledSite>,
    estimate: bool,
}

/// One line of a [`Profile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProfiledSite {
    /// Where the closures were registered.
    pub location: &'static Location<'static>,
    /// How many are pending, across every scope and thread (an estimate if the profile is).
    pub pending: usize,
}

impl Profile {
    /// The lines with pending closures, the most first.
    #[must_use]
    pub fn sites(&self) -> &[ProfiledSite] {
        &self.sites
    }

    /// The closures pending across all lines.
    #[must_use]
    pub fn total(&self) -> usize {
        self.sites.iter().map(|site| site.pending).sum()
    }

    /// Whether the counts are estimates from [`enable_sampled`] rather than exact.
    #[must_use]
    pub fn is_estimate(&self) -> bool {
        self.estimate
    }

    /// The profile in the folded-stacks format that flame-graph tools read (`inferno`,
    /// `flamegraph.pl`, speedscope): one line per site, `scoped_defer;FILE:LINE:COLUMN COUNT`.
    ///
    /// ```
    /// let folded = scoped_defer::profile::report().folded();
    /// assert!(folded.lines().all(|line| line.starts_with("scoped_defer;")));
    /// ```
    #[must_use]
    pub fn folded(&self) -> String {
        let mut folded = String::new();
        for site in &self.sites {
            let _ = writeln!(folded, "scoped_defer;{} {}", site.location, site.pending);
        }
        folded
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (about, lines) = (
            if self.estimate { "about " } else { "" },
            crate::sites::plural(self.sites.len(), "line", "lines"),
        );
        writeln!(
            f,
            "{about}{} closures pending, registered at {} {lines}{}",
            self.total(),
            self.sites.len(),
            if self.estimate {
                " (estimated from samples)"
            } else {
                ""
            }
        )?;
        writeln!(f, "  {:>8}  site", "pending")?;
        for site in &self.sites {
            writeln!(f, "  {:>8}  {}", site.pending, site.location)?;
        }
        Ok(())
    }
}

impl Entry {
    /// The count, in units of the weight.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> isize {
        self.pending.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use core::panic::Location;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    use super::{entry, gap, report};

    /// Serialises the unit tests that count in the profile or turn it on: it is global.
    pub(crate) fn exclusive() -> MutexGuard<'static, ()> {
        static PROFILE: Mutex<()> = Mutex::new(());
        PROFILE.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One line can have two `Location`s at two addresses (one per codegen unit); the report
    /// shows it once. The only test of this binary that touches the table.
    #[test]
    fn a_line_with_two_addresses_is_reported_once() {
        let _profile = exclusive();
        // Two statics with one value: one line at two addresses.
        static HERE: Location<'static> = *Location::caller();
        static COPY: Location<'static> = HERE;
        let (here, copy) = (&HERE, &COPY);
        assert!(!core::ptr::eq(here, copy));
        entry(here, 1).add(2);
        entry(copy, 1).add(1);
        assert!(core::ptr::eq(entry(here, 1), entry(here, 1)));
        let profile = report();
        assert_eq!(profile.sites().len(), 1);
        assert_eq!(
            (profile.sites()[0].location, profile.sites()[0].pending),
            (here, 3)
        );
        assert!(!profile.is_estimate());
        entry(here, 4).add(1);
        let profile = report();
        assert_eq!(profile.sites()[0].pending, 7);
        assert!(profile.is_estimate());
        entry(here, 1).remove(2);
        entry(copy, 1).remove(1);
        entry(here, 4).remove(1);
        assert!(report().sites().is_empty());
    }

    /// The gaps are geometric with the period as their mean.
    #[test]
    fn gaps_are_geometric_with_the_period_as_their_mean() {
        assert_eq!(gap(1), 1);
        let draws = if cfg!(miri) { 2_000 } else { 100_000 };
        let gaps: alloc::vec::Vec<f64> = (0..draws).map(|_| gap(64) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / draws as f64;
        // The standard error of the mean is 64 / sqrt(draws): at most 1.5 here.
        assert!((mean - 64.0).abs() < 8.0, "{mean}");
        // A geometric variance, k (k - 1), within 25% (several standard errors), and the
        // right share of gaps of one: a generator that repeats itself or stops mixing fails.
        let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / draws as f64;
        assert!((variance / (64.0 * 63.0) - 1.0).abs() < 0.25, "{variance}");
        let ones = gaps.iter().filter(|&&g| g == 1.0).count() as f64 / draws as f64;
        // Four standard errors of the share, relative: 10% here, 71% under Miri.
        let tolerance = 4.0 * (63.0 / draws as f64).sqrt();
        assert!((ones * 64.0 - 1.0).abs() < tolerance, "{ones}");
        assert!((0..1000).all(|_| gap(2) >= 1));
    }
}
