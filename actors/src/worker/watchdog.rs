//! Enforces a worker's `timeout_ms` with one long-lived timer. A timer made per
//! invocation registers with tokio's time driver, which then wakes the driver through
//! an eventfd: a syscall and an extra epoll round on every invocation. A worker's
//! deadlines only grow (its timeout is fixed), so this one timer moves only when it
//! fires before the latest deadline, or was idle: about once per `timeout_ms`.

use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDrop;

use super::WorkerMsg;

/// Where the timer rests before the first invocation.
const IDLE: Duration = Duration::from_secs(365 * 24 * 3600);

pub(crate) struct Watchdog {
    arm: mpsc::UnboundedSender<(u64, tokio::time::Instant)>,
    /// The timer task, stopped when this is dropped.
    _task: AbortOnDrop,
}

impl Watchdog {
    /// `worker` gets `TimedOut(seq)` when invocation `seq` is past its deadline; the
    /// worker ignores it if that invocation has finished meanwhile.
    pub(crate) fn spawn(worker: ActorRef<WorkerMsg>) -> Watchdog {
        let (arm, mut armed) = mpsc::unbounded_channel::<(u64, tokio::time::Instant)>();
        let task = tokio::spawn(async move {
            let timer = tokio::time::sleep(IDLE);
            tokio::pin!(timer);
            let mut latest: Option<(u64, tokio::time::Instant)> = None;
            loop {
                tokio::select! {
                    next = armed.recv() => {
                        let Some((seq, deadline)) = next else { return };
                        if timer.is_elapsed() || timer.deadline() > deadline {
                            timer.as_mut().reset(deadline);
                        }
                        latest = Some((seq, deadline));
                    }
                    () = &mut timer, if !timer.is_elapsed() => {
                        match latest {
                            Some((seq, deadline)) if deadline <= tokio::time::Instant::now() => {
                                latest = None;
                                if worker.cast(WorkerMsg::TimedOut(seq)).is_err() {
                                    return;
                                }
                            }
                            Some((_, deadline)) => timer.as_mut().reset(deadline),
                            None => {}
                        }
                    }
                }
            }
        });
        Watchdog {
            arm,
            _task: AbortOnDrop::new(task.abort_handle()),
        }
    }

    /// Invocation `seq` must finish by `deadline`.
    pub(crate) fn arm(&self, seq: u64, deadline: std::time::Instant) {
        let _ = self.arm.send((seq, deadline.into()));
    }
}
