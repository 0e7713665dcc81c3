//! Instruction counts per deferred closure, exact and immune to machine noise.
//!
//! Not a timing benchmark: `benches/instructions.sh` runs this program under
//! `valgrind --tool=cachegrind` twice per case, once with `n` closures per scope and once with
//! empty scopes, and divides the difference by the number of closures. Usage:
//! `instructions MECHANISM N SCOPES`, where MECHANISM is an index into the mechanism table.

mod mechanisms;

use std::hint::black_box;

use mechanisms::{MECHANISMS, Sink};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() != 3 {
        for (index, (name, _)) in MECHANISMS.iter().enumerate() {
            println!("{index}\t{name}");
        }
        return;
    }
    let parse = |s: &str| s.parse::<usize>().expect("a number");
    let (index, n, scopes) = (parse(&args[0]), parse(&args[1]), parse(&args[2]));
    let (_, mechanism) = MECHANISMS[index];
    let sink = Sink::default();
    for _ in 0..scopes {
        mechanism(&sink, black_box(n));
    }
    black_box(sink.acc.get());
}
