//! Placeholder replaced by the performance benchmarks.
fn main() {}
