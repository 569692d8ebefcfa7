//! A worker's network (binding field `network`, issue 21). For `none` and `nats` the
//! worker gets a network namespace of its own with only loopback, up; for `nats`, that
//! loopback also holds a relay to each NATS server the node was given; a `provided`
//! worker's Runtime API listener is bound inside it, so only the worker can reach it.
//! For `full` there is no namespace: [`peer_uid`] lets the Runtime API take only the
//! worker's own connections on the host's loopback.
//!
//! The namespace is made on a short-lived thread of its own, since `unshare` moves the
//! calling thread and a tokio thread must never move. Sockets bound there stay there
//! after the thread ends; the namespace lives as long as its descriptor or any socket
//! in it. The worker's spawn enters it with [`enter`] in `pre_exec`.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDrop;

/// How long the relay waits for a NATS server to take a connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// /proc/net/tcp's state of a socket in TIME_WAIT (its uid column reads 0).
const TIME_WAIT: &str = "06";

/// A worker's network namespace and what is bound in it. Dropping it closes the
/// listeners and stops the relays; the namespace goes once the worker has left it too.
pub(crate) struct WorkerNet {
    netns: OwnedFd,
    runtime_api: Option<TcpListener>,
    nats_url: Option<String>,
    /// One accept loop per relayed server; each holds its connections' tasks.
    _relays: Vec<AbortOnDrop>,
}

/// What the namespace's thread hands back.
struct Made {
    netns: OwnedFd,
    runtime_api: Option<TcpListener>,
    relays: Vec<TcpListener>,
}

impl WorkerNet {
    /// A new network namespace with loopback up. `nats_servers` (network `nats`): a
    /// relay to each of these addresses, listening inside on the same address when it
    /// is a loopback one (so a URL naming it works unchanged), else on
    /// `127.0.0.1:<its port>` (`127.0.0.2`, … when ports repeat); [`nats_url`] names
    /// them all. Relays need a tokio runtime (they run as its tasks). `runtime_api`: a
    /// listener on `127.0.0.1:<any port>` inside, for [`take_runtime_api`].
    ///
    /// Blocks for the namespace's making (a dedicated thread, joined).
    ///
    /// [`nats_url`]: WorkerNet::nats_url
    /// [`take_runtime_api`]: WorkerNet::take_runtime_api
    pub(crate) fn create(
        nats_servers: Option<&[SocketAddr]>,
        runtime_api: bool,
    ) -> io::Result<WorkerNet> {
        let plan = nats_servers.map(relay_plan).transpose()?;
        let runtime = match plan {
            Some(_) => Some(tokio::runtime::Handle::try_current().map_err(|_| {
                io::Error::other(
                    "the NATS relay of a worker's network namespace needs a tokio runtime",
                )
            })?),
            None => None,
        };
        let inside: Vec<SocketAddr> = plan.iter().flatten().map(|(inside, _)| *inside).collect();
        let made = std::thread::Builder::new()
            .name("natsfn-netns".into())
            .spawn(move || make(runtime_api, &inside))
            .map_err(context(
                "cannot start the thread making a worker's network namespace",
            ))?
            .join()
            .map_err(|_| {
                io::Error::other("the thread making a worker's network namespace panicked")
            })??;
        let mut relays = Vec::new();
        let mut nats_url = None;
        if let (Some(plan), Some(runtime)) = (plan, runtime) {
            let _entered = runtime.enter();
            for (listener, (_, server)) in made.relays.into_iter().zip(&plan) {
                listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener))
                    .map(|listener| {
                        let task = runtime.spawn(relay(listener, *server));
                        relays.push(AbortOnDrop::new(task.abort_handle()));
                    })
                    .map_err(context(
                        "cannot start the NATS relay of a worker's network namespace",
                    ))?;
            }
            let urls: Vec<String> = plan
                .iter()
                .map(|(inside, _)| format!("nats://{inside}"))
                .collect();
            nats_url = Some(urls.join(","));
        }
        Ok(WorkerNet {
            netns: made.netns,
            runtime_api: made.runtime_api,
            nats_url,
            _relays: relays,
        })
    }

    /// The namespace, for [`enter`] in the worker's `pre_exec` (close-on-exec: the
    /// worker does not inherit it). Valid while this `WorkerNet` lives.
    pub(crate) fn netns_fd(&self) -> RawFd {
        self.netns.as_raw_fd()
    }

    /// The Runtime API's listener inside the namespace (once; `None` after, or when
    /// made without one). Blocking mode, as `std` binds it.
    pub(crate) fn take_runtime_api(&mut self) -> Option<TcpListener> {
        self.runtime_api.take()
    }

    /// Network `nats`: the worker's `NATS_URL`, the relays' comma-separated
    /// `nats://IP:PORT` inside the namespace, in the order the servers were given.
    pub(crate) fn nats_url(&self) -> Option<&str> {
        self.nats_url.as_deref()
    }
}

