//! Registration sites: which line registered each pending closure, kept with the closures.
//!
//! A scope's storage owns a [`Sites`] once something needs the lines: stats or a limit (then
//! every closure's line is recorded), or the process-wide [profile](crate::profile) (then the
//! closures it counts are). The lines are kept as runs, one per stretch of slots registered by
//! one line, because a pile-up is one long run: recording a closure whose line is the last
//! one's costs a comparison. Setting closures aside, putting them back and `take` move the
//! storage, and its `Sites` with it, so the lines can never disagree with the closures.

use alloc::vec::Vec;
use core::fmt;
use core::panic::Location;

use smallvec::SmallVec;

#[cfg(feature = "std")]
use crate::profile::{self, Entry};

/// What is known of where the closures of a run come from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site {
    /// Nothing: closures registered while nothing recorded their lines (only the profile
    /// leaves some unrecorded).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    Unknown,
    /// Recorded for the scope's stats or limit.
    Line(&'static Location<'static>),
    /// Recorded and counted in the process-wide profile.
    #[cfg(feature = "std")]
    Counted(&'static Entry),
    /// A vacant slot: its closure was consumed early, through an entry handle.
    Vacant,
}

impl Site {
    /// The line, if known.
    pub(crate) fn location(self) -> Option<&'static Location<'static>> {
        match self {
            Site::Unknown | Site::Vacant => None,
            Site::Line(location) => Some(location),
            #[cfg(feature = "std")]
            Site::Counted(entry) => Some(entry.location),
        }
    }

    /// The same variant and the same address: the test of the hot path, which a line with
    /// several addresses only sends down the slower one.
    #[inline(always)]
    fn is_exactly(self, other: Site) -> bool {
        match (self, other) {
            (Site::Line(a), Site::Line(b)) => core::ptr::eq(a, b),
            #[cfg(feature = "std")]
            (Site::Counted(a), Site::Counted(b)) => core::ptr::eq(a, b),
            _ => false,
        }
    }

    fn is(self, other: Site) -> bool {
        match (self, other) {
            (Site::Unknown, Site::Unknown) | (Site::Vacant, Site::Vacant) => true,
            (Site::Line(a), Site::Line(b)) => same_line(a, b),
            #[cfg(feature = "std")]
            (Site::Counted(a), Site::Counted(b)) => core::ptr::eq(a, b),
            _ => false,
        }
    }
}

/// Slots `start..` (up to the next run's start, or the end of the storage) share a site.
#[derive(Clone, Copy, Debug)]
struct Run {
    start: usize,
    site: Site,
}

/// The sites of a storage's pending closures, by runs. Slots before the first run are
/// [`Site::Unknown`].
#[derive(Debug)]
pub(crate) struct Sites {
    /// In increasing order of `start`, no two neighbours with the same site.
    runs: SmallVec<[Run; 2]>,
    /// The last run's site ([`Site::Unknown`] without runs): read on every registration.
    last: Site,
    /// The tracked fast path's bound, set by the arena after a registration that recorded its
    /// line, `fast_line`: the next ones from that line need nothing but their slot while the
    /// arena's `used` word, XOR `fast_flags`, is below `fast_end` (so its flags are still
    /// these, and its byte count below the end of the slots at hand and the limit). Zero: no
    /// fast path. Every change to the storage but a registration clears it, and so does a new
    /// limit, so `fast_line` is the last run's line whenever the bound is set.
    pub(crate) fast_end: usize,
    /// See `fast_end`.
    pub(crate) fast_flags: usize,
    /// See `fast_end`.
    pub(crate) fast_line: Option<&'static Location<'static>>,
    /// The profile's count of the closures that were pending when it began to count this
    /// storage: the slots `0..count`, each one unit of the entry.
    #[cfg(feature = "std")]
    spill: Option<Spill>,
    /// The index of the next slot the profile counts: [`NOT_COUNTING`] until it begins,
    /// [`PAUSED`] while profiling is off.
    #[cfg(feature = "std")]
    pub(crate) next_sample: usize,
    /// The last entry counted, to spare a look-up when a line registers again.
    #[cfg(feature = "std")]
    cached: Option<&'static Entry>,
    /// Whether the profile has counted any slot here since the storage was last empty: the
    /// drains need only look at the runs if so.
    #[cfg(feature = "std")]
    counted: bool,
}

