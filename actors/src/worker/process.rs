//! A worker's OS process: spawned as the leader of its own process group with a clean
//! environment and the private channel on an inherited socket; killed as a group, so
//! whatever the handler started dies with it.

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStderr, ChildStdout};

use crate::launch::LaunchPlan;
use crate::sandbox::{cgroup, net, WorkerJail};

/// The channel's descriptor number inside the worker (`NATSFN_CHANNEL_FD`).
const CHANNEL_FD: i32 = 3;
/// How long a retired worker gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(500);

pub(crate) struct WorkerProcess {
    pub(crate) pid: u32,
    pub(crate) group: ProcessGroup,
    pub(crate) child: Child,
    /// The private channel; none for a provided worker (it has the Runtime API).
    pub(crate) channel: Option<UnixStream>,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

/// `runtime_api`: the address of the worker's Lambda Runtime API, for a provided one;
/// `env`: the worker's own variables besides those of the plan; `jail`: its sandbox
/// (the program runs inside bubblewrap), `None` with `--isolation none`.
pub(crate) fn spawn(
    plan: &LaunchPlan,
    log_stream: &str,
    runtime_api: Option<std::net::SocketAddr>,
    env: &[(&str, String)],
    jail: Option<&WorkerJail>,
) -> std::io::Result<WorkerProcess> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs_fd = theirs.as_raw_fd();
    let no_channel = runtime_api.is_some();
    let mut command = match jail {
        Some(jail) => {
            let mut command = tokio::process::Command::new(&jail.argv[0]);
            command.args(&jail.argv[1..]).arg(&plan.program);
            command
        }
        None => tokio::process::Command::new(&plan.program),
    };
    let cgroups = jail.map_or_else(Vec::new, WorkerJail::cgroup_fds);
    if let Some(netns) = jail.and_then(WorkerJail::netns_fd) {
        // SAFETY: between fork and exec only async-signal-safe calls (setns).
        unsafe {
            // Its network namespace, entered while still root (bwrap then stays in it).
            command.pre_exec(move || net::enter(netns));
        }
    }
    command
        .args(&plan.args)
        .current_dir(&plan.cwd)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream)
        .envs(runtime_api.map(|addr| ("AWS_LAMBDA_RUNTIME_API", addr.to_string())))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !cgroups.is_empty() {
        // SAFETY: between fork and exec only async-signal-safe calls (write).
        unsafe {
            // Into its cgroups before it can fork: nothing it starts escapes them.
            command.pre_exec(move || cgroup::join(&cgroups));
        }
    }
    if !no_channel {
        command.env("NATSFN_CHANNEL_FD", CHANNEL_FD.to_string());
        // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl).
        unsafe {
            command.pre_exec(move || {
                if theirs_fd == CHANNEL_FD {
                    // dup2 onto itself keeps close-on-exec: clear it instead.
                    if libc::fcntl(CHANNEL_FD, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, CHANNEL_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn()?;
    drop(theirs);
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("worker exited during spawn"))?;
    let group = ProcessGroup(Some(Pid::from_raw(pid as i32)));
    let channel = if no_channel {
        None
    } else {
        ours.set_nonblocking(true)?;
        Some(UnixStream::from_std(ours)?)
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("worker pipes missing"));
    };
    Ok(WorkerProcess {
        pid,
        group,
        child,
        channel,
        stdout,
        stderr,
    })
}

/// The task that waits for the worker process (and so reaps it); done once it has.
pub(crate) type Reaped = tokio::task::JoinHandle<()>;

/// The worker's process group. Dropping it kills the whole group.
pub(crate) struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    pub(crate) fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH (already gone) is the normal case after an exit.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// SIGTERM, then SIGKILL unless the group leader has exited (is reaped by
    /// `exited`) within a short grace; returns once it has been reaped, so a node
    /// never leaves a defunct worker behind.
    pub(crate) async fn terminate(mut self, exited: &mut Reaped) {
        let Some(pgid) = self.0.take() else { return };
        let _ = killpg(pgid, Signal::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, &mut *exited)
            .await
            .is_err()
        {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = exited.await;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
