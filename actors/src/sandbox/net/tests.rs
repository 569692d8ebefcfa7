//! On the real kernel: these make network namespaces, so they run as root.

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

/// Runs `f` on a thread of its own moved into the namespace `fd`.
fn inside<T: Send + 'static>(fd: RawFd, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        enter(fd).expect("setns into the worker's namespace");
        f()
    })
    .join()
    .expect("the thread inside the namespace panicked")
}

fn loopback_listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind on the host's loopback")
}

fn reaches(addr: SocketAddr) -> bool {
    StdStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn none_has_its_own_loopback_up_and_nothing_of_the_host() {
    let host = loopback_listener();
    let host_addr = host.local_addr().unwrap();
    let net = WorkerNet::create(None, false).unwrap();
    assert_eq!(net.nats_url(), None);
    let (own, host) = inside(net.netns_fd(), move || {
        let own = loopback_listener();
        (reaches(own.local_addr().unwrap()), reaches(host_addr))
    });
    assert!(own, "loopback inside the namespace is not up");
    assert!(!host, "the host's loopback is reachable from the namespace");
}

/// The spawn's way in: `enter` in `pre_exec`, then a program that drops to another uid
/// (setpriv here, bwrap in the node) and runs the worker.
#[test]
fn a_process_spawned_with_enter_in_pre_exec_lives_in_the_namespace() {
    let host = loopback_listener();
    let mut net = WorkerNet::create(None, true).unwrap();
    let api = net.take_runtime_api().unwrap();
    let script = format!(
        r#"import os, socket
def reach(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "yes"
    except OSError:
        return "no"
print(os.getuid(), reach({}), reach({}))
"#,
        api.local_addr().unwrap().port(),
        host.local_addr().unwrap().port()
    );
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", "54321", "--regid", "54321", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", &script])
        .current_dir("/")
        .stdin(Stdio::null());
    let fd = net.netns_fd();
    // SAFETY: enter is async-signal-safe.
    unsafe {
        command.pre_exec(move || enter(fd));
    }
    let out = command.output().expect("setpriv and python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "54321 yes no",
        "uid, Runtime API inside, host loopback ({})",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP echo server on the host's loopback, for as long as the test process lives.
fn echo_server() -> SocketAddr {
    echo_server_on(loopback_listener())
}

fn echo_server_on(listener: TcpListener) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut reader) = stream.try_clone() else {
                    return;
                };
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_reaches_the_servers_through_the_relay_and_nothing_else() {
    let server = echo_server();
    let other = loopback_listener();
    let other_addr = other.local_addr().unwrap();
    let net = WorkerNet::create(Some(&[server, server]), false).unwrap();
    assert_eq!(net.nats_url(), Some(format!("nats://{server}").as_str()));
    let fd = net.netns_fd();
    let (mut client, echoed, other) = tokio::task::spawn_blocking(move || {
        inside(fd, move || {
            let mut client = StdStream::connect(server).expect("connect to the relay");
            client.set_read_timeout(Some(WAIT)).unwrap();
            client.write_all(b"PING\r\n").unwrap();
            let mut echoed = [0; 6];
            client
                .read_exact(&mut echoed)
                .expect("the echo through the relay");
            (client, echoed, reaches(other_addr))
        })
    })
    .await
    .unwrap();
    assert_eq!(&echoed, b"PING\r\n");
    assert!(!other, "a host port that is not a NATS server is reachable");
    // Dropping the WorkerNet ends the relay and its connections.
    drop(net);
    let read = tokio::task::spawn_blocking(move || client.read(&mut [0; 1]))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
}

/// The relay with a real nats-server (on PATH, as the integration tests need it): its
/// INFO arrives inside the namespace and it answers PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_on_the_hosts_loopback_answers_through_the_relay() {
    let port = loopback_listener().local_addr().unwrap().port();
    let mut server = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + WAIT;
    while !reaches(addr) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let net = WorkerNet::create(Some(&[addr]), false).unwrap();
    let fd = net.netns_fd();
    let answer = tokio::task::spawn_blocking(move || {
        inside(fd, move || {
            let mut tcp = StdStream::connect(addr)?;
            tcp.set_read_timeout(Some(WAIT))?;
            let mut reader = std::io::BufReader::new(tcp.try_clone()?);
            let (mut info, mut pong) = (String::new(), String::new());
            std::io::BufRead::read_line(&mut reader, &mut info)?;
            tcp.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")?;
            std::io::BufRead::read_line(&mut reader, &mut pong)?;
            Ok::<_, io::Error>((info, pong))
        })
    })
    .await
    .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let (info, pong) = answer.expect("talking NATS through the relay");
    assert!(info.starts_with("INFO {"), "{info:?}");
    assert_eq!(pong, "PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_the_ipv6_loopback_is_relayed_at_its_own_address() {
    let server = echo_server_on(TcpListener::bind("[::1]:0").unwrap());
    let net = WorkerNet::create(Some(&[server]), false).unwrap();
    assert_eq!(net.nats_url(), Some(format!("nats://{server}").as_str()));
    let fd = net.netns_fd();
    let echoed = tokio::task::spawn_blocking(move || {
        inside(fd, move || {
            let mut client = StdStream::connect(server)?;
            client.set_read_timeout(Some(WAIT))?;
            client.write_all(b"PING\r\n")?;
            let mut echoed = [0; 6];
            client.read_exact(&mut echoed).map(|()| echoed)
        })
    })
    .await
    .unwrap();
    assert_eq!(&echoed.expect("the echo through the relay"), b"PING\r\n");
}

#[test]
fn nats_needs_a_server_and_a_runtime() {
    assert_eq!(
        WorkerNet::create(Some(&[]), false).err().map(|e| e.kind()),
        Some(io::ErrorKind::InvalidInput)
    );
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, 4222));
    let error = WorkerNet::create(Some(&[server]), false).err().unwrap();
    assert!(error.to_string().contains("tokio runtime"), "{error}");
}

