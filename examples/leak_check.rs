//! Finding a defer-in-a-loop pile-up the way Go finds a leak: `runtime.MemStats` sampled
//! over time draws a curve that climbs and never falls, and `pprof` says which line
//! allocated. Here the process-wide profile says which line registered the pending closures.
//!
//! The program runs a small "service": a configuration loader, a connection pool and two
//! request handlers, with ordinary scopes: nothing in them was changed for the search, which
//! is only `profile::enable()` in `main`. One handler hides the bug (a cleanup
//! deferred on the request's scope inside a loop, each holding an open file); the other is
//! the fix (a scope per item). It samples the pending closures and open files per item for
//! both, draws the two curves in the terminal, writes them as an SVG, and names the guilty
//! line from the profile alone.
//!
//! Usage: `cargo run --release --example leak_check --features chart [-- OUT.svg]` (by default
//! next to the example's binary; the path is printed). Exits non-zero if the profile does not
//! point at the guilty line, or if the curves do not show the leak.

use std::fs::File;
use std::io;
use std::process::ExitCode;

use scoped_defer::{Scope, for_each_scoped_in, profile};

const ITEMS: usize = 200;

/// The line of the defer inside the loop, which the profile must find.
const GUILTY_LINE: u32 = line!() + 27;

/// What one run recorded after each item.
#[derive(Default)]
struct Samples {
    pending: Vec<usize>,
    open_files: Vec<usize>,
}

impl Samples {
    fn record(&mut self) {
        self.pending.push(profile::report().total());
        self.open_files.push(open_files().unwrap_or(0));
    }
}

fn load_config(scope: &Scope<'_>) -> io::Result<File> {
    let file = tempfile::tempfile()?;
    scope.defer(|| ()); // stands for unlocking the configuration
    Ok(file)
}

/// The bug: every item's cleanup goes to the request's scope, so files stay open until the
/// request ends.
fn handle_leaky(request: &mut Scope<'_>, samples: &mut Samples) -> io::Result<()> {
    for item in 0..ITEMS {
        let file = tempfile::tempfile()?;
        request.defer(move || drop((item, file)));
        samples.record();
    }
    Ok(())
}

/// The fix: a scope per item.
fn handle_fixed(request: &mut Scope<'_>, samples: &mut Samples) -> io::Result<()> {
    let mut opened = Ok(());
    for_each_scoped_in(request, 0..ITEMS, |s, item| match tempfile::tempfile() {
        Ok(file) => {
            s.defer(move || drop((item, file)));
            samples.record();
        }
        Err(error) => opened = Err(error),
    });
    opened
}

