//! Parallel scoped loops against the sequential one and against plain rayon: items with a few
//! microseconds of work and three deferred cleanups each. Run with
//! `cargo bench -p scoped-defer-benches --features rayon --bench parallel`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use scoped_defer::{ParallelIteratorExt, try_for_each_scoped};

const ITEMS: u64 = 2_000;

/// A few microseconds of work that the optimizer cannot skip.
fn work(item: u64) -> u64 {
    (0..2_000u64).fold(item, |acc, i| {
        black_box(acc.wrapping_mul(31).wrapping_add(i))
    })
}

fn cleanup(value: u64) -> Result<(), &'static str> {
    black_box(value);
    Ok(())
}

fn parallel(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("three_defers_per_item");
    group.throughput(Throughput::Elements(ITEMS));
    group.bench_function("sequential try_for_each_scoped", |b| {
        b.iter(|| {
            try_for_each_scoped(0..ITEMS, |s, item| {
                for k in 0..3 {
                    s.defer_fallible(move || cleanup(item + k));
                }
                black_box(work(item));
                Ok::<(), &str>(())
            })
            .unwrap();
        });
    });
    group.bench_function("par_try_for_each_scoped, 2 threads", |b| {
        b.iter(|| {
            pool.install(|| {
                (0..ITEMS)
                    .into_par_iter()
                    .try_for_each_scoped(|s, item| {
                        for k in 0..3 {
                            s.defer_fallible(move || cleanup(item + k));
                        }
                        black_box(work(item));
                        Ok::<(), &str>(())
                    })
                    .unwrap();
            });
        });
    });
    group.bench_function("rayon try_for_each, cleanups by hand, 2 threads", |b| {
        b.iter(|| {
            pool.install(|| {
                (0..ITEMS)
                    .into_par_iter()
                    .try_for_each(|item| {
                        black_box(work(item));
                        for k in (0..3).rev() {
                            cleanup(item + k)?;
                        }
                        Ok::<(), &str>(())
                    })
                    .unwrap();
            });
        });
    });
    group.finish();
}

criterion_group!(benches, parallel);
criterion_main!(benches);
