//! The daemon's configuration: sanlock.conf text and sanlock's daemon
//! options on any input, never panicking, and every value that sanlock
//! bounds staying within its bounds.
#![no_main]

use hactl::daemon::config::DaemonConfig;
use libfuzzer_sys::fuzz_target;

fn sane(c: &DaemonConfig) {
    assert!(c.io_timeout > 0);
    assert!(c.kill_grace_seconds <= 60);
    assert!(c.max_worker_threads >= 2);
    assert!(c.watchdog_fire_timeout > 0);
    assert!(c.write_init_io_timeout > 0);
    assert!(c.set_bitmap_seconds() > 0);
    assert!(c.max_clients > 0);
    assert!(c.logfile_max_kb >= hactl::daemon::config::MIN_LOGFILE_MAX_KB);
    assert!(c.renewal_history_size <= hactl::daemon::config::MAX_RENEWAL_HISTORY);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The input, first as a sanlock.conf ...
    let mut c = DaemonConfig::default();
    let notes = c.apply_conf(&text);
    assert!(notes.len() <= text.lines().count());
    sane(&c);
    // ... then as daemon arguments separated by NULs or newlines.
    let args: Vec<String> = text
        .split(['\0', '\n'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut d = c.clone();
    if d.apply_args(&args).is_ok() {
        // -D stands alone; every other option takes the next word as its
        // value, even a "-D".
        let (mut i, mut debug) = (0, c.debug);
        while i < args.len() {
            if args[i] == "-D" {
                debug = true;
                i += 1;
            } else {
                i += 2;
            }
        }
        assert_eq!(d.debug, debug, "{args:?}");
    } else {
        assert!(!args.is_empty());
    }
    sane(&d);
});
