//! The code in the README's tables, compiled and run. The README's code blocks are doctests;
//! its table cells are too short to be, so every cell is written out here in context, and
//! `every_table_cell_is_compiled_here` fails if a cell has no compiled counterpart in this
//! file (whitespace aside, `...` standing for any code).

#![cfg(feature = "std")]

mod common;

use std::cell::Cell;
use std::fs::File;
use std::io;

use scoped_defer::{
    CleanupErrors, IteratorExt, Scope, ScopeError, SendScope, defer, defer_on_success,
    defer_on_unwind, for_each_scoped, for_each_scoped_in, scope, try_for_each_scoped, try_scope,
};

fn open() -> io::Result<File> {
    tempfile::tempfile()
}

fn work_with(file: &mut File) {
    file.sync_all().unwrap();
}

/// "Coming from Go, Python or C++".
#[test]
#[cfg_attr(miri, ignore)] // files
fn coming_from_go_python_or_cpp() -> io::Result<()> {
    let count = Cell::new(0);
    let bump = || count.set(count.get() + 1);
    {
        defer! { bump(); }
    }
    scope(|s| {
        s.defer(bump);
    });

    let closed = try_scope(|s| {
        let f = s.hold(open()?, drop);
        work_with(f);
        let g = s.hold_fallible(open()?, |f| f.sync_all());
        work_with(g);
        let f = open()?;
        s.defer_fallible(move || f.sync_all());
        Ok::<_, io::Error>(())
    });
    assert!(closed.is_ok());

    let items = vec![String::from("a"), String::from("b")];
    for_each_scoped(items, |s, item| s.defer(move || drop(item)));
    let items = vec![1, 2, 3];
    items.into_iter().for_each_scoped(|s, _| s.defer(bump));

    common::quiet_panics();
    // Silenced by `catch_expected`; caught by the `catch_unwind` inside it, Go's `recover()`.
    let caught = common::catch_expected(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scope(|s| {
                s.defer(bump);
                panic!("recovered");
            })
        }))
    });
    assert!(caught.unwrap().is_err());

    let f = bump;
    let s = Scope::new();
    s.defer(f);
    let value = String::from("context");
    let cleanup = drop;
    let value = s.hold(value, cleanup);
    value.push('!');
    let mut s = s;
    let taken = s.take();
    s.run_now();
    drop(taken);

    let s = Scope::new();
    s.defer_fallible(|| Err("close failed"));
    let errors: CleanupErrors = s.finish().unwrap_err();
    assert_eq!(errors.len(), 1);

    let result = try_scope(|s| {
        s.defer_fallible(|| Err("close failed"));
        Err::<(), _>("write failed")
    });
    match result {
        Err(ScopeError::Body { error, suppressed }) => {
            assert_eq!(error, "write failed");
            assert_eq!(suppressed.unwrap().len(), 1);
        }
        other => panic!("unexpected {other:?}"),
    }

    let mut s = Scope::new();
    s.defer_on_error(bump);
    s.defer_on_success(bump);
    {
        defer_on_unwind! { bump(); }
        defer_on_success! { bump(); }
    }
    s.defer(|| panic!("dismissed, never run"));
    s.dismiss(); // the outcome-aware ones go too
    assert_eq!(count.get(), 8);
    Ok(())
}

/// The entry rows of both tables.
#[test]
fn entries() {
    use scoped_defer::{Held, Scope};

    let ran = Cell::new(0);
    let f = || ran.set(ran.get() + 1);
    let (value, cleanup) = (String::from("kept"), |_: String| ran.set(ran.get() + 10));
    let s = Scope::new();
    let undo = s.defer_entry(f);
    undo.cancel();
    let undo = s.defer_entry(f);
    undo.run_now();
    let v = s.hold_entry(value, cleanup);
    assert_eq!(Held::release(v), "kept");
    drop(s);
    assert_eq!(ran.get(), 1);
}