/// The profile's count of the closures that were pending when it began to count a storage,
/// whose lines were not recorded.
#[cfg(feature = "std")]
#[derive(Debug)]
struct Spill {
    entry: &'static Entry,
    /// Units of `entry` still counted for them.
    units: usize,
    /// How many of them are still pending.
    live: usize,
    /// The slots they are among: `0..end`.
    end: usize,
}

#[cfg(feature = "std")]
impl Spill {
    /// One of the closures leaves early: it takes its share of the units (all that are left,
    /// with the last one), so that the count stays in proportion and ends at zero.
    fn leave(&mut self) {
        let kept = self.units * (self.live - 1) / self.live;
        self.entry.remove(self.units - kept);
        self.units = kept;
        self.live -= 1;
    }
}

/// [`Sites::next_sample`] before the profile counts anything in this storage.
#[cfg(feature = "std")]
pub(crate) const NOT_COUNTING: usize = usize::MAX;

/// [`Sites::next_sample`] once the profile counted some closures and was then disabled: no
/// more are counted until the storage empties, and nothing is counted twice.
#[cfg(feature = "std")]
pub(crate) const PAUSED: usize = usize::MAX - 1;

impl Sites {
    pub(crate) fn new() -> Self {
        Sites {
            runs: SmallVec::new(),
            last: Site::Unknown,
            fast_end: 0,
            fast_flags: 0,
            fast_line: None,
            #[cfg(feature = "std")]
            spill: None,
            #[cfg(feature = "std")]
            next_sample: NOT_COUNTING,
            #[cfg(feature = "std")]
            cached: None,
            #[cfg(feature = "std")]
            counted: false,
        }
    }

    /// Records that slot `index`, the last one, was registered at `site`.
    #[inline(always)]
    pub(crate) fn record(&mut self, index: usize, site: Site) {
        #[cfg(feature = "std")]
        if let Site::Counted(entry) = site {
            entry.add(1);
            self.counted = true;
        }
        // A pile-up: the line of the last run, again.
        if !self.last.is_exactly(site) {
            self.start_run(index, site);
        }
    }

    /// Whether a closure registered at `site` may take the tracked fast path's slot: the bound
    /// is for that line at that address, so it would continue the last run (see `fast_end`).
    #[inline(always)]
    pub(crate) fn on_fast_line(&self, site: &'static Location<'static>) -> bool {
        // One comparison: `None` is the null pointer, which no line is.
        core::ptr::eq(self.fast_line.map_or(core::ptr::null(), |line| line), site)
    }

    /// Counts slot `index`, registered at `site`, if the exact profile counts it and it
    /// continues the last run, a counted one of that line at that address: the registration
    /// a pile-up repeats. Returns whether it did.
    #[cfg(feature = "std")]
    #[inline(always)]
    pub(crate) fn count_again(&mut self, index: usize, site: &'static Location<'static>) -> bool {
        let Site::Counted(entry) = self.last else {
            return false;
        };
        if index != self.next_sample
            || !core::ptr::eq(entry.location, site)
            || entry.weight != 1
            || profile::period() != 1
        {
            return false;
        }
        entry.add(1);
        self.next_sample = index + 1;
        true
    }

    /// [`Sites::record`] for a site other than the last run's.
    #[cold]
    #[inline(never)]
    fn start_run(&mut self, index: usize, site: Site) {
        if self.runs.is_empty() {
            // A storage's first run (the first closure of a scope with stats or a limit).
            self.runs.push(Run { start: index, site });
            self.set_last(site);
            return;
        }
        match self.runs.last_mut() {
            Some(last) if last.site.is(site) => {}
            // An empty run (see `close`) takes the site.
            Some(last) if last.start == index => {
                last.site = site;
                let len = self.runs.len();
                if len >= 2 && self.runs[len - 2].site.is(site) {
                    self.runs.pop();
                }
            }
            _ => self.runs.push(Run { start: index, site }),
        }
        self.sync_last();
    }

    /// Copies the last run's site to `last`.
    fn sync_last(&mut self) {
        self.set_last(self.runs.last().map_or(Site::Unknown, |run| run.site));
    }