/// For the worker's `pre_exec`: moves the forked child into the network namespace
/// `fd` ([`WorkerNet::netns_fd`]). Async-signal-safe (one `setns`, no allocation). It
/// needs CAP_SYS_ADMIN, so it must run before the child drops privileges: `std`
/// applies `Command::uid`/`gid` before `pre_exec`, so do not combine them with it.
pub(crate) fn enter(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor; on failure nothing changed.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where each server's relay listens inside, beside the server: loopback addresses
/// keep their own, others take `127.0.0.N:<port>` with the lowest free N. A server
/// named twice is relayed once.
fn relay_plan(servers: &[SocketAddr]) -> io::Result<Vec<(SocketAddr, SocketAddr)>> {
    let mut unique: Vec<SocketAddr> = Vec::with_capacity(servers.len());
    for server in servers {
        if !unique.contains(server) {
            unique.push(*server);
        }
    }
    if unique.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "network nats: no NATS server address to relay to",
        ));
    }
    let mut taken: HashSet<SocketAddr> = unique
        .iter()
        .filter(|s| s.ip().is_loopback())
        .copied()
        .collect();
    let mut plan = Vec::with_capacity(unique.len());
    for server in unique {
        let inside = if server.ip().is_loopback() {
            server
        } else {
            let free = (1..=u8::MAX)
                .map(|n| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), server.port()))
                .find(|a| !taken.contains(a))
                .ok_or_else(|| {
                    io::Error::other("network nats: too many NATS servers on one port")
                })?;
            taken.insert(free);
            free
        };
        plan.push((inside, server));
    }
    Ok(plan)
}

/// On the namespace's own thread: make it, bring loopback up, bind inside.
fn make(runtime_api: bool, relays: &[SocketAddr]) -> io::Result<Made> {
    // SAFETY: unshare changes only this thread's network namespace; this thread is
    // ours alone and ends right after.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == -1 {
        return Err(context("cannot make the worker's network namespace")(
            io::Error::last_os_error(),
        ));
    }
    loopback_up().map_err(context(
        "cannot bring up loopback in the worker's network namespace",
    ))?;
    let netns = File::open("/proc/thread-self/ns/net")
        .map_err(context("cannot open the worker's network namespace"))?
        .into();
    let runtime_api = match runtime_api {
        true => Some(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(context(
            "cannot listen for the Runtime API in the worker's network namespace",
        ))?),
        false => None,
    };
    let relays = relays
        .iter()
        .map(|inside| {
            TcpListener::bind(inside).map_err(context(&format!(
                "cannot listen on {inside} for the NATS relay in the worker's network namespace"
            )))
        })
        .collect::<io::Result<_>>()?;
    Ok(Made {
        netns,
        runtime_api,
        relays,
    })
}

/// `ip link set lo up`, by ioctl on a socket of this thread's namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket(2); the descriptor is owned right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write an ifreq we own; the union's
    // flags member is the one these requests use.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) == -1 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One server's relay: every connection accepted inside is piped to the server (from
/// the node's namespace). Its connections are tasks of its own `JoinSet`, so aborting
/// it ends them all.
async fn relay(listener: tokio::net::TcpListener, server: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((inside, _)) => {
                    connections.spawn(pipe(inside, server));
                }
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::debug!("NATS relay to {server}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn pipe(mut inside: TcpStream, server: SocketAddr) {
    let outside = tokio::time::timeout(CONNECT_WITHIN, TcpStream::connect(server)).await;
    let mut outside = match outside {
        Ok(Ok(outside)) => outside,
        Ok(Err(e)) => {
            tracing::debug!("NATS relay: cannot reach {server}: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("NATS relay: {server} did not answer within {CONNECT_WITHIN:?}");
            return;
        }
    };
    // NATS is small messages both ways: no waiting for delayed ACKs on either hop.
    let _ = inside.set_nodelay(true);
    let _ = outside.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
}

/// The uid owning the socket at `peer` that is connected to `local` (a socket of this
/// node, in the node's network namespace). `None`: no such connection (gone, in
/// TIME_WAIT, or never there). The uid is the kernel's (the host's), whatever user
/// namespace the peer is in.
///
/// Asked of sock_diag first (netlink, one hash lookup: some 10 µs); when that gives
/// nothing, read from /proc/net/tcp (tcp6 for IPv6 and dual-stack peers), which walks
/// the kernel's whole established table (about 2 ms with 262,144 buckets, however few
/// sockets there are).
pub(crate) fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (local, peer) = (unmapped(local), unmapped(peer));
    if local.is_ipv4() != peer.is_ipv4() {
        return None;
    }
    diag_uid(local, peer).or_else(|| proc_uid(local, peer))
}

/// [`peer_uid`] from /proc/net/tcp{,6}.
fn proc_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    if peer.is_ipv4() {
        find_uid("/proc/net/tcp", &hex(peer, false), &hex(local, false)).or_else(|| {
            // A dual-stack IPv6 socket that connected to a v4 address.
            find_uid("/proc/net/tcp6", &hex(peer, true), &hex(local, true))
        })
    } else {
        find_uid("/proc/net/tcp6", &hex(peer, true), &hex(local, true))
    }
}

