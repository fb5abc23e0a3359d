//! The HA simulation (src/sim/ha.rs) outside the test suite.
//!   ha_sim [SEEDS] [KNOB] [FIRST_SEED]    summary of many seeds
//!   ha_sim --trace SEED [KNOB]            one seed's trace
//! KNOB: none restart-on-fail no-lease restart-on-fail-no-lease
//!       lease-without-dead-wait lease-without-dead-wait-restart-on-fail

use hactl::sim::ha::{self, HaConfig, HaKnob, HaSim};

fn knob(s: Option<&String>) -> HaKnob {
    match s.map(String::as_str).unwrap_or("none") {
        "none" => HaKnob::None,
        "restart-on-fail" => HaKnob::RestartOnFail,
        "no-lease" => HaKnob::NoLease,
        "restart-on-fail-no-lease" => HaKnob::RestartOnFailNoLease,
        "lease-without-dead-wait" => HaKnob::LeaseWithoutDeadWait,
        "lease-without-dead-wait-restart-on-fail" => HaKnob::LeaseWithoutDeadWaitRestartOnFail,
        "fencing" => HaKnob::Fencing,
        "fencing-liar" => HaKnob::FencingLiar,
        k => {
            eprintln!("unknown knob {k}");
            std::process::exit(2)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--trace") {
        let Some(seed) = args.get(1).and_then(|s| s.parse().ok()) else {
            eprintln!("usage: ha_sim --trace SEED [KNOB]");
            std::process::exit(2)
        };
        let knob = knob(args.get(2));
        let o = HaSim::run(seed, &HaConfig { knob, trace: true });
        for l in &o.trace {
            println!("{l}");
        }
        println!("{:?}", o.stats);
        std::process::exit(i32::from(o.violation.is_some()));
    }
    let seeds = args.first().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let knob = knob(args.get(1));
    let first = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let s = ha::run_many(first, seeds, knob, threads);
    let st = s.stats;
    println!(
        "{} seeds in {:.1} s, {} violations; recovered {}/{} crashed VMs within the bound, mean {} ms, max {} ms",
        s.seeds,
        s.elapsed.as_secs_f64(),
        s.violation_count,
        st.recovered,
        st.crash_cases,
        st.sum_recovery_ms / st.recovered.max(1),
        st.max_recovery_ms
    );
    println!("{st:?}");
    for o in &s.violations {
        print!("{}", ha::report(o, knob));
    }
    std::process::exit(i32::from(s.violation_count > 0));
}