    /// Sets `last`, the last run's site, which the caller knows without looking at the runs.
    fn set_last(&mut self, last: Site) {
        self.last = last;
        // The runs changed: the fast path's bound goes too, until the arena sets it anew.
        self.fast_end = 0;
    }

    /// Marks the slots from `index` on as registered unseen, until the next record.
    #[cfg(feature = "std")]
    fn close(&mut self, index: usize) {
        if !matches!(self.last, Site::Unknown) {
            self.runs.push(Run {
                start: index,
                site: Site::Unknown,
            });
            self.last = Site::Unknown;
        }
    }

    /// Puts down the closures `0..len` whose line is unknown to `site`, where tracking began:
    /// from here on every slot has a line.
    pub(crate) fn start_tracking(&mut self, len: usize, site: &'static Location<'static>) {
        for run in &mut self.runs {
            if let Site::Unknown = run.site {
                run.site = Site::Line(site);
            }
        }
        if len > 0 && self.runs.first().is_none_or(|first| first.start > 0) {
            self.runs.insert(
                0,
                Run {
                    start: 0,
                    site: Site::Line(site),
                },
            );
        }
        self.runs.dedup_by(|later, kept| later.site.is(kept.site));
        self.sync_last();
    }

    /// Forgets the slots `from..len`, which left the storage: the profile stops counting
    /// them. Slots below `from` stay, with the closures pending since before counting began
    /// (which leave one by one through [`Sites::vacate`] and [`Sites::pop`], or all at once).
    #[cfg_attr(not(feature = "std"), allow(unused_variables))]
    pub(crate) fn consumed(&mut self, from: usize, len: usize) {
        #[cfg(feature = "std")]
        if self.counted {
            self.visit(from, len, |site, count| {
                if let Site::Counted(entry) = site {
                    entry.remove(count);
                }
            });
            if from == 0 {
                if let Some(spill) = self.spill.take() {
                    spill.entry.remove(spill.units);
                }
            }
        }
        if from == 0 {
            self.runs.clear();
            #[cfg(feature = "std")]
            {
                self.next_sample = NOT_COUNTING;
                self.counted = false;
            }
            self.set_last(Site::Unknown);
            return;
        }
        let kept = self.runs.partition_point(|run| run.start < from);
        self.runs.truncate(kept);
        // The slots after the counted ones are registered again: the gap to the next one
        // counted stays as it was.
        #[cfg(feature = "std")]
        if self.next_sample < PAUSED && self.next_sample > from {
            self.next_sample -= len - from;
        }
        self.sync_last();
    }

    /// The site of slot `index`.
    fn site_of(&self, index: usize) -> Site {
        match self.runs.partition_point(|run| run.start <= index) {
            0 => Site::Unknown,
            after => self.runs[after - 1].site,
        }
    }

    /// The line of slot `index`, if known.
    pub(crate) fn line_of(&self, index: usize) -> Option<&'static Location<'static>> {
        self.site_of(index).location()
    }

    /// Slot `index`, below the last slot, is left vacant: its closure was consumed
    /// early, and leaves the profile's counts.
    pub(crate) fn vacate(&mut self, index: usize) {
        self.leave_count(index);
        self.mark_vacant(index);
    }

    /// The last slot, `last`, leaves early, and with it the vacant slots from `kept` on. A
    /// storage left with no more than its `inline` slots is counted no more, as one that never
    /// grew past them: the profile counts it anew from the next time it does.
    #[cfg_attr(not(feature = "std"), allow(unused_variables))]
    pub(crate) fn pop(&mut self, last: usize, kept: usize, inline: usize) {
        // Its own count goes with the slots `consumed` visits (the vacant ones have none).
        self.leave_spill(last);
        self.consumed(kept, last + 1);
        // The slots from `kept` on are registered anew: until a record says otherwise, they
        // are unseen, and not of the run before, which the profile may have counted (the
        // fast path registers without a record while the profile is paused).
        #[cfg(feature = "std")]
        self.close(kept);
        #[cfg(feature = "std")]
        if kept <= inline {
            if let Some(spill) = self.spill.take() {
                spill.entry.remove(spill.units);
            }
            self.next_sample = NOT_COUNTING;
            self.counted = false;
        } else if let Some(spill) = &mut self.spill {
            // Slots registered from `kept` on are new: not among those the spill counts.
            spill.end = spill.end.min(kept);
        }
    }

