//! What a daemon does when it can no longer renew its host_id (sanlock's
//! `check_our_lease`, `kill_pids` and `all_pids_dead` in main.c), as a pure
//! state machine: the caller supplies the clock, the last successful renewal
//! and the processes still using the lockspace, and performs the actions.
//!
//! The rules, with io_timeout T and watchdog_fire_timeout W:
//! - no successful renewal for 8T (or a corrupt renewal: our lease was taken
//!   or changed under us) → the lockspace is dead: start killing its holders;
//! - each holder gets at most one signal a second: SIGTERM (or its killpath,
//!   run only once) until last_success + 8T + kill_grace_seconds, SIGKILL
//!   from then on;
//!   after 100 signals a holder is given up on (it is stuck in the kernel)
//!   and only the watchdog can end it;
//! - once every holder is gone: stop the lockspace and close the watchdog
//!   connection, so the host is not reset;
//! - meanwhile the watchdog (armed at each renewal to expire at
//!   last_success + 8T) resets the host W seconds after its expiry.
//!
//! Others take over our leases host_dead_seconds = 8T + W after they last
//! saw our lease change, so every holder is dead by then: killed, or reset.

use crate::timeouts::Timeouts;

/// sanlock's `kill_count_max`: signals sent to one pid before giving up.
pub const KILL_COUNT_MAX: u32 = 100;

/// sanlock's main loop period, normally and while killing (milliseconds).
pub const CHECK_INTERVAL_MS: u64 = 1000;
pub const RECOVERY_CHECK_INTERVAL_MS: u64 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    pub io_timeout: u64,
    pub watchdog_fire_timeout: u64,
    pub kill_grace_seconds: u64,
}

impl RecoveryConfig {
    /// sanlock's `setup_timeouts`: a grace that was not configured shrinks
    /// with a short watchdog (15 s under 60, none under 30), so SIGKILL comes
    /// before the watchdog would fire.
    pub fn new(io_timeout: u64, watchdog_fire_timeout: u64, kill_grace: Option<u64>) -> Self {
        let kill_grace_seconds = match kill_grace {
            Some(g) => g.min(60),
            None if watchdog_fire_timeout < 30 => 0,
            None if watchdog_fire_timeout < 60 => 15,
            None => 40,
        };
        RecoveryConfig {
            io_timeout,
            watchdog_fire_timeout,
            kill_grace_seconds,
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            io_timeout: self.io_timeout,
            watchdog_fire_timeout: self.watchdog_fire_timeout,
        }
    }

    /// When the watchdog armed at a renewal expires (wdmd's `test_live`).
    pub fn watchdog_expire(&self, last_success: u64) -> u64 {
        last_success + self.timeouts().id_renewal_fail_seconds()
    }

    /// The latest time the watchdog resets the host if nothing renews.
    pub fn watchdog_fire(&self, last_success: u64) -> u64 {
        self.watchdog_expire(last_success) + self.watchdog_fire_timeout
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The holder's killpath program (instead of SIGTERM, during the grace).
    RunKillpath,
    Term,
    Kill,
}

/// A process holding leases in this lockspace, as the daemon knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// It registered a killpath.
    pub killpath: bool,
    /// `SANLK_RESTRICT_SIGKILL` / `SANLK_RESTRICT_SIGTERM`: use the other signal.
    pub restrict_sigkill: bool,
    pub restrict_sigterm: bool,
}