#[test]
fn relays_listen_on_the_servers_loopback_address_or_127_0_0_n() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    let plan = relay_plan(&[
        a("10.0.0.1:4222"),
        a("127.0.0.1:4222"),
        a("10.0.0.2:4222"),
        a("[::1]:4223"),
        a("10.0.0.3:5222"),
    ])
    .unwrap();
    let inside: Vec<SocketAddr> = plan.iter().map(|(inside, _)| *inside).collect();
    assert_eq!(
        inside,
        [
            a("127.0.0.2:4222"),
            a("127.0.0.1:4222"),
            a("127.0.0.3:4222"),
            a("[::1]:4223"),
            a("127.0.0.1:5222"),
        ]
    );
}

#[test]
fn the_runtime_api_listener_is_reachable_inside() {
    let mut net = WorkerNet::create(None, true).unwrap();
    let listener = net.take_runtime_api().expect("a runtime API listener");
    assert!(net.take_runtime_api().is_none());
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback());
    let fd = net.netns_fd();
    let client = inside(fd, move || {
        StdStream::connect(addr).and_then(|s| s.local_addr())
    });
    let client = client.expect("connect to the runtime API inside");
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer, client);
    // It lives in the namespace, not on the host: its port is free on the host.
    assert!(TcpListener::bind(addr).is_ok());
}

