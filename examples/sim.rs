//! Runs the deterministic simulation and reports seeds per second.
//! `cargo run --release --example sim -- [SEEDS] [KNOB] [FIRST_SEED] [THREADS]`
//! KNOB: none | takeover-without-dead | skip-delta-wait | no-watchdog |
//! clear-without-kill | no-kill | late-writes | trust-bad-checksum |
//! sanlock-token-check | sanlock-commit-check | warm-skips-phase1. `--trace SEED [KNOB]` prints
//! one seed's trace.

use hactl::sim::{self, Config, Knob, Sim};

fn knob(s: Option<&String>) -> Knob {
    match s.map(|s| s.as_str()) {
        None | Some("none") => Knob::None,
        Some("takeover-without-dead") => Knob::TakeoverWithoutDead,
        Some("skip-delta-wait") => Knob::SkipDeltaWait,
        Some("no-watchdog") => Knob::NoWatchdog,
        Some("clear-without-kill") => Knob::ClearWithoutKill,
        Some("no-kill") => Knob::NoKill,
        Some("late-writes") => Knob::LateWrites,
        Some("trust-bad-checksum") => Knob::TrustBadChecksum,
        Some("sanlock-token-check") => Knob::SanlockTokenCheck,
        Some("sanlock-commit-check") => Knob::SanlockCommitCheck,
        Some("warm-skips-phase1") => Knob::WarmSkipsPhase1,
        Some(o) => panic!("unknown knob {o}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(|s| s.as_str()) == Some("--trace") {
        let seed: u64 = args[1].parse().expect("seed");
        let o = Sim::run(
            seed,
            &Config {
                knob: knob(args.get(2)),
                trace: true,
            },
        );
        for l in &o.trace {
            println!("{l}");
        }
        println!("{:?}\n{:?}", o.violation, o.stats);
        return;
    }
    let seeds: u64 = args.first().map_or(100_000, |s| s.parse().expect("seeds"));
    let k = knob(args.get(1));
    let first: u64 = args.get(2).map_or(0, |s| s.parse().expect("first seed"));
    let threads = args.get(3).map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        |s| s.parse().expect("threads"),
    );
    let s = sim::run_many(first, seeds, k, threads, false);
    println!(
        "{} seeds ({}..{}) knob {:?} on {} threads: {:.1} s, {:.0} seeds/s, {} violations",
        s.seeds,
        first,
        first + seeds,
        k,
        threads,
        s.elapsed.as_secs_f64(),
        s.seeds_per_second(),
        s.violation_count
    );
    println!("{:?}", s.stats);
    println!("events/seed {:.0}", s.stats.events as f64 / s.seeds as f64);
    for o in &s.violations {
        print!("{}", sim::report(o, k));
    }
}