    /// Takes slot `index`, leaving early, out of the profile's counts.
    #[cfg_attr(not(feature = "std"), allow(unused_variables))]
    fn leave_count(&mut self, index: usize) {
        #[cfg(feature = "std")]
        if let Site::Counted(entry) = self.site_of(index) {
            entry.remove(1);
        }
        self.leave_spill(index);
    }

    /// Takes slot `index`, leaving early, out of the count of the closures that were pending
    /// when counting began, if it is one of them.
    #[cfg_attr(not(feature = "std"), allow(unused_variables))]
    fn leave_spill(&mut self, index: usize) {
        #[cfg(feature = "std")]
        if self.counted {
            if let Some(spill) = &mut self.spill {
                if index < spill.end {
                    spill.leave();
                    if spill.live == 0 {
                        self.spill = None;
                    }
                }
            }
        }
    }

    /// Marks slot `index`, below the last slot, as vacant: no line's count includes
    /// it.
    pub(crate) fn mark_vacant(&mut self, index: usize) {
        self.fast_end = 0;
        let after = self.runs.partition_point(|run| run.start <= index);
        let site = match after {
            0 => Site::Unknown,
            _ => self.runs[after - 1].site,
        };
        if let Site::Vacant = site {
            return;
        }
        // The slot after keeps the site, unless it begins a run of its own.
        if self
            .runs
            .get(after)
            .is_none_or(|next| next.start != index + 1)
        {
            self.runs.insert(
                after,
                Run {
                    start: index + 1,
                    site,
                },
            );
        }
        match after {
            0 => {}
            _ if self.runs[after - 1].start == index => {
                self.runs[after - 1].site = Site::Vacant;
                self.runs.dedup_by(|later, kept| later.site.is(kept.site));
                self.sync_last();
                return;
            }
            _ => {}
        }
        self.runs.insert(
            after,
            Run {
                start: index,
                site: Site::Vacant,
            },
        );
        self.runs.dedup_by(|later, kept| later.site.is(kept.site));
        self.sync_last();
    }

    /// Tells `visit` the site of the slots `from..len` and how many, run by run, first
    /// registered first (skipping slots before the first run).
    fn visit(&self, from: usize, len: usize, mut visit: impl FnMut(Site, usize)) {
        // The run that holds slot `from` (a drain of the whole storage starts at the first).
        let first = match from {
            0 => 0,
            _ => self
                .runs
                .partition_point(|run| run.start < from)
                .saturating_sub(1),
        };
        let runs = &self.runs[first..];
        for (i, run) in runs.iter().enumerate() {
            let start = run.start.max(from);
            let end = runs.get(i + 1).map_or(len, |next| next.start).min(len);
            if end > start {
                visit(run.site, end - start);
            }
        }
    }

    /// Tells `visit` how many of the slots `0..len` each run's line registered, first
    /// registered first.
    pub(crate) fn lines(
        &self,
        len: usize,
        mut visit: impl FnMut(&'static Location<'static>, usize),
    ) {
        self.visit(0, len, |site, count| {
            if let Some(location) = site.location() {
                visit(location, count);
            }
        });
    }

    /// How many of the slots `0..len` each line registered, in order of first registration.
    pub(crate) fn by_line(&self, len: usize) -> Vec<(&'static Location<'static>, usize)> {
        let mut lines: Vec<(&'static Location<'static>, usize)> = Vec::new();
        self.lines(len, |location, count| {
            match lines.iter_mut().find(|(line, _)| same_line(line, location)) {
                Some((_, total)) => *total += count,
                None => lines.push((location, count)),
            }
        });
        lines
    }
}

