//! Issue 21: every worker runs in its sandbox (the default `--isolation sandbox`). Each
//! test asks a handler to try what a hostile one would, and checks the sandbox stopped
//! it while the node and other functions serve on.

use crate::harness::*;

/// One handler that tries what it is told to.
const PROBE: &str = r#"
import errno, os, signal, socket, time

def handler(event, context):
    what = event["try"]
    if what == "environ":
        found = {}
        try:
            with open(f"/proc/{event['node_pid']}/environ", "rb") as f:
                found["node"] = event["marker"].encode() in f.read()
        except OSError as e:
            found["node"] = type(e).__name__
        seen = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if event["marker"].encode() in f.read():
                        seen.append(int(pid))
            except OSError:
                pass
        found["pids_with_marker"] = seen
        found["pids_visible"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        return found
    if what == "signal":
        try:
            os.kill(event["node_pid"], signal.SIGTERM)
            return {"signalled": True}
        except OSError as e:
            return {"signalled": False, "error": type(e).__name__}
    if what == "write_code":
        try:
            with open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "planted.py"), "w") as f:
                f.write("x = 1")
            return {"written": True}
        except OSError as e:
            return {"written": False, "errno": errno.errorcode.get(e.errno)}
    if what == "tmp":
        if "write" in event:
            with open(f"/tmp/{event['write']}", "w") as f:
                f.write("secret")
        return {"tmp": sorted(os.listdir("/tmp")), "uid": os.getuid(), "gid": os.getgid()}
    if what == "fork_bomb":
        r, w = os.pipe()
        children = 0
        error = None
        while children < 5000:
            try:
                pid = os.fork()
            except OSError as e:
                error = errno.errorcode.get(e.errno)
                break
            if pid == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            children += 1
        os.close(w)
        for _ in range(children):
            os.wait()
        return {"children": children, "error": error}
    if what == "memory":
        hold = []
        for _ in range(event["mb"]):
            hold.append(bytearray(1024 * 1024))
        return {"held_mb": len(hold)}
    if what == "fill_tmp":
        with open("/tmp/fill", "wb") as f:
            for _ in range(event["mb"]):
                f.write(b"x" * (1024 * 1024))
                f.flush()
                os.fsync(f.fileno())
            time.sleep(event.get("then_sleep", 0))
        return {"written_mb": event["mb"]}
    if what == "connect":
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((event["host"], event["port"]))
            if "send" in event:
                s.sendall(event["send"].encode())
            data = s.recv(4) if event.get("read") else b""
            return {"connected": True, "read": data.decode("latin-1")}
        except OSError as e:
            return {"connected": False, "error": type(e).__name__}
        finally:
            s.close()
    raise ValueError(what)
"#;

fn probe(code: &tempfile::TempDir) -> Binding {
    Binding::python("app.handler", dir_str(code.path())).timeout_ms(20_000)
}

async fn ask(env: &Env, function: &str, event: serde_json::Value) -> serde_json::Value {
    let reply = env.invoke(function, event.to_string()).await;
    assert_eq!(
        error_code(&reply),
        None,
        "{function} failed: {}\nnode log:\n{}",
        String::from_utf8_lossy(&reply.payload),
        env.node.log()
    );
    json(&reply)
}

#[tokio::test]
async fn a_handler_cannot_read_the_nodes_environment_nor_signal_it() {
    const MARKER: &str = "NATSFN_TEST_MARKER_7d1c";
    let server = NatsServer::start();
    let node = Node::start_with_env(&server, "node-a", &[], &[(MARKER, "the-node-secret")]);
    let env = Env::with(server, node).await;
    let code = code_dir(&[("app.py", PROBE)]);
    env.bind_ready("prober", probe(&code)).await;
    let node_pid = env.node.pid();

    let found = ask(
        &env,
        "prober",
        serde_json::json!({"try": "environ", "node_pid": node_pid, "marker": "the-node-secret"}),
    )
    .await;
    // Its own PID namespace: the node's pid is not there to read.
    assert_ne!(found["node"], true, "{found}");
    assert_eq!(found["pids_with_marker"], serde_json::json!([]), "{found}");
    let visible = found["pids_visible"].as_array().expect("pids").len();
    assert!(visible <= 4, "the handler sees other processes: {found}");

    let signalled = ask(
        &env,
        "prober",
        serde_json::json!({"try": "signal", "node_pid": node_pid}),
    )
    .await;
    assert_eq!(signalled["signalled"], false, "{signalled}");
    let mut node = env.node;
    assert!(node.is_running(), "the node was signalled");
}