/// "What is in the crate".
#[test]
#[cfg_attr(miri, ignore)] // files
fn what_is_in_the_crate() -> io::Result<()> {
    let ran = Cell::new(0);
    let f = || ran.set(ran.get() + 1);
    let s = Scope::new();
    s.defer(f);
    defer!(s => f());
    let file = open()?;
    let file = s.hold(file, drop);
    work_with(file);
    let file = open()?;
    let file = s.hold_fallible(file, |f| f.sync_all());
    work_with(file);
    let mut s = s;
    s.set_error_handler(|error| panic!("{error}"));
    s.defer_fallible(|| Ok::<(), io::Error>(()));
    s.defer_on_error(f);
    s.defer_on_success(f);
    s.run_now();
    s.defer(f);
    s.dismiss();
    drop(s.take());
    assert!(s.finish().is_ok());

    assert_eq!(
        scope(|s| {
            s.defer(f);
            7
        }),
        7
    );
    assert!(
        try_scope(|s| {
            s.defer(f);
            Ok::<_, io::Error>(())
        })
        .is_ok()
    );
    let items = vec![String::from("a"), String::from("b")];
    for_each_scoped(items, |s, item| s.defer(move || drop(item)));
    assert!(try_for_each_scoped(0..2, |_, _| Ok::<_, io::Error>(())).is_ok());
    let items = vec![1, 2];
    items.into_iter().for_each_scoped(|s, _| s.defer(f));
    let mut scope = Scope::with_stats();
    for_each_scoped_in(&mut scope, 0..2, |s, _| s.defer(f));
    assert_eq!(scope.stats().unwrap().ran, 2);

    let n = 1;
    let s = Scope::with_limit(n);
    s.defer(f);
    assert!(s.try_defer(f).is_err());
    drop(s);
    let mut s = Scope::with_stats();
    s.set_limit(n);
    s.track_stats();
    s.defer(f);
    assert_eq!(s.stats().unwrap().sites().len(), 1);
    drop(s);
    // Process-wide: other tests of this binary may add to the report, never take from it.
    scoped_defer::profile::enable();
    let s = Scope::new();
    for _ in 0..10 {
        s.defer(f);
    }
    let report = scoped_defer::profile::report();
    assert!(
        report
            .sites()
            .iter()
            .any(|site| site.location.file() == file!())
    );
    scoped_defer::profile::disable();
    drop(s);
    drop(SendScope::new());
    let s: Scope<'_, 32> = Scope::default();
    assert_eq!(s.capacity(), 32);
    assert_eq!(ran.get(), 12 + 9); // nine more for the profile
    Ok(())
}

/// The `rayon` rows of both tables.
#[cfg(feature = "rayon")]
#[test]
fn in_parallel() {
    use rayon::prelude::*;
    use scoped_defer::{ParallelIteratorExt, par_for_each_scoped, par_try_for_each_scoped};

    let ran = std::sync::atomic::AtomicUsize::new(0);
    let f = || {
        ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    };
    let items = vec![1, 2, 3];
    let result = par_try_for_each_scoped(items, |s, item| {
        s.defer(f);
        if item > 0 { Ok(()) } else { Err(item) }
    });
    assert!(result.is_ok());
    let items = vec![1, 2, 3];
    par_for_each_scoped(items, |s, item| {
        s.defer(f);
        assert!(item > 0);
    });
    let items = vec![1, 2, 3];
    items.par_iter().for_each_scoped(|s, _| s.defer(f));
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 9);
}

/// The async rows of both tables.
#[test]
#[cfg_attr(miri, ignore)] // files
fn awaited() -> io::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use scoped_defer::{AsyncScope, async_scope, try_async_scope};

    let closed = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let counter = Arc::clone(&closed);
        let close = move |_conn: tokio::fs::File| async move {
            counter.fetch_add(1, Ordering::SeqCst);
        };
        let f = || {
            let counter = Arc::clone(&closed);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        };
        let conn = tokio::fs::File::from_std(open()?);
        tokio::spawn(async move {
            async_scope(async |s| {
                let conn = s.hold_async(conn, close);
                conn.sync_all().await.unwrap();
            })
            .await;
        })
        .await?;
        let value = open()?;
        try_async_scope(async |s| {
            s.defer_async(f());
            let value = s.hold_async(value, |v| async move {
                v.sync_all().unwrap();
            });
            value.sync_all()
        })
        .await?;
        let future = f();
        let scope = AsyncScope::new();
        let s = &scope;
        s.defer_async(future);
        scope.finish().await.map_err(io::Error::from)
    })?;
    assert_eq!(closed.load(Ordering::SeqCst), 3);
    Ok(())
}

/// The concurrent loop rows of both tables.
#[test]
#[cfg_attr(miri, ignore)] // tokio's runtime
fn concurrent() {
    use scoped_defer::{for_each_concurrent_scoped, try_for_each_concurrent_scoped};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (items, limit, n) = ((0..10).map(|i| i.to_string()), 4, 4);
        let result = try_for_each_concurrent_scoped(items, limit, async |s, item| {
            s.defer_async(async move { drop(item) });
            Ok::<(), io::Error>(())
        });
        result.await.unwrap();
        let items = (0..10).map(|i| i.to_string());
        for_each_concurrent_scoped(items, n, async |s, item| {
            s.defer(move || drop(item));
        })
        .await;
    });
}

/// The README's tables: the second column of every table whose header is one of these.
const TABLES: [&str; 2] = ["| you write | here |", "| you want | use |"];