#[cfg(feature = "std")]
impl Sites {
    /// Records slot `index`, registered at `site`, for the profile that samples one slot in
    /// `period` (a sampling period of zero: profiling is off). `tracking` says whether every
    /// slot is recorded. Afterwards `next_sample` is the next slot to count, up to which
    /// registrations need not be seen.
    pub(crate) fn sample(
        &mut self,
        index: usize,
        live: usize,
        site: &'static Location<'static>,
        period: usize,
        tracking: bool,
    ) {
        if period == 0 {
            if self.next_sample != NOT_COUNTING {
                self.next_sample = PAUSED;
            }
        } else if self.next_sample == NOT_COUNTING {
            self.begin_counting(index, live, site, period);
        } else if self.next_sample == PAUSED {
            self.next_sample = index + profile::gap(period) - 1;
        }
        if index >= self.next_sample && period != 0 {
            let entry = match self.cached {
                Some(entry) if entry.is_for(site, period) => entry,
                _ => *self.cached.insert(profile::entry(site, period)),
            };
            self.record(index, Site::Counted(entry));
            self.next_sample = index.saturating_add(profile::gap(period));
            if !tracking && self.next_sample > index + 1 {
                self.close(index + 1);
            }
        } else if tracking {
            self.record(index, Site::Line(site));
        } else {
            self.close(index);
        }
    }

    /// Begins counting this storage at slot `index`: of the `live` closures already pending
    /// (fewer than `index` if some slots are vacant), the ones a sampler would have picked
    /// are put down to `site`.
    fn begin_counting(
        &mut self,
        index: usize,
        live: usize,
        site: &'static Location<'static>,
        period: usize,
    ) {
        let mut next = profile::gap(period) - 1;
        let mut picked = 0;
        while next < live {
            picked += 1;
            next = next.saturating_add(profile::gap(period));
        }
        if picked > 0 {
            let entry = profile::entry(site, period);
            entry.add(picked);
            self.spill = Some(Spill {
                entry,
                units: picked,
                live,
                end: index,
            });
            self.counted = true;
        }
        self.next_sample = next.saturating_add(index - live);
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        // Only ever dropped once its storage is drained.
        #[cfg(feature = "std")]
        debug_assert!(self.spill.is_none());
    }
}

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

/// Whether two locations are the same line: by address first, which is one comparison and
/// almost always decides (a line can have several addresses, one per codegen unit).
pub(crate) fn same_line(a: &'static Location<'static>, b: &'static Location<'static>) -> bool {
    core::ptr::eq(a, b)
        || (a.line() == b.line() && a.column() == b.column() && a.file() == b.file())
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
        let more = sites.len() - rows;
        writeln!(f, "  ... and {more} more {}", plural(more, "site", "sites"))?;
    }
    Ok(())
}