#[tokio::test]
async fn a_handler_cannot_write_its_code_and_its_tmp_is_its_own() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", PROBE)]);
    env.bind_ready("writer", probe(&code)).await;
    env.bind_ready("reader", probe(&code)).await;

    let planted = ask(&env, "writer", serde_json::json!({"try": "write_code"})).await;
    assert_eq!(planted["written"], false, "{planted}");
    assert_eq!(planted["errno"], "EROFS", "{planted}");
    assert!(!code.path().join("planted.py").exists());

    let wrote = ask(
        &env,
        "writer",
        serde_json::json!({"try": "tmp", "write": "writers-secret"}),
    )
    .await;
    let listed = |v: &serde_json::Value, name: &str| {
        v["tmp"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n == name))
    };
    assert!(listed(&wrote, "writers-secret"), "{wrote}");
    let read = ask(&env, "reader", serde_json::json!({"try": "tmp"})).await;
    // (Its /tmp may show where the code and runtime are mounted, when they live
    // under the host's /tmp, as in tests; never what another worker wrote.)
    assert!(!listed(&read, "writers-secret"), "{read}");
    // A uid of each function's own: neither root nor the node's, nor each other's.
    let (writer, reader) = (wrote["uid"].as_u64(), read["uid"].as_u64());
    assert!(writer.is_some_and(|u| u >= 1 << 30), "{wrote}");
    assert!(reader.is_some_and(|u| u >= 1 << 30), "{read}");
    assert_ne!(writer, reader);
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_pids_limit_and_everything_else_serves_on() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", PROBE)]);
    // Room for a thousand processes' kernel memory: the pids limit is what stops it.
    env.bind_ready("bomb", probe(&code).memory_mb(2048)).await;
    env.bind_ready("bystander", probe(&code)).await;

    let bomb = ask(&env, "bomb", serde_json::json!({"try": "fork_bomb"})).await;
    assert_eq!(bomb["error"], "EAGAIN", "{bomb}");
    let children = bomb["children"].as_u64().expect("children");
    // 1024 processes and threads in all: the worker's own take a few.
    assert!((1000..1024).contains(&children), "{bomb}");

    let other = ask(&env, "bystander", serde_json::json!({"try": "tmp"})).await;
    assert!(other["uid"].is_u64(), "{other}");
    // The bomb's own worker serves on too, once its children are gone.
    ask(&env, "bomb", serde_json::json!({"try": "tmp"})).await;
}

#[tokio::test]
async fn memory_mb_is_enforced_by_the_kernel() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", PROBE)]);
    env.bind_ready("hungry", probe(&code).memory_mb(128)).await;

    let reply = env
        .invoke("hungry", r#"{"try": "memory", "mb": 400}"#)
        .await;
    assert_eq!(error_code(&reply), Some(502), "{}", env.node.log());
    let error = json(&reply);
    assert_eq!(error["errorType"], "Runtime.OutOfMemory", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("OOM killer")),
        "{error}"
    );
    // Within its limit it runs, on a new worker.
    let fine = ask(
        &env,
        "hungry",
        serde_json::json!({"try": "memory", "mb": 40}),
    )
    .await;
    assert_eq!(fine["held_mb"], 40);
}

#[tokio::test]
async fn ephemeral_storage_mb_bounds_the_private_tmp() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", PROBE)]);
    env.bind_ready("filler", probe(&code).with("ephemeral_storage_mb", 512))
        .await;

    let fits = ask(
        &env,
        "filler",
        serde_json::json!({"try": "fill_tmp", "mb": 100}),
    )
    .await;
    assert_eq!(fits["written_mb"], 100);
    let reply = env
        .invoke(
            "filler",
            r#"{"try": "fill_tmp", "mb": 600, "then_sleep": 5}"#,
        )
        .await;
    assert_eq!(error_code(&reply), Some(502), "{}", env.node.log());
    let error = json(&reply);
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("ephemeral storage exceeded")),
        "{error}"
    );
}

