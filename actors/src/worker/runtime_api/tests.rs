use std::io::{Read, Write};

use super::*;
use crate::sandbox::net::{enter, WorkerNet};

/// A WorkerActor stand-in: the requests these tests make never reach it.
struct Sink;

impl ractor::Actor for Sink {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<WorkerMsg>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

async fn serve(listen: RuntimeApiListen) -> (RuntimeApi, ActorRef<WorkerMsg>) {
    let (worker, _) = ractor::Actor::spawn(None, Sink, ()).await.unwrap();
    let api = RuntimeApi::start(
        worker.clone(),
        "arn:aws:lambda:us-east-1:000000000000:function:f",
        Duration::from_secs(3),
        1 << 20,
        listen,
    )
    .await
    .unwrap();
    (api, worker)
}

const NOT_FOUND: &[u8] = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Whatever the server sent on one connection before closing it.
fn ask(addr: SocketAddr) -> Vec<u8> {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = tcp.write_all(NOT_FOUND);
    let mut answer = Vec::new();
    // A reset (the request unread when the server closed) is no answer either.
    let _ = tcp.read_to_end(&mut answer);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_host_loopback_only_the_workers_uid_is_answered() {
    let listen = RuntimeApiListen::Loopback {
        peer_uid: Some(54321),
    };
    let (api, worker) = serve(listen).await;
    let addr = api.addr();
    let ours = tokio::task::spawn_blocking(move || ask(addr))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ours), "", "answered another uid");
    let script = format!(
        r#"import socket, sys
s = socket.create_connection(("127.0.0.1", {}))
s.settimeout(5)
s.sendall({:?}.encode())
answer = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
sys.stdout.write(answer.decode())
"#,
        addr.port(),
        std::str::from_utf8(NOT_FOUND).unwrap()
    );
    let theirs = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .uid(54321)
        .gid(54321)
        .current_dir("/")
        .output()
        .await
        .expect("python3 as uid 54321");
    let answer = String::from_utf8_lossy(&theirs.stdout);
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "the worker's uid got {answer:?} ({})",
        String::from_utf8_lossy(&theirs.stderr)
    );
    worker.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_in_the_workers_namespace_answers_there() {
    let mut net = WorkerNet::create(None, true).unwrap();
    let listener = net.take_runtime_api().unwrap();
    let (api, worker) = serve(RuntimeApiListen::Bound(listener)).await;
    let addr = api.addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    let fd = net.netns_fd();
    let answer = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            enter(fd).unwrap();
            ask(addr)
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
    worker.stop(None);
}

#[test]
fn error_type_comes_from_the_header_then_the_body_then_unhandled() {
    let body = br#"{"errorType":"ValueError","errorMessage":"bad","stackTrace":["a"]}"#;
    let mut headers = HeaderMap::new();
    let fields = error_fields(&headers, body);
    assert_eq!(fields.error_type, "ValueError");
    assert_eq!(fields.error_message, "bad");
    assert_eq!(fields.stack_trace, vec!["a"]);
    headers.insert(ERROR_TYPE, HeaderValue::from_static("Runtime.Custom"));
    assert_eq!(error_fields(&headers, body).error_type, "Runtime.Custom");
    let garbage = error_fields(&HeaderMap::new(), b"not json");
    assert_eq!(garbage.error_type, "Unhandled");
    assert_eq!(garbage.error_message, "not json");
}

#[test]
fn trace_ids_have_the_xray_shape() {
    let trace = trace_id("0f8e6b7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
    assert!(trace.starts_with("Root=1-"), "{trace}");
    assert!(
        trace.ends_with(";Parent=8a9b0c1d2e3f4a5b;Sampled=0"),
        "{trace}"
    );
}