/// linux/inet_diag.h's `inet_diag_sockid`: ports and addresses in network order.
#[repr(C)]
#[derive(Clone, Copy)]
struct DiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

/// A netlink header and `inet_diag_req_v2`.
#[repr(C)]
struct DiagRequest {
    header: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: DiagSockId,
}

/// `inet_diag_msg`, the answer's body.
#[repr(C)]
#[derive(Clone, Copy)]
struct DiagMessage {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: DiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// linux/sock_diag.h.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The kernel's TCP_TIME_WAIT.
const TCP_TIME_WAIT: u8 = 6;

/// [`peer_uid`] by sock_diag's exact lookup of the socket whose own address is `peer`
/// and whose remote is `local` (both of one family, unmapped).
fn diag_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    fn address(addr: SocketAddr) -> [u8; 16] {
        let mut bytes = [0; 16];
        match addr.ip() {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes = v6.octets(),
        }
        bytes
    }
    let request = DiagRequest {
        header: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<DiagRequest>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: if peer.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        } as u8,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: u32::MAX,
        id: DiagSockId {
            sport: peer.port().to_be_bytes(),
            dport: local.port().to_be_bytes(),
            src: address(peer),
            dst: address(local),
            interface: 0,
            // INET_DIAG_NOCOOKIE: any socket with these addresses.
            cookie: [u32::MAX; 2],
        },
    };
    // SAFETY: a plain socket(2); the descriptor is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd == -1 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the request is plain data of the size given.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            (&raw const request).cast(),
            std::mem::size_of::<DiagRequest>(),
            0,
        )
    };
    if sent != std::mem::size_of::<DiagRequest>() as isize {
        return None;
    }
    // The kernel answers within send: a reply that is not there yet never comes.
    let mut answer = [0u8; 512];
    // SAFETY: recv writes at most answer.len() bytes into it.
    let got = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let header_len = std::mem::size_of::<libc::nlmsghdr>();
    let wanted = header_len + std::mem::size_of::<DiagMessage>();
    if got < wanted as isize {
        // An NLMSG_ERROR (ENOENT: no such socket) is shorter, or an error.
        return None;
    }
    // SAFETY: both are plain data, read unaligned from bytes the kernel wrote.
    let (header, message) = unsafe {
        (
            std::ptr::read_unaligned(answer.as_ptr().cast::<libc::nlmsghdr>()),
            std::ptr::read_unaligned(answer[header_len..].as_ptr().cast::<DiagMessage>()),
        )
    };
    let found = header.nlmsg_type == SOCK_DIAG_BY_FAMILY
        && message.state != TCP_TIME_WAIT
        && message.id.sport == request.id.sport
        && message.id.dport == request.id.dport;
    found.then_some(message.uid)
}

/// A v4-mapped IPv6 address as the IPv4 one it is.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// An address as /proc/net/tcp{,6} prints it: the address's 32-bit words as the host
/// stores them (`%08X` each), a colon, the port in host order (`%04X`).
fn hex(addr: SocketAddr, v6: bool) -> String {
    let octets = match addr.ip() {
        IpAddr::V4(v4) if !v6 => {
            return format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(v4.octets()),
                addr.port()
            )
        }
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut text = String::with_capacity(37);
    for word in octets.chunks_exact(4) {
        let word = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
        text.push_str(&format!("{word:08X}"));
    }
    text.push_str(&format!(":{:04X}", addr.port()));
    text
}

/// The uid column of the row whose local_address and rem_address are these.
fn find_uid(table: &str, local: &str, remote: &str) -> Option<u32> {
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|row| {
        let mut fields = row.split_ascii_whitespace();
        let (_sl, l, r, state) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if l != local || r != remote || state == TIME_WAIT {
            return None;
        }
        // tx_queue:rx_queue, tr:tm->when, retrnsmt, then uid.
        fields.nth(3)?.parse().ok()
    })
}

fn context(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests;
