//! A process-wide view of pending closures by registration site, across threads: what
//! `pprof`'s heap profile is to a Go program that leaks through `defer` in a loop.
//!
//! Profiling is off until [`enable`] is called. From then on, every scope created with
//! [`with_stats`](crate::Scope::with_stats) or [`with_limit`](crate::Scope::with_limit) (or
//! given stats or a limit later) adds its pending closures to a table by line of code, and
//! removes them as they run, are dismissed or are taken. [`report`] reads the table. Scopes
//! without stats or a limit are never counted and pay nothing; counted ones take a lock per
//! registration and per drain.
//!
//! ```standalone_crate
//! use scoped_defer::{Scope, profile};
//!
//! profile::enable();
//! let request = Scope::with_stats();
//! for item in 0..100 {
//!     request.defer(move || drop(item)); // the pile-up
//! }
//! let report = profile::report();
//! let top = &report.sites()[0];
//! assert_eq!((top.location.line(), top.pending), (line!() - 4, 100));
//! println!("{report}");
//! drop(request);
//! assert!(profile::report().sites().is_empty());
//! ```

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::panic::Location;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Pending closures of profiled scopes, by site. Keyed by the `Location`'s address, which is
/// cheaper to compare than its file name; one line may have several addresses (one per
/// codegen unit), which `report` merges.
static PENDING: Mutex<BTreeMap<usize, (&'static Location<'static>, usize)>> =
    Mutex::new(BTreeMap::new());

/// Starts profiling: scopes with stats or a limit that start tracking from now on are counted.
/// Scopes that were already tracking are not, so that every scope counted is counted whole.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Stops counting scopes that start tracking from now on. Scopes already counted go on
/// being counted until they end, so that the report always adds up.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Whether [`enable`] was called (and [`disable`] not since).
pub(crate) fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The closures pending now in every counted scope, by site, the most first.
#[must_use]
pub fn report() -> Profile {
    let mut sites: Vec<ProfiledSite> = table()
        .values()
        .map(|&(location, pending)| ProfiledSite { location, pending })
        .collect();
    sites.sort_by_key(|site| site.location);
    sites.dedup_by(|later, kept| {
        let same = later.location == kept.location;
        if same {
            kept.pending += later.pending;
        }
        same
    });
    // Stable: ties stay in file and line order.
    sites.sort_by_key(|site| core::cmp::Reverse(site.pending));
    Profile { sites }
}

fn table() -> MutexGuard<'static, BTreeMap<usize, (&'static Location<'static>, usize)>> {
    // The table is consistent after every operation: a panic elsewhere cannot break it.
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn add(sites: &[&'static Location<'static>]) {
    let mut table = table();
    for &site in sites {
        table.entry(address(site)).or_insert((site, 0)).1 += 1;
    }
}

pub(crate) fn remove(sites: &[&'static Location<'static>]) {
    let mut table = table();
    for &site in sites {
        let key = address(site);
        if let Some((_, pending)) = table.get_mut(&key) {
            *pending -= 1;
            if *pending == 0 {
                table.remove(&key);
            }
        }
    }
}

fn address(site: &'static Location<'static>) -> usize {
    core::ptr::from_ref(site).addr()
}

/// A snapshot of the pending closures of every counted scope, by site. `Display` prints a
/// table, the busiest site first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    sites: Vec<ProfiledSite>,
}

/// One line of a [`Profile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProfiledSite {
    /// Where the closures were registered.
    pub location: &'static Location<'static>,
    /// How many are pending, across every counted scope and thread.
    pub pending: usize,
}

impl Profile {
    /// The sites with pending closures, the most first.
    #[must_use]
    pub fn sites(&self) -> &[ProfiledSite] {
        &self.sites
    }

    /// The closures pending across all sites.
    #[must_use]
    pub fn total(&self) -> usize {
        self.sites.iter().map(|site| site.pending).sum()
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
        writeln!(
            f,
            "{} closures pending in profiled scopes, at {} sites",
            self.total(),
            self.sites.len()
        )?;
        writeln!(f, "  {:>8}  site", "pending")?;
        for site in &self.sites {
            writeln!(f, "  {:>8}  {}", site.pending, site.location)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use core::panic::Location;

    use super::{add, remove, report};

    /// One line can have two `Location`s at two addresses (one per codegen unit); the report
    /// shows it once. The only test of this binary that touches the table.
    #[test]
    fn a_line_with_two_addresses_is_reported_once() {
        // Two statics with one value: one line at two addresses.
        static HERE: Location<'static> = *Location::caller();
        static COPY: Location<'static> = HERE;
        let (here, copy) = (&HERE, &COPY);
        assert!(!core::ptr::eq(here, copy));
        add(&[here, here, copy]);
        let profile = report();
        assert_eq!(profile.sites().len(), 1);
        assert_eq!(
            (profile.sites()[0].location, profile.sites()[0].pending),
            (here, 3)
        );
        remove(&[here, here, copy]);
        assert!(report().sites().is_empty());
    }
}
