//! Registration sites: which lines registered a tracked scope's closures, for [`Stats`] and
//! for the message of a refused closure.
//!
//! [`Stats`]: crate::Stats

use alloc::vec::Vec;
use core::fmt;
use core::panic::Location;

use smallvec::SmallVec;

/// Entries kept inline, like a scope's default inline slots, so that a tracked scope that
/// stays small allocates only its extras.
const INLINE_SITES: usize = 8;

/// The closures one line of code registered on a scope: see [`Stats::sites`].
///
/// [`Stats::sites`]: crate::Stats::sites
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteStats {
    /// Where the closures were registered: the call to `defer`, `hold`, ... (or to
    /// `track_stats` / `set_limit`, for closures already pending when tracking began).
    pub location: &'static Location<'static>,
    /// Closures this line registered.
    pub registered: u64,
    /// Of those, how many are pending now.
    pub pending: usize,
    /// Of those, how many were pending when the scope reached its high-water mark: the line
    /// with the most is the one that piles up.
    pub pending_at_high_water: usize,
}

/// The bookkeeping behind [`SiteStats`], kept by scopes with stats or a limit.
#[derive(Debug)]
pub(crate) struct Sites {
    /// The site of every closure in the scope's storage, in registration order. The top
    /// `len()` entries are the scope's pending closures; any below them belong to closures a
    /// loop has set aside, and are the top again once the loop puts them back.
    stack: SmallVec<[&'static Location<'static>; INLINE_SITES]>,
    /// Per site, in order of first registration: closures consumed (run, dismissed or taken),
    /// and how many were pending at `high_water`.
    totals: SmallVec<[Total; 2]>,
    /// The most closures pending at a drain so far, which `Total::at_high_water` describes.
    high_water: usize,
    /// Whether the process-wide profile counts this scope's closures.
    #[cfg(feature = "std")]
    profiled: bool,
}

#[derive(Debug)]
struct Total {
    location: &'static Location<'static>,
    consumed: u64,
    at_high_water: usize,
}

impl Sites {
    /// Starts tracking a scope that holds `pending` closures already, whose lines are unknown:
    /// they are put down to `site`, where tracking began.
    pub(crate) fn new(pending: usize, site: &'static Location<'static>) -> Self {
        let mut sites = Sites {
            stack: SmallVec::new(),
            totals: SmallVec::new(),
            high_water: 0,
            #[cfg(feature = "std")]
            profiled: crate::profile::is_enabled(),
        };
        for _ in 0..pending {
            sites.registered(site);
        }
        sites
    }

    /// Records a closure registered at `site`.
    pub(crate) fn registered(&mut self, site: &'static Location<'static>) {
        self.stack.push(site);
        #[cfg(feature = "std")]
        if self.profiled {
            crate::profile::add(core::slice::from_ref(&site));
        }
    }

    /// Records that the top `count` closures were consumed (run, dismissed or taken).
    pub(crate) fn consumed(&mut self, count: usize) {
        let from = self.stack.len() - count;
        // Pending closures only accumulate between two drains, so a drain sees the most that
        // were pending since the last one.
        let new_high_water = count > self.high_water;
        if new_high_water {
            self.high_water = count;
            for total in &mut self.totals {
                total.at_high_water = 0;
            }
        }
        // By runs of one site: a pile-up is one long run.
        for run in self.stack[from..].chunk_by(|a, b| same_site(a, b)) {
            let total = total_of(&mut self.totals, run[0]);
            total.consumed += run.len() as u64;
            if new_high_water {
                total.at_high_water += run.len();
            }
        }
        #[cfg(feature = "std")]
        if self.profiled {
            crate::profile::remove(&self.stack[from..]);
        }
        self.stack.truncate(from);
    }