#[test]
fn peer_uid_names_the_owner_of_the_peer_socket() {
    let listener = loopback_listener();
    let local = listener.local_addr().unwrap();
    let _ours = StdStream::connect(local).unwrap();
    let (_accepted, peer) = listener.accept().unwrap();
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(peer_uid(local, peer), Some(euid));
    assert_eq!(diag_uid(local, peer), Some(euid));
    assert_eq!(proc_uid(local, peer), Some(euid));
    // The reverse pair is our accepted socket's, not a peer connected to `local`.
    assert_eq!(
        peer_uid(peer, SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
        None
    );
    assert_eq!(
        peer_uid(local, SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
        None
    );

    let script = format!(
        "import socket; s = socket.create_connection(('127.0.0.1', {})); s.recv(1)",
        local.port()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .uid(54321)
        .gid(54321)
        .current_dir("/")
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 as uid 54321");
    let (theirs, peer) = listener.accept().unwrap();
    let uids = [
        peer_uid(local, peer),
        diag_uid(local, peer),
        proc_uid(local, peer),
    ];
    drop(theirs);
    let _ = child.wait();
    assert_eq!(uids, [Some(54321); 3], "peer_uid, sock_diag, /proc/net/tcp");
}

#[test]
fn peer_uid_reads_tcp6_and_v4_mapped_peers() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let v6 = TcpListener::bind("[::1]:0").unwrap();
    let local = v6.local_addr().unwrap();
    let _client = StdStream::connect(local).unwrap();
    let (_accepted, peer) = v6.accept().unwrap();
    assert_eq!(peer_uid(local, peer), Some(euid));
    assert_eq!(diag_uid(local, peer), Some(euid));
    assert_eq!(proc_uid(local, peer), Some(euid));

    // A dual-stack listener sees a v4 client as ::ffff:127.0.0.1.
    let dual = TcpListener::bind("[::]:0").unwrap();
    let port = dual.local_addr().unwrap().port();
    let _client = StdStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let (accepted, peer) = dual.accept().unwrap();
    assert!(peer.is_ipv6(), "{peer}");
    let local = accepted.local_addr().unwrap();
    assert_eq!(peer_uid(local, peer), Some(euid));
    let (local, peer) = (unmapped(local), unmapped(peer));
    assert_eq!(diag_uid(local, peer), Some(euid));
    assert_eq!(proc_uid(local, peer), Some(euid));

    // A dual-stack IPv6 client connected to a v4 listener.
    let v4 = loopback_listener();
    let local = v4.local_addr().unwrap();
    let client = socket_v6_dual_stack_to(local);
    let (_accepted, peer) = v4.accept().unwrap();
    assert!(peer.is_ipv4(), "{peer}");
    assert_eq!(peer_uid(local, peer), Some(euid));
    assert_eq!(diag_uid(local, peer), Some(euid));
    assert_eq!(proc_uid(local, peer), Some(euid));
    drop(client);
}

/// An IPv6 socket connected to `v4` at its v4-mapped address.
fn socket_v6_dual_stack_to(v4: SocketAddr) -> StdStream {
    let IpAddr::V4(ip) = v4.ip() else {
        panic!("{v4} is not IPv4")
    };
    StdStream::connect(SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), v4.port()))
        .expect("a dual-stack IPv6 connect to a v4 listener")
}

/// `cargo test --release -p natsfn-actors --lib create_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: prints what WorkerNet::create costs"]
fn create_cost() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let server = echo_server();
    let kinds: [(&str, Option<&[SocketAddr]>, bool); 3] = [
        ("none", None, false),
        ("none + runtime API", None, true),
        ("nats (1 server) + runtime API", Some(&[server]), true),
    ];
    for (name, servers, api) in kinds {
        let mut made = Vec::new();
        let mut dropped = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            let net = WorkerNet::create(servers, api).unwrap();
            made.push(start.elapsed());
            let start = Instant::now();
            drop(net);
            dropped.push(start.elapsed());
        }
        made.sort();
        dropped.sort();
        println!(
            "{name}: create median {:?}, p90 {:?}, max {:?}; drop median {:?}",
            made[100], made[180], made[199], dropped[100]
        );
    }
    // The same, keeping every namespace until the end: no teardown runs meanwhile.
    let mut kept = Vec::new();
    let mut made = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        kept.push(WorkerNet::create(None, true).unwrap());
        made.push(start.elapsed());
    }
    let start = Instant::now();
    drop(kept);
    let dropped = start.elapsed();
    made.sort();
    println!(
        "none + runtime API, 200 kept: create median {:?}, p90 {:?}, max {:?}; dropping all {dropped:?}",
        made[100], made[180], made[199]
    );
    let listener = loopback_listener();
    let local = listener.local_addr().unwrap();
    let _client = StdStream::connect(local).unwrap();
    let (_accepted, peer) = listener.accept().unwrap();
    let mut looked = Vec::new();
    let mut read = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        assert!(peer_uid(local, peer).is_some());
        looked.push(start.elapsed());
        let start = Instant::now();
        assert!(proc_uid(local, peer).is_some());
        read.push(start.elapsed());
    }
    looked.sort();
    read.sort();
    let sockets = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .count()
        - 1;
    println!(
        "peer_uid (sock_diag): median {:?}, max {:?}; /proc/net/tcp alone: median {:?}, max {:?} ({sockets} rows)",
        looked[100], looked[199], read[100], read[199]
    );
}
