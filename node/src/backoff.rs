//! The kubelet's restart back-off (CrashLoopBackOff): the first restart
//! is immediate, the second waits `initial`, each further one twice as
//! long up to `max`; a container that ran `reset_after` without failing
//! starts over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The curve. Defaults are the kubelet's: 10 s doubling to 300 s, reset
/// after 10 minutes of running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The wait of the last exit.
    delay: Duration,
    /// The wait the next exit gets.
    next: Duration,
    /// When the last exit happened; the restart is allowed at
    /// `last_exit + delay`.
    last_exit: Instant,
}

/// Back-off state per container name.
#[derive(Debug, Default)]
pub struct Backoff {
    policy: BackoffPolicy,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            entries: HashMap::new(),
        }
    }

    /// Record that `name` exited at `exited` after running for `ran`, and
    /// return how long to wait before restarting it.
    pub fn exited(&mut self, name: &str, exited: Instant, ran: Duration) -> Duration {
        let p = self.policy;
        let (wait, next) = match self.entries.get(name) {
            Some(e) if ran < p.reset_after => (e.next, (e.next * 2).min(p.max)),
            // The first failure (or the first after a long run) restarts at
            // once; the next one waits `initial`.
            _ => (Duration::ZERO, p.initial.min(p.max)),
        };
        self.entries.insert(
            name.to_string(),
            Entry {
                delay: wait,
                next,
                last_exit: exited,
            },
        );
        wait
    }

    /// Time left before `name` may restart (zero if it may now, or if it
    /// never exited).
    pub fn remaining(&self, name: &str, now: Instant) -> Duration {
        self.entries
            .get(name)
            .map(|e| (e.last_exit + e.delay).saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// The current delay of `name` (for the CrashLoopBackOff message).
    pub fn delay(&self, name: &str) -> Duration {
        self.entries.get(name).map(|e| e.delay).unwrap_or_default()
    }

    pub fn forget(&mut self, name: &str) {
        self.entries.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let t = Instant::now();
        let short = Duration::from_secs(1);
        let got: Vec<u64> = (0..7).map(|_| b.exited("c", t, short).as_secs()).collect();
        assert_eq!(got, vec![0, 10, 20, 40, 80, 160, 300]);
        assert_eq!(
            b.remaining("c", t + Duration::from_secs(100)).as_secs(),
            200
        );
        assert_eq!(b.exited("c", t, Duration::from_secs(601)).as_secs(), 0);
        assert_eq!(b.exited("c", t, short).as_secs(), 10);
        assert_eq!(b.remaining("other", t), Duration::ZERO);
    }
}
