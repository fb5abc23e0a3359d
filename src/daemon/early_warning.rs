//! The daemon's side of [`crate::early_warning`]: the lockspace thread
//! reports each renewal's start and end, the main loop ticks every half
//! second (so a renewal stuck in I/O is still noticed), and every warning
//! raised or cleared is published: a log line, a record for `host_status
//! --history` (kept by the watch), and, for this host's own lease, an
//! event on the lockspace's `reg_event` fds. `metrics.rs` and `web.rs`
//! read the watch.

use tracing::warn;

use super::lockspace::Space;
use crate::early_warning::{EVENT_LEASE_HEALTHY, EVENT_LEASE_WARNING, Now, Warning};

/// Now on the monotonic clock (ms) and the wall clock.
pub fn now() -> Now {
    let mono_ms = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0);
    Now {
        mono_ms,
        wall: crate::history::Moment::now().wall,
    }
}

impl Space {
    /// A renewal of our host_id starts (its I/O follows).
    pub fn warn_renewal_started(&self) {
        self.state.lock().warn.renewal_started(now());
    }

    /// A renewal ended after `total_ms`: the new timestamp, or the error.
    /// Called after the lockspace state has taken in the result.
    pub fn warn_renewal_done(&self, total_ms: u64, result: Result<u64, i32>) {
        let (ws, generation) = {
            let mut st = self.state.lock();
            let last = st.core.status().renewal_last_success;
            let ws = st.warn.renewal_done(now(), total_ms, result, last);
            (ws, st.core.host_generation())
        };
        self.publish(&ws, generation);
    }

    /// The main loop's check: our last good renewal's age, the renewal in
    /// progress, and the other hosts.
    pub fn warn_tick(&self) {
        let (ws, generation) = {
            let mut st = self.state.lock();
            if st.core.status().renewal_last_success == 0 {
                return;
            }
            let last = st.core.status().renewal_last_success;
            let st = &mut *st;
            (
                st.warn.tick(now(), last, st.core.hosts()),
                st.core.host_generation(),
            )
        };
        self.publish(&ws, generation);
    }

    fn publish(&self, ws: &[Warning], generation: u64) {
        for w in ws {
            warn!("{}", w.message);
            if w.raised() {
                *self.counters.warnings.lock().entry(w.reason).or_default() += 1;
            }
            if w.host_id == self.host_id {
                let (event, data) = if w.raised() {
                    (
                        EVENT_LEASE_WARNING,
                        w.reason.code() << 32 | w.seconds_left.min(u32::MAX as u64),
                    )
                } else {
                    (EVENT_LEASE_HEALTHY, 0)
                };
                self.send_own_event(generation, event, data);
            }
        }
    }

    /// An event about our own lease on every `reg_event` fd: addressed to
    /// us and from us (see [`crate::early_warning::EVENT_LEASE_WARNING`]).
    fn send_own_event(&self, generation: u64, event: u64, data: u64) {
        self.deliver_events(&[crate::hosts::HostEvent {
            host_id: self.host_id,
            generation,
            event,
            data,
            from_host_id: self.host_id,
            from_generation: generation,
        }]);
    }
}
