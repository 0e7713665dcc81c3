//! Criterion benchmarks: the cost of a deferred closure by mechanism, in loops, and around a
//! lock. Run with `cargo bench --bench defer`; compare ratios within one run, not absolute
//! times across machines.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

mod mechanisms;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mechanisms::{MECHANISMS, Sink, SpinLock, locked};

fn per_defer(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_defer");
    let sink = Sink::default();
    for n in [1usize, 8, 1000] {
        group.throughput(Throughput::Elements(n as u64));
        for (name, mechanism) in MECHANISMS {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter(|| mechanism(&sink, black_box(n)));
            });
        }
    }
    group.finish();
    black_box(sink.acc.get());
}

fn loops(c: &mut Criterion) {
    let mut group = c.benchmark_group("loop_10000_items");
    let sink = Sink::default();
    for per_item in [1usize, 3] {
        group.throughput(Throughput::Elements(10_000 * per_item as u64));
        group.bench_with_input(
            BenchmarkId::new("for_each_scoped", per_item),
            &per_item,
            |b, &k| {
                b.iter(|| mechanisms::loop_scoped(&sink, black_box(10_000), k));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("block guards", per_item),
            &per_item,
            |b, &k| {
                b.iter(|| mechanisms::loop_block_guards(&sink, black_box(10_000), k));
            },
        );
    }
    group.finish();
    black_box(sink.acc.get());
}

fn around_a_lock(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_unlock");
    let lock = SpinLock::default();
    let sink = Sink::default();
    let cases: [(&str, locked::Case); 4] = [
        ("no defer", locked::no_defer),
        ("one defer!", locked::one_defer),
        ("nested defer!", locked::nested_defer),
        ("one Scope::defer", locked::one_scope_defer),
    ];
    for (name, case) in cases {
        group.bench_function(name, |b| b.iter(|| case(&lock, &sink)));
    }
    group.finish();
    black_box(sink.acc.get());
}

criterion_group!(benches, per_defer, loops, around_a_lock);
criterion_main!(benches);