/// Runs the service once with `handler`, returning the samples and the profile taken just
/// before the request ends (the moment a leak is at its worst).
fn run(
    handler: fn(&mut Scope<'_>, &mut Samples) -> io::Result<()>,
) -> io::Result<(Samples, profile::Profile)> {
    let service = Scope::new();
    let _config = load_config(&service)?;
    let pool = Scope::new();
    for _ in 0..4 {
        pool.defer(|| ()); // stands for closing a pooled connection
    }
    let mut samples = Samples::default();
    let mut request = Scope::new();
    handler(&mut request, &mut samples)?;
    let report = profile::report();
    request.run_now();
    Ok((samples, report))
}

/// Open file descriptors of this process, where the platform shows them.
fn open_files() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// Plots series of the same length as rows of text, `height` lines tall.
fn text_chart(series: &[(&str, char, &[usize])], height: usize, width: usize) -> String {
    let max = series
        .iter()
        .flat_map(|(_, _, values)| values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let len = series[0].2.len();
    let mut grid = vec![vec![' '; width]; height];
    for (_, mark, values) in series {
        for column in 0..width {
            let value = values[column * (len - 1) / (width - 1)];
            grid[(height - 1) - value * (height - 1) / max][column] = *mark;
        }
    }
    let mut chart = String::new();
    for (i, line) in grid.iter().enumerate() {
        let label = if i == 0 {
            format!("{max:>5} ")
        } else if i == height - 1 {
            format!("{:>5} ", 0)
        } else {
            " ".repeat(6)
        };
        chart.push_str(&label);
        chart.push('|');
        chart.extend(line);
        chart.push('\n');
    }
    chart.push_str(&format!("      +{}\n", "-".repeat(width)));
    chart.push_str(&format!("       items 1 to {len}; "));
    let legend: Vec<String> = series
        .iter()
        .map(|(name, mark, _)| format!("{mark} {name}"))
        .collect();
    chart.push_str(&legend.join(", "));
    chart.push('\n');
    chart
}

/// The same curves as an SVG.
fn svg_chart(path: &str, series: &[(&str, &[usize])]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let max = series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .max()
        .unwrap_or(1);
    let root = SVGBackend::new(path, (720, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "pending cleanups and open files, per item",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0..series[0].1.len(), 0..max + max / 10)?;
    chart
        .configure_mesh()
        .x_desc("items processed")
        .y_desc("count")
        .draw()?;
    let colors = [RED, BLUE, MAGENTA, GREEN];
    for ((name, values), color) in series.iter().zip(colors) {
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(i, &v)| (i + 1, v)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Where the chart can always be written: by default next to this binary, in the target
    // directory wherever `CARGO_TARGET_DIR` puts it (`./target` may not exist); a path given
    // gets its directory created. The path is printed once written.
    let out = match std::env::args_os().nth(1) {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::current_exe()
            .map(|exe| exe.with_file_name("leak_check.svg"))
            .unwrap_or_else(|_| std::env::temp_dir().join("leak_check.svg")),
    };
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::path::absolute(&out)?
        .into_os_string()
        .into_string()
        .map_err(|path| format!("not a UTF-8 path: {path:?}"))?;
    profile::enable();
    let (leaky, leaky_report) = run(handle_leaky)?;
    let (fixed, fixed_report) = run(handle_fixed)?;

    println!("Pending cleanups in the profile after each item:");
    print!(
        "{}",
        text_chart(
            &[
                ("leaky handler", '#', &leaky.pending),
                ("fixed handler", '.', &fixed.pending),
            ],
            10,
            60,
        )
    );
    let has_fds = open_files().is_some();
    if has_fds {
        println!(
            "Open files: leaky {} -> {}, fixed {} -> {}",
            leaky.open_files[0],
            leaky.open_files[ITEMS - 1],
            fixed.open_files[0],
            fixed.open_files[ITEMS - 1]
        );
    }

    println!("\nThe profile of the leaky run, taken before its request ended:\n{leaky_report}");
    let top = leaky_report.sites()[0];
    let source = include_str!("leak_check.rs");
    let text = source
        .lines()
        .nth(top.location.line() as usize - 1)
        .unwrap_or("?")
        .trim();
    println!("The busiest site is {}: `{text}`", top.location);
    println!(
        "The fixed run's profile: {} pending at most.",
        fixed_report.total()
    );

    let mut series = vec![
        ("pending cleanups, leaky", &leaky.pending[..]),
        ("pending cleanups, fixed", &fixed.pending[..]),
    ];
    if has_fds {
        series.push(("open files, leaky", &leaky.open_files[..]));
        series.push(("open files, fixed", &fixed.open_files[..]));
    }
    svg_chart(&out, &series)?;
    println!("Wrote the chart to {out}");

    // A limit stops the pile-up at its first closure too many, and names the line.
    let mut limited = Scope::with_limit(50);
    std::panic::set_hook(Box::new(|_| {})); // expected; printed below
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle_leaky(&mut limited, &mut Samples::default())
    }));
    let _ = std::panic::take_hook();
    let message = stopped
        .err()
        .and_then(|p| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    println!("\nwith_limit(50): {message}");

    let guilty = top.location.file() == file!() && top.location.line() == GUILTY_LINE;
    // It never falls and ends with every item's closure pending. (Flat at zero for the first
    // few items: the profile counts a scope once it outgrows its inline slots.)
    let climbs =
        leaky.pending.windows(2).all(|w| w[1] >= w[0]) && leaky.pending.last() == Some(&ITEMS);
    let flat = fixed.pending.iter().all(|&p| p == fixed.pending[0]);
    let named = message.contains(&format!("{}:{GUILTY_LINE}:", file!()));
    if guilty && climbs && flat && named {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "FAILED: guilty line found: {guilty}, leaky curve climbs: {climbs}, fixed curve \
             flat: {flat}, limit names the line: {named} (expected line {GUILTY_LINE}, got {})",
            top.location
        );
        Ok(ExitCode::FAILURE)
    }
}
