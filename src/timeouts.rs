//! Every delta-lease timeout derives from an io_timeout (sanlock's
//! `timeouts.c`). A host is judged with the io_timeout written in its own
//! lease, not with ours.

/// sanlock's `DEFAULT_WATCHDOG_FIRE_TIMEOUT`: seconds from the last
/// keepalive until the watchdog resets the machine.
pub const DEFAULT_WATCHDOG_FIRE_TIMEOUT: u64 = 60;

/// Seconds of CLOCK_MONOTONIC: the clock sanlock writes into leases and
/// judges hosts by.
pub fn monotime() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64)
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in milliseconds (timers and I/O latency); its whole
/// seconds are [`monotime`].
pub fn monotime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// The timeouts of one io_timeout, all in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub io_timeout: u64,
    pub watchdog_fire_timeout: u64,
}

impl Timeouts {
    pub fn new(io_timeout: u64) -> Self {
        Timeouts {
            io_timeout,
            watchdog_fire_timeout: DEFAULT_WATCHDOG_FIRE_TIMEOUT,
        }
    }

    /// How often a host renews its delta lease.
    pub fn id_renewal_seconds(&self) -> u64 {
        2 * self.io_timeout
    }

    /// Renewals late by this much are logged.
    pub fn id_renewal_warn_seconds(&self) -> u64 {
        6 * self.io_timeout
    }

    /// No successful renewal for this long: the host has lost its lease
    /// (its holders must be stopped), and others call it FAIL.
    pub fn id_renewal_fail_seconds(&self) -> u64 {
        8 * self.io_timeout
    }

    /// After this long without a renewal, the host's watchdog has fired:
    /// others may call it DEAD and take over its leases.
    pub fn host_dead_seconds(&self) -> u64 {
        8 * self.io_timeout + self.watchdog_fire_timeout
    }

    /// How long a bit stays set in the request bitmap.
    pub fn set_bitmap_seconds(&self) -> u64 {
        6 * self.io_timeout
    }

    /// Waiting to be sure an owner of a held host_id is gone.
    pub fn delta_large_delay(&self) -> u64 {
        8 * self.io_timeout
    }

    /// Waiting after our write before checking nobody else wrote.
    pub fn delta_short_delay(&self) -> u64 {
        2 * self.io_timeout
    }

    /// How long a held host_id is watched before taking it.
    pub fn delta_acquire_held_delay(&self) -> u64 {
        self.host_dead_seconds().max(self.delta_large_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanlock_defaults() {
        let t = Timeouts::new(10);
        assert_eq!(t.id_renewal_seconds(), 20);
        assert_eq!(t.id_renewal_fail_seconds(), 80);
        assert_eq!(t.host_dead_seconds(), 140);
        assert_eq!(t.delta_acquire_held_delay(), 140);
        let t = Timeouts::new(1);
        assert_eq!(t.id_renewal_fail_seconds(), 8);
        assert_eq!(t.host_dead_seconds(), 68);
    }
}
