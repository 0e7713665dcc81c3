//! The async concurrent loop against `buffer_unordered` with the same cleanups written by
//! hand and awaited: 2,000 items of about 1.5 µs of async work and two async cleanups each,
//! at most 16 at once, on a current-thread tokio runtime. Run with
//! `cargo bench -p scoped-defer-benches --bench concurrent`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use scoped_defer::for_each_concurrent_scoped;

const ITEMS: u64 = 2_000;
const LIMIT: usize = 16;

/// About 1.5 µs of work, split by an `.await` that really suspends.
async fn work(item: u64) -> u64 {
    let half = |seed: u64| {
        (0..600u64).fold(seed, |acc, i| {
            black_box(acc.wrapping_mul(31).wrapping_add(i))
        })
    };
    let first = half(item);
    tokio::task::yield_now().await;
    half(first)
}

/// An async cleanup: a `shutdown().await` that suspends once.
async fn cleanup(value: u64) {
    tokio::task::yield_now().await;
    black_box(value);
}

fn concurrent(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("two_async_cleanups_per_item");
    group.throughput(Throughput::Elements(ITEMS));
    group.bench_function("buffer_unordered, cleanups awaited by hand", |b| {
        b.iter(|| {
            runtime.block_on(
                futures_util::stream::iter(0..ITEMS)
                    .map(|item| async move {
                        black_box(work(item).await);
                        cleanup(item + 1).await;
                        cleanup(item).await;
                    })
                    .buffer_unordered(LIMIT)
                    .for_each(|()| async {}),
            );
        });
    });
    group.bench_function("for_each_concurrent_scoped", |b| {
        b.iter(|| {
            runtime.block_on(for_each_concurrent_scoped(
                0..ITEMS,
                LIMIT,
                async |s, item| {
                    s.defer_async(cleanup(item));
                    s.defer_async(cleanup(item + 1));
                    black_box(work(item).await);
                },
            ));
        });
    });
    group.finish();
}

criterion_group!(benches, concurrent);
criterion_main!(benches);