/// The code spans of the second column of the README's code tables.
fn table_cells() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut cells = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        if TABLES.contains(&line) {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        // Split on unescaped `|` only.
        let line = line.replace("\\|", "\u{0}");
        let column = line.split('|').nth(2).expect("a second column");
        for (i, span) in column.split('`').enumerate() {
            if i % 2 == 1 {
                cells.push(span.replace('\u{0}', "|"));
            }
        }
    }
    cells
}

fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The cells whose code (whitespace aside, `...` standing for anything) is not written out
/// in this file above the checker.
fn uncompiled(cells: &[String]) -> Vec<&String> {
    let source = without_whitespace(include_str!("readme.rs"));
    let source = &source[..source.find("constTABLES").expect("the checker")];
    cells
        .iter()
        .filter(|cell| {
            without_whitespace(cell)
                .split("...")
                .any(|fragment| !source.contains(fragment))
        })
        .collect()
}

#[test]
fn every_table_cell_is_compiled_here() {
    let cells = table_cells();
    assert!(cells.len() > 40, "the tables were found: {cells:?}");
    let missing = uncompiled(&cells);
    assert!(
        missing.is_empty(),
        "README cells with no compiled counterpart here: {missing:?}"
    );
}

#[test]
fn the_checker_notices_a_cell_that_is_not_compiled() {
    let cells = [
        "let s = Scope::new(); s.defer(f);".to_string(),
        "s.defer_later(...)".to_string(),
        "scope(|s| { s.defer(...); })".to_string(),
    ];
    assert_eq!(uncompiled(&cells), [&cells[1]]);
}

/// A fenced code block of the README: the words after the opening fence, and the code.
#[derive(Debug)]
struct Block {
    info: String,
    code: String,
}

fn code_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in readme.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    code: String::new(),
                });
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.code.push_str(line);
                block.code.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block of the README is not closed");
    blocks
}

/// The README's blocks that rustdoc cannot test, because they need a feature that its doctests
/// of the README do not turn on. Each is fenced `rust ignore` in the README, kept here as an
/// exact copy (which rustfmt leaves alone: it is not a module), and compiled and run below.
const COPIES: [&str; 1] = [include_str!("readme_blocks/parallel.rs")];

#[cfg(feature = "rayon")]
mod parallel_block {
    include!("readme_blocks/parallel.rs");

    #[test]
    #[cfg_attr(miri, ignore)] // files
    fn runs() -> io::Result<()> {
        main()
    }
}

/// Why a Rust block of the README would not compile if pasted as shown, if it would not.
///
/// rustdoc's doctests compile each block of the README (it is the `guide` module's doc) as the
/// program it is when the block has its own `main`, but they hide lines that start with `# ` and
/// compile them too: a reader who pastes the block does not get those lines. So every Rust block
/// must be a whole program with no such line, and run as a doctest or from an exact copy here.
fn unpasteable(block: &Block) -> Option<String> {
    let words: Vec<&str> = block.info.split([' ', ',']).collect();
    if words[0] != "rust" {
        return None;
    }
    let hidden = block.code.lines().find(|line| {
        let line = line.trim_start();
        line == "#" || line.starts_with("# ") || line.starts_with("#\t")
    });
    if let Some(line) = hidden {
        return Some(format!("a line that rustdoc hides: {line:?}"));
    }
    if !block.code.contains("fn main(") {
        return Some("no `fn main`: not a whole program".into());
    }
    match words[1..] {
        [] => None, // a doctest
        ["ignore"] if COPIES.contains(&block.code.as_str()) => None,
        ["ignore"] => Some("ignored by rustdoc, and no exact copy in `COPIES`".into()),
        _ => Some(format!(
            "fence words rustdoc would act on: {:?}",
            block.info
        )),
    }
}