/// `one` or `many`, by `count`.
pub(crate) fn plural(count: usize, one: &'static str, many: &'static str) -> &'static str {
    if count == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use core::panic::Location;

    use super::{Site, Sites};

    /// One line can have two `Location`s at two addresses (one per codegen unit): it is still
    /// one line.
    #[test]
    fn a_line_with_two_addresses_is_one_line() {
        // Two statics with one value: one line at two addresses.
        static HERE: Location<'static> = *Location::caller();
        static COPY: Location<'static> = HERE;
        let (here, copy) = (&HERE, &COPY);
        let mut sites = Sites::new();
        sites.record(0, Site::Line(here));
        sites.record(1, Site::Line(copy));
        sites.record(2, Site::Line(here));
        assert_eq!(sites.by_line(3), [(here, 3)]);
        sites.consumed(1, 3);
        assert_eq!(sites.by_line(1), [(here, 1)]);
    }

    /// Consuming the last slots keeps the gap to the next slot the profile counts: the slots
    /// registered again in their place are as far from it as before.
    #[cfg(feature = "std")]
    #[test]
    fn consuming_the_last_slots_keeps_the_gap_to_the_next_sample() {
        let here = Location::caller();
        let mut sites = Sites::new();
        (0..20).for_each(|index| sites.record(index, Site::Line(here)));
        sites.next_sample = 30; // ten slots past the end
        sites.consumed(15, 20);
        assert_eq!(sites.next_sample, 25, "still ten past the end");
        assert_eq!(sites.by_line(15), [(here, 15)]);
    }

    /// Runs split where the line changes and are counted by line, in order of first
    /// registration; consuming part of a run keeps the rest.
    #[test]
    fn runs_follow_the_lines_and_partial_consumption() {
        let (a, b) = (Location::caller(), Location::caller());
        let mut sites = Sites::new();
        for (index, line) in [a, a, b, a].into_iter().enumerate() {
            sites.record(index, Site::Line(line));
        }
        assert_eq!(sites.by_line(4), [(a, 3), (b, 1)]);
        assert_eq!(sites.by_line(2), [(a, 2)]);
        let mut seen = alloc::vec::Vec::new();
        sites.lines(4, |line, count| seen.push((line, count)));
        assert_eq!(seen, [(a, 2), (b, 1), (a, 1)]);
        sites.consumed(1, 4);
        assert_eq!(sites.by_line(1), [(a, 1)]);
        sites.record(1, Site::Line(b));
        assert_eq!(sites.by_line(2), [(a, 1), (b, 1)]);
    }

    /// A record at the start of an empty run (left by the profile's `close`) takes it over,
    /// and merges with the run before if that has the same line: no two neighbouring runs
    /// have one site.
    #[cfg(feature = "std")]
    #[test]
    fn an_empty_run_taken_over_merges_with_its_neighbour() {
        let (a, b) = (Location::caller(), Location::caller());
        let mut sites = Sites::new();
        sites.record(0, Site::Line(a));
        sites.close(1);
        assert_eq!(sites.runs.len(), 2);
        sites.record(1, Site::Line(a));
        assert_eq!(sites.runs.len(), 1, "merged into the run of the same line");
        sites.close(2);
        sites.record(2, Site::Line(b));
        assert_eq!(
            sites.runs.len(),
            2,
            "another line: the empty run becomes its run"
        );
        assert_eq!(sites.by_line(3), [(a, 2), (b, 1)]);
    }

    /// Neighbouring vacant slots make one run, and the slots around keep their line.
    #[test]
    fn vacant_neighbours_make_one_run() {
        let a = Location::caller();
        let mut sites = Sites::new();
        for index in 0..6 {
            sites.record(index, Site::Line(a));
        }
        sites.mark_vacant(2);
        sites.mark_vacant(3);
        sites.mark_vacant(3);
        assert_eq!(sites.runs.len(), 3, "{:?}", sites.runs);
        assert_eq!(sites.by_line(6), [(a, 4)]);
        // Unknown slots (before any run) likewise.
        let mut unknown = Sites::new();
        unknown.record(6, Site::Line(a));
        unknown.mark_vacant(1);
        unknown.mark_vacant(2);
        assert_eq!(unknown.runs.len(), 3, "{:?}", unknown.runs);
        assert_eq!(unknown.by_line(7), [(a, 1)]);
        // A vacant slot right before another line's run adds no run of its own line.
        let b = Location::caller();
        let mut two = Sites::new();
        for (index, line) in [a, a, a, b, b].into_iter().enumerate() {
            two.record(index, Site::Line(line));
        }
        two.mark_vacant(2);
        assert_eq!(two.runs.len(), 3, "{:?}", two.runs);
        assert_eq!(two.by_line(5), [(a, 2), (b, 2)]);
    }

    /// Closures that were pending when counting began leave one by one, each with its share
    /// of the units, all gone with the last.
    #[cfg(feature = "std")]
    #[test]
    fn the_spill_loses_its_units_in_proportion() {
        let _profile = crate::profile::tests::exclusive();
        let entry = crate::profile::entry(Location::caller(), 3);
        let before = entry.pending();
        entry.add(2);
        let mut spill = super::Spill {
            entry,
            units: 2,
            live: 4,
            end: 4,
        };
        let mut seen = alloc::vec::Vec::new();
        while spill.live > 0 {
            spill.leave();
            seen.push((spill.units, spill.live));
        }
        assert_eq!(seen, [(1, 3), (0, 2), (0, 1), (0, 0)]);
        assert_eq!(entry.pending(), before);
    }

    /// Tracking that begins puts down every unknown slot to its line, and only those.
    #[test]
    fn tracking_puts_down_the_unknown_slots() {
        let (a, b) = (Location::caller(), Location::caller());
        let mut sites = Sites::new();
        sites.record(2, Site::Line(a));
        sites.record(3, Site::Unknown);
        sites.start_tracking(5, b);
        assert_eq!(sites.by_line(5), [(b, 4), (a, 1)]);
        let mut empty = Sites::new();
        empty.start_tracking(0, b);
        assert!(empty.by_line(0).is_empty());
    }
}