    /// Per site, with `pending` closures pending now: the busiest at the high-water mark first.
    pub(crate) fn snapshot(&self, pending: usize) -> Vec<SiteStats> {
        let now = &self.stack[self.stack.len() - pending..];
        // Pending now beyond every earlier drain: the high-water mark is now.
        let high_water_is_now = pending > self.high_water;
        let mut sites: Vec<SiteStats> = self
            .totals
            .iter()
            .map(|total| SiteStats {
                location: total.location,
                registered: total.consumed,
                pending: 0,
                pending_at_high_water: if high_water_is_now {
                    0
                } else {
                    total.at_high_water
                },
            })
            .collect();
        for run in now.chunk_by(|a, b| same_site(a, b)) {
            let site = run[0];
            let index = match sites.iter().position(|s| same_site(s.location, site)) {
                Some(index) => index,
                None => {
                    sites.push(SiteStats {
                        location: site,
                        registered: 0,
                        pending: 0,
                        pending_at_high_water: 0,
                    });
                    sites.len() - 1
                }
            };
            let stats = &mut sites[index];
            stats.registered += run.len() as u64;
            stats.pending += run.len();
            if high_water_is_now {
                stats.pending_at_high_water += run.len();
            }
        }
        sort_busiest_first(&mut sites);
        sites
    }

    /// The site with the most of the top `pending` closures, and how many it has.
    pub(crate) fn busiest(&self, pending: usize) -> Option<(&'static Location<'static>, usize)> {
        let now = &self.stack[self.stack.len() - pending..];
        // Counted by runs, per distinct line: linear in the pending closures.
        let mut counts: SmallVec<[(&'static Location<'static>, usize); 4]> = SmallVec::new();
        for run in now.chunk_by(|a, b| same_site(a, b)) {
            match counts.iter_mut().find(|(site, _)| same_site(site, run[0])) {
                Some((_, count)) => *count += run.len(),
                None => counts.push((run[0], run.len())),
            }
        }
        // The most; of equals, the line registered first.
        counts
            .into_iter()
            .reduce(|best, next| if next.1 > best.1 { next } else { best })
    }
}

/// Whether two locations are the same line: by address first, which is one comparison and
/// almost always decides (a line can have several addresses, one per codegen unit).
fn same_site(a: &'static Location<'static>, b: &'static Location<'static>) -> bool {
    core::ptr::eq(a, b) || a == b
}

/// The totals of `location`, added if it is new.
fn total_of<'a>(
    totals: &'a mut SmallVec<[Total; 2]>,
    location: &'static Location<'static>,
) -> &'a mut Total {
    let index = match totals.iter().position(|t| same_site(t.location, location)) {
        Some(index) => index,
        None => {
            totals.push(Total {
                location,
                consumed: 0,
                at_high_water: 0,
            });
            totals.len() - 1
        }
    };
    &mut totals[index]
}

/// Orders sites by closures pending at the high-water mark, then by closures registered; ties
/// keep their order (of first registration).
pub(crate) fn sort_busiest_first(sites: &mut [SiteStats]) {
    sites.sort_by(|a, b| {
        (b.pending_at_high_water, b.registered).cmp(&(a.pending_at_high_water, a.registered))
    });
}

/// Writes `sites` as a table, at most `rows` of them.
pub(crate) fn write_table(
    f: &mut fmt::Formatter<'_>,
    sites: &[SiteStats],
    rows: usize,
) -> fmt::Result {
    writeln!(
        f,
        "  {:>13} {:>10} {:>8}  site",
        "at high water", "registered", "pending"
    )?;
    for site in sites.iter().take(rows) {
        writeln!(
            f,
            "  {:>13} {:>10} {:>8}  {}",
            site.pending_at_high_water, site.registered, site.pending, site.location
        )?;
    }
    if sites.len() > rows {
        writeln!(f, "  ... and {} more sites", sites.len() - rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use core::panic::Location;

    use super::Sites;

    /// One line can have two `Location`s at two addresses (one per codegen unit): it is still
    /// one site.
    #[test]
    fn a_line_with_two_addresses_is_one_site() {
        // Two statics with one value: one line at two addresses.
        static HERE: Location<'static> = *Location::caller();
        static COPY: Location<'static> = HERE;
        let (here, copy) = (&HERE, &COPY);
        let mut sites = Sites::new(0, here);
        sites.registered(here);
        sites.registered(copy);
        sites.registered(here);
        assert_eq!(sites.busiest(3), Some((here, 3)));
        sites.consumed(2);
        let stats = sites.snapshot(1);
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].registered, stats[0].pending), (3, 1));
    }
}