#[test]
fn every_rust_block_compiles_as_pasted() {
    let readme = include_str!("../README.md");
    let blocks: Vec<_> = code_blocks(readme)
        .into_iter()
        .filter(|block| block.info.starts_with("rust"))
        .collect();
    assert!(blocks.len() >= 9, "the blocks were found: {blocks:?}");
    let wrong: Vec<_> = blocks
        .iter()
        .filter_map(|block| unpasteable(block).map(|why| (why, &block.code)))
        .collect();
    assert!(
        wrong.is_empty(),
        "README blocks a reader cannot paste: {wrong:#?}"
    );
    for copy in COPIES {
        assert!(
            blocks.iter().any(|block| block.code == copy),
            "a copy in tests/readme_blocks/ is no longer a block of the README:\n{copy}"
        );
    }
    // The doctests come from here: the README is the guide module's doc.
    let lib = include_str!("../src/lib.rs");
    assert!(lib.contains(r#"doc = include_str!("../README.md")"#));
}

#[test]
fn the_block_checker_notices_what_a_reader_could_not_paste() {
    let block = |info: &str, code: &str| Block {
        info: info.into(),
        code: code.into(),
    };
    let fine = "use std::io;\nfn main() -> io::Result<()> {\n    Ok(())\n}\n";
    assert_eq!(unpasteable(&block("rust", fine)), None);
    assert_eq!(unpasteable(&block("toml", "# a comment\n")), None);
    assert_eq!(unpasteable(&block("rust ignore", COPIES[0])), None);
    let wrong = [
        block("rust", "# fn main() {\nlet x = 1;\n# }\n"),
        block("rust", "fn main() {\n    # let hidden = 1;\n}\n"),
        block("rust", "fn main() {\n#\n}\n"),
        block("rust", "let x = 1;\nassert_eq!(x, 1);\n"),
        block("rust ignore", fine),
        block("rust,no_run", fine),
    ];
    for block in &wrong {
        assert!(unpasteable(block).is_some(), "not noticed: {block:?}");
    }
}

#[test]
fn images_show_on_docs_rs_too() {
    let readme = include_str!("../README.md");
    // docs.rs cannot serve a relative image: each is shown inline by the guide module, and
    // hidden from rustdoc in the README (GitHub and crates.io drop `hidden`).
    assert!(
        !readme.contains("!["),
        "a Markdown image, which rustdoc would show broken"
    );
    let lib = include_str!("../src/lib.rs");
    let images: Vec<_> = readme
        .lines()
        .filter(|line| line.contains("<img"))
        .collect();
    assert!(!images.is_empty());
    for image in images {
        assert!(
            image.ends_with(" hidden>"),
            "not hidden from rustdoc: {image}"
        );
        let source = image
            .split("src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        let source = source.expect("a src");
        assert!(
            lib.contains(&format!(r#"include_str!("../{source}")"#)),
            "{source} is not inline in the guide"
        );
    }
    // The inline SVG must be one HTML block for rustdoc: a blank line would end it.
    let chart = include_str!("../docs/leak_check.svg");
    assert!(chart.starts_with("<svg") && !chart.lines().any(|line| line.trim().is_empty()));
}

/// The examples (name, required features), from `Cargo.toml` and `examples/`.
fn examples() -> Vec<(String, Vec<String>)> {
    let manifest = include_str!("../Cargo.toml");
    let mut examples: Vec<(String, Vec<String>)> = std::fs::read_dir("examples")
        .expect("examples/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
        .map(|path| {
            (
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                vec![],
            )
        })
        .collect();
    for section in manifest.split("[[example]]").skip(1) {
        let value = |key: &str| {
            section
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|rest| rest.trim_start_matches([' ', '=']).to_string())
        };
        let name = value("name").expect("an example's name");
        let name = name.trim_matches('"');
        let features = value("required-features").unwrap_or_default();
        let features = features.trim_matches(['[', ']']).split(',');
        let features = features.map(|feature| feature.trim().trim_matches('"').to_string());
        let entry = examples.iter_mut().find(|(example, _)| example == name);
        entry.expect("a declared example exists").1 = features.collect();
    }
    examples.sort();
    examples
}

/// Every `cargo run` command of the README, as written: in a code span or a shell block, up to
/// the span's end, a comment or the line's end. `.ci/run` finds and runs them the same way.
fn run_commands(readme: &str) -> Vec<String> {
    readme
        .split("cargo run ")
        .skip(1)
        .map(|rest| {
            let end = rest.find(['`', '#', '\n']).unwrap_or(rest.len());
            format!("cargo run {}", rest[..end].trim_end())
        })
        .collect()
}

#[test]
#[cfg_attr(miri, ignore)] // reads examples/
fn every_example_runs_with_the_command_the_readme_gives() {
    let commands = run_commands(include_str!("../README.md"));
    let examples = examples();
    assert!(examples.len() >= 9, "the examples were found: {examples:?}");
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let after = |flag: &str| {
            let at = words.iter().position(|word| *word == flag);
            at.and_then(|at| words.get(at + 1)).copied()
        };
        let name = after("--example").unwrap_or_else(|| panic!("no example in `{command}`"));
        let (_, required) = examples
            .iter()
            .find(|(example, _)| example == name)
            .unwrap_or_else(|| panic!("no example {name}, in `{command}`"));
        let features: Vec<&str> = after("--features").unwrap_or("").split(',').collect();
        for feature in required {
            assert!(
                features.contains(&feature.as_str()),
                "`{command}` lacks `--features {feature}`"
            );
        }
        assert!(
            words.contains(&"--release"),
            "`{command}`: the README runs all in release"
        );
    }
    for (name, _) in &examples {
        assert!(
            commands
                .iter()
                .any(|command| command.split_whitespace().any(|word| word == name)),
            "the README gives no command for the example {name}"
        );
    }
}