impl Holder {
    pub fn plain(pid: u32) -> Self {
        Holder {
            pid,
            killpath: false,
            restrict_sigkill: false,
            restrict_sigterm: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The lockspace just failed (log it; refuse new acquires from now on).
    LockspaceFailed { corrupt: bool, gap: u64 },
    /// Send this to a holder.
    Signal { pid: u32, signal: Signal },
    /// A holder did not die after [`KILL_COUNT_MAX`] signals: only the
    /// watchdog can end it now.
    Stuck { pid: u32 },
    /// Every holder is gone: stop the lockspace (its thread releases the
    /// host_id if the last renewal succeeded) and close the watchdog
    /// connection. Sent once.
    AllClear,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Renewing; nothing to do.
    Normal,
    /// Killing holders.
    Killing,
    /// Killing gave up on stuck holders; waiting for them or the watchdog.
    GaveUp,
    /// All holders gone, lockspace stopped.
    Cleared,
}

#[derive(Clone, Copy, Debug)]
struct Kills {
    pid: u32,
    count: u32,
    last: u64,
    /// The killpath was run: sanlock runs it once per holder
    /// (`CL_RUNPATH_SENT`); the later seconds of the grace count as kill
    /// attempts but send nothing, and SIGKILL follows the grace.
    killpath_run: bool,
}

/// One lockspace's failure handling.
#[derive(Clone, Debug)]
pub struct Recovery {
    pub cfg: RecoveryConfig,
    state: State,
    kills: Vec<Kills>,
}

impl Recovery {
    pub fn new(cfg: RecoveryConfig) -> Self {
        Recovery {
            cfg,
            state: State::Normal,
            kills: Vec::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The lockspace has failed: new acquires must be refused, and an
    /// acquire that finishes now must not be handed to its process.
    pub fn space_dead(&self) -> bool {
        self.state != State::Normal
    }

    /// Milliseconds until the next [`Recovery::check`] (sanlock's main loop).
    pub fn next_check_ms(&self) -> u64 {
        match self.state {
            State::Killing | State::GaveUp => RECOVERY_CHECK_INTERVAL_MS,
            _ => CHECK_INTERVAL_MS,
        }
    }

    /// The first whole second at which [`Recovery::check`] would act on a
    /// lease last renewed at `last_success` (lets a simulation skip ticks).
    pub fn fail_time(&self, last_success: u64) -> u64 {
        last_success + self.cfg.timeouts().id_renewal_fail_seconds()
    }

    /// A renewal attempt just ended: if the lease is lost now (no success
    /// for 8T, or corrupt), the lockspace fails at once rather than at the
    /// next main-loop check, so that no acquire is handed out meanwhile.
    /// The holders are killed from the next [`Recovery::check`] on.
    pub fn fail_now(&mut self, now: u64, last_success: u64, corrupt: bool) -> Option<Action> {
        let gap = now.saturating_sub(last_success);
        if self.state != State::Normal
            || !(corrupt || gap >= self.cfg.timeouts().id_renewal_fail_seconds())
        {
            return None;
        }
        self.state = State::Killing;
        Some(Action::LockspaceFailed { corrupt, gap })
    }

    /// One main-loop check at `now` (monotonic seconds). `corrupt`: a
    /// renewal found our lease changed by someone else. `holders`: the
    /// processes still alive and holding leases in this lockspace.
    /// `force_kill`: the lockspace is being removed by force (SIGKILL now).
    pub fn check(
        &mut self,
        now: u64,
        last_success: u64,
        corrupt: bool,
        force_kill: bool,
        holders: &[Holder],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Normal {
            let gap = now.saturating_sub(last_success);
            if !(corrupt || force_kill || gap >= self.cfg.timeouts().id_renewal_fail_seconds()) {
                return out;
            }
            self.state = State::Killing;
            out.push(Action::LockspaceFailed { corrupt, gap });
        }
        if self.state == State::Cleared {
            return out;
        }
        // Forget pids that are gone; they count as dead.
        self.kills
            .retain(|k| holders.iter().any(|h| h.pid == k.pid));
        if holders.is_empty() {
            self.state = State::Cleared;
            out.push(Action::AllClear);
            return out;
        }
        if self.state == State::GaveUp {
            return out;
        }
        // sanlock gives the holders until the grace ends after the fail time,
        // counted from the latest renewal (a late renewal extends it).
        let in_grace = now
            < last_success
                + self.cfg.timeouts().id_renewal_fail_seconds()
                + self.cfg.kill_grace_seconds;
        for h in holders {
            let k = match self.kills.iter_mut().find(|k| k.pid == h.pid) {
                Some(k) => k,
                None => {
                    self.kills.push(Kills {
                        pid: h.pid,
                        count: 0,
                        last: 0,
                        killpath_run: false,
                    });
                    self.kills.last_mut().unwrap()
                }
            };
            if k.count >= KILL_COUNT_MAX || (k.count > 0 && now.saturating_sub(k.last) < 1) {
                continue;
            }
            k.count += 1;
            k.last = now;
            let mut signal = if force_kill {
                Signal::Kill
            } else if self.cfg.kill_grace_seconds > 0 && in_grace && h.killpath {
                Signal::RunKillpath
            } else if in_grace {
                Signal::Term
            } else {
                Signal::Kill
            };
            if signal == Signal::Kill && h.restrict_sigkill {
                signal = Signal::Term;
            }
            if signal == Signal::Term && h.restrict_sigterm {
                signal = Signal::Kill;
            }
            let repeat = signal == Signal::RunKillpath && k.killpath_run;
            k.killpath_run |= signal == Signal::RunKillpath;
            if !repeat {
                out.push(Action::Signal { pid: h.pid, signal });
            }
            if k.count >= KILL_COUNT_MAX {
                out.push(Action::Stuck { pid: h.pid });
            }
        }
        if self
            .kills
            .iter()
            .all(|k| k.count >= KILL_COUNT_MAX && holders.iter().any(|h| h.pid == k.pid))
        {
            self.state = State::GaveUp;
        }
        out
    }
}

/// sanlock's `MAX_AV_COUNT`: a killpath's argv, program included.
pub const KILLPATH_MAX_ARGV: usize = 8;

/// The argv a killpath runs with, split from its registered args string as
/// sanlock's helper does (`run_path` in helper.c): arguments are separated
/// by whitespace, `\\` and `\ ` (backslash + whitespace) escape, letters,
/// digits and punctuation are kept, and anything else (another escape, a
/// control or non-ASCII byte, a trailing backslash) ends the arguments;
/// at most 8 entries, the pid last when the client asked for it.
pub fn killpath_argv(path: &[u8], args: &[u8], pid: Option<i32>) -> Vec<Vec<u8>> {
    let mut av = vec![path.to_vec()];
    // The helper's message keeps 127 bytes and a NUL.
    let args = &args[..args.len().min(127)];
    let args = &args[..args.iter().position(|&b| b == 0).unwrap_or(args.len())];
    let mut arg = Vec::new();
    let mut i = 0;
    while i < args.len() && av.len() < KILLPATH_MAX_ARGV {
        let c = args[i];
        if c == b'\\' {
            match args.get(i + 1) {
                Some(&n) if n == b'\\' || n.is_ascii_whitespace() || n == 0x0b => {
                    arg.push(n);
                    i += 2;
                    continue;
                }
                _ => break,
            }
        }
        if c.is_ascii_alphanumeric() || c.is_ascii_punctuation() {
            arg.push(c);
        } else if c.is_ascii_whitespace() || c == 0x0b {
            if !arg.is_empty() {
                av.push(std::mem::take(&mut arg));
            }
        } else {
            break;
        }
        i += 1;
    }
    if av.len() < KILLPATH_MAX_ARGV && !arg.is_empty() {
        av.push(arg);
    }
    if let Some(pid) = pid.filter(|&p| p != 0)
        && av.len() < KILLPATH_MAX_ARGV
    {
        av.push(pid.to_string().into_bytes());
    }
    av
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(a: &[Action]) -> Vec<(u32, Signal)> {
        a.iter()
            .filter_map(|a| match a {
                Action::Signal { pid, signal } => Some((*pid, *signal)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn renewing_host_does_nothing_until_the_fail_time() {
        let mut r = Recovery::new(RecoveryConfig::new(10, 60, None));
        assert!(
            r.check(179, 100, false, false, &[Holder::plain(7)])
                .is_empty()
        );
        assert!(!r.space_dead());
        let a = r.check(180, 100, false, false, &[Holder::plain(7)]);
        assert_eq!(
            a[0],
            Action::LockspaceFailed {
                corrupt: false,
                gap: 80
            }
        );
        assert_eq!(signals(&a), vec![(7, Signal::Term)]);
        assert!(r.space_dead());
    }

    #[test]
    fn term_once_a_second_during_grace_then_kill_then_clear() {
        let mut r = Recovery::new(RecoveryConfig::new(10, 60, None));
        let h = [Holder::plain(7)];
        r.check(180, 100, false, false, &h);
        // 200 ms later: no second signal within the same second
        assert!(signals(&r.check(180, 100, false, false, &h)).is_empty());
        assert_eq!(
            signals(&r.check(181, 100, false, false, &h)),
            vec![(7, Signal::Term)]
        );
        // grace 40 s after the fail time: SIGKILL
        assert_eq!(
            signals(&r.check(220, 100, false, false, &h)),
            vec![(7, Signal::Kill)]
        );
        assert_eq!(r.check(221, 100, false, false, &[]), vec![Action::AllClear]);
        assert_eq!(r.state(), State::Cleared);
        assert!(r.check(222, 100, false, false, &[]).is_empty());
    }

    #[test]
    fn corrupt_lease_kills_at_once_and_short_watchdog_has_no_grace() {
        let mut r = Recovery::new(RecoveryConfig::new(1, 10, None));
        assert_eq!(r.cfg.kill_grace_seconds, 0);
        // corrupt: signals start at once, SIGTERM until the fail time + grace
        let a = r.check(101, 100, true, false, &[Holder::plain(3)]);
        assert_eq!(signals(&a), vec![(3, Signal::Term)]);
        let a = r.check(108, 100, true, false, &[Holder::plain(3)]);
        assert_eq!(signals(&a), vec![(3, Signal::Kill)]);
        assert_eq!(r.cfg.watchdog_fire(100), 118);
    }

    #[test]
    fn restrictions_and_killpath_choose_the_signal() {
        let mut r = Recovery::new(RecoveryConfig::new(10, 60, Some(40)));
        let h = [
            Holder {
                killpath: true,
                ..Holder::plain(1)
            },
            Holder {
                restrict_sigterm: true,
                ..Holder::plain(2)
            },
        ];
        let a = r.check(180, 100, false, false, &h);
        assert_eq!(
            signals(&a),
            vec![(1, Signal::RunKillpath), (2, Signal::Kill)]
        );
        let h = [Holder {
            restrict_sigkill: true,
            ..Holder::plain(1)
        }];
        assert_eq!(
            signals(&r.check(230, 100, false, false, &h)),
            vec![(1, Signal::Term)]
        );
    }

    #[test]
    fn killpath_runs_once_then_sigkill_when_the_grace_ends() {
        let mut r = Recovery::new(RecoveryConfig::new(1, 60, Some(10)));
        let h = [Holder {
            killpath: true,
            ..Holder::plain(5)
        }];
        let mut sent = Vec::new();
        for now in 108..125 {
            sent.extend(signals(&r.check(now, 100, false, false, &h)));
        }
        let mut want = vec![(5, Signal::RunKillpath)];
        // 8 + 10 s after the last renewal, once a second
        want.extend((118..125).map(|_| (5, Signal::Kill)));
        assert_eq!(sent, want);
    }

    #[test]
    fn stuck_holder_is_given_up_after_kill_count_max() {
        let mut r = Recovery::new(RecoveryConfig::new(1, 10, None));
        let h = [Holder::plain(9)];
        let mut sent = 0;
        for s in 0..200 {
            sent += signals(&r.check(108 + s, 100, false, false, &h)).len();
        }
        assert_eq!(sent as u32, KILL_COUNT_MAX);
        assert_eq!(r.state(), State::GaveUp);
        // still waits for the holder to go (the watchdog will end it)
        assert_eq!(r.check(400, 100, false, false, &[]), vec![Action::AllClear]);
    }

    #[test]
    fn killpath_argv_splits_like_sanlocks_helper() {
        let av = |args: &str, pid| {
            killpath_argv(b"/bin/kp", args.as_bytes(), pid)
                .into_iter()
                .map(|a| String::from_utf8(a).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(av("", None), ["/bin/kp"]);
        assert_eq!(av("", Some(12)), ["/bin/kp", "12"]);
        // python3-sanlock escapes spaces and backslashes
        assert_eq!(
            av("two\\ words  back\\\\slash\tx", Some(7)),
            ["/bin/kp", "two words", "back\\slash", "x", "7"]
        );
        // another escape, a trailing backslash, a non-ASCII byte end it
        assert_eq!(av("a \\x b", None), ["/bin/kp", "a"]);
        assert_eq!(av("a b\\", None), ["/bin/kp", "a", "b"]);
        assert_eq!(av("a é b", None), ["/bin/kp", "a"]);
        // 8 entries at most, the pid only if there is room
        assert_eq!(av("1 2 3 4 5 6 7 8 9", Some(3)).len(), 8);
        assert_eq!(av("1 2 3 4 5 6", Some(3)).last().unwrap(), "3");
        assert_eq!(av("1 2 3 4 5 6 7", Some(3)).last().unwrap(), "7");
    }
}
