//! Whether a function's code can start, as its FunctionActor learns it from worker
//! starts and crashes: the pause a failure earns before the next start, and the error
//! to answer at once while nothing can start (rather than a spawn per request).

use std::time::{Duration, Instant};

use natsfn_protocol::LambdaError;

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Consecutive failures after which the status says `crashloop`.
const CRASHLOOP_AFTER: u32 = 3;

/// What a failure means for the function's status.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Failing again and again: `crashloop`.
    Crashloop,
    /// A start failed: `error`.
    StartFailed,
    /// A worker died in service; its replacement will tell.
    Crashed,
}

#[derive(Default)]
pub(crate) struct StartHealth {
    backoff: Backoff,
    /// The last init error, answered at once while no worker can start.
    init_error: Option<LambdaError>,
    /// A timer to end the current pause is set.
    pub(crate) retry_scheduled: bool,
}

impl StartHealth {
    /// A worker could not start (spawn failure or init error).
    pub(crate) fn start_failed(&mut self, error: LambdaError) -> Verdict {
        let verdict = self.verdict(true);
        self.init_error = Some(error);
        verdict
    }

    /// A worker died while serving.
    pub(crate) fn crashed(&mut self) -> Verdict {
        self.verdict(false)
    }

    fn verdict(&mut self, while_starting: bool) -> Verdict {
        if self.backoff.failed() >= CRASHLOOP_AFTER {
            Verdict::Crashloop
        } else if while_starting {
            Verdict::StartFailed
        } else {
            Verdict::Crashed
        }
    }

    /// The code works (an invocation completed, a worker became ready) or changed:
    /// its failures are forgotten.
    pub(crate) fn clear(&mut self) {
        self.backoff.reset();
        self.init_error = None;
    }

    /// When the next start may be tried, while a failure's pause runs.
    pub(crate) fn pause_until(&self) -> Option<Instant> {
        self.backoff.pending()
    }

    /// The error to answer with at once: while the pause after a failed start runs
    /// and no worker that could serve is alive (`has_live`).
    pub(crate) fn unstartable(&self, has_live: bool) -> Option<&LambdaError> {
        self.init_error
            .as_ref()
            .filter(|_| !has_live && self.backoff.pending().is_some())
    }
}

/// Consecutive failed worker starts or crashes, and the pause they earn: 100 ms,
/// doubling up to 10 s, so that code that cannot start never spins the CPU.
#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Counts a failure; returns how many there have been in a row.
    fn failed(&mut self) -> u32 {
        self.failures += 1;
        let pause = BACKOFF_FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        self.retry_at = Some(Instant::now() + pause);
        self.failures
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// When the next start may be tried, if that is still ahead.
    fn pending(&self) -> Option<Instant> {
        self.retry_at.filter(|at| *at > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.pending(), None);
        let mut pauses = Vec::new();
        for n in 1..=12 {
            let before = Instant::now();
            assert_eq!(backoff.failed(), n);
            let at = backoff.pending().expect("a pause after a failure");
            pauses.push(at - before);
        }
        // Measured from just before each failure: at least the pause, never much more.
        let slack = Duration::from_millis(50);
        let expected = |n: u32| (BACKOFF_FIRST * 2u32.pow(n)).min(BACKOFF_MAX);
        for (n, pause) in pauses.iter().enumerate() {
            let want = expected(n as u32);
            assert!(
                *pause >= want && *pause < want + slack,
                "pause {n}: {pause:?}, want {want:?}"
            );
        }
        assert_eq!(expected(11), BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.pending(), None);
        assert_eq!(backoff.failed(), 1);
    }
}