/// A custom runtime answering with the address of its own Runtime API.
const PROVIDED_BOOTSTRAP: &str = r#"#!/bin/bash
set -euo pipefail
while true; do
  HEADERS="$(mktemp)"
  curl -sS -LD "$HEADERS" -o /dev/null "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next"
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$ID/response" \
    -d "{\"api\": \"${AWS_LAMBDA_RUNTIME_API}\"}"
done
"#;

fn provided(network: &str) -> (tempfile::TempDir, Binding) {
    use std::os::unix::fs::PermissionsExt;
    let code = code_dir(&[("bootstrap", PROVIDED_BOOTSTRAP)]);
    let bootstrap = code.path().join("bootstrap");
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))
        .expect("chmod bootstrap");
    let spec = Binding::provided(dir_str(code.path())).with("network", network);
    (code, spec)
}

#[tokio::test]
async fn another_functions_handler_cannot_take_a_provided_workers_invocation() {
    let env = Env::start().await;
    let (victim_code, victim) = provided("full");
    env.bind_ready("victim", victim.pool(1, 1)).await;
    let code = code_dir(&[("app.py", PROBE)]);
    env.bind_ready("thief", probe(&code)).await;

    let api = ask(&env, "victim", serde_json::json!({})).await["api"]
        .as_str()
        .expect("the victim's Runtime API")
        .to_owned();
    let (host, port) = api.rsplit_once(':').expect("host:port");
    let stolen = ask(
        &env,
        "thief",
        serde_json::json!({"try": "connect", "host": host, "port": port.parse::<u16>().expect("port"),
            "send": "GET /2018-06-01/runtime/nothing HTTP/1.0\r\n\r\n", "read": true}),
    )
    .await;
    // The connection is closed at once: no HTTP answer (not even the 404 any path
    // gets), let alone an invocation.
    assert!(
        stolen["read"] == "" || stolen["connected"] == false,
        "{stolen}"
    );
    // The victim still gets its own invocations.
    let again = ask(&env, "victim", serde_json::json!({})).await;
    assert_eq!(again["api"], api.as_str());
    drop(victim_code);
}

#[tokio::test]
async fn a_provided_worker_without_a_network_still_has_its_runtime_api() {
    let env = Env::start().await;
    let (_code, offline) = provided("none");
    env.bind_ready("offline-provided", offline).await;
    let answer = ask(&env, "offline-provided", serde_json::json!({})).await;
    assert!(
        answer["api"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{answer}"
    );
}

#[tokio::test]
async fn network_nats_reaches_the_nats_server_and_nothing_else() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", PROBE)]);
    env.bind_ready("relayed", probe(&code).with("network", "nats"))
        .await;
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let elsewhere_port = elsewhere.local_addr().expect("addr").port();

    let nats = ask(
        &env,
        "relayed",
        serde_json::json!({"try": "connect", "host": "127.0.0.1", "port": env.server.port, "read": true}),
    )
    .await;
    assert_eq!(nats["read"], "INFO", "{nats}");
    let other = ask(
        &env,
        "relayed",
        serde_json::json!({"try": "connect", "host": "127.0.0.1", "port": elsewhere_port}),
    )
    .await;
    assert_eq!(other["connected"], false, "{other}");
}

#[tokio::test]
async fn network_none_reaches_nothing_and_full_reaches_nats() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", PROBE)]);
    env.bind_ready("offline", probe(&code).with("network", "none"))
        .await;
    env.bind_ready("online", probe(&code)).await;
    let port = env.server.port;
    let nats =
        serde_json::json!({"try": "connect", "host": "127.0.0.1", "port": port, "read": true});

    let offline = ask(&env, "offline", nats.clone()).await;
    assert_eq!(offline["connected"], false, "{offline}");
    let online = ask(&env, "online", nats).await;
    assert_eq!(online["read"], "INFO", "{online}");
}
