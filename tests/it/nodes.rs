//! Several nodes on one NATS server share the bindings and the load.

use std::collections::HashSet;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn two_nodes_both_serve_a_function_through_its_queue_group() {
    let server = NatsServer::start();
    let second = Node::start(&server, "node-b");
    let env = Env::on(server).await;
    let code = code_dir(&[(
        "app.py",
        "import os\ndef handler(event, context):\n    return os.getpid()\n",
    )]);
    env.bind_ready(
        "shared",
        json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())},
               "pool": {"min": 1, "max": 1}}),
    )
    .await;
    // pool.max 1 per node: two worker pids means both nodes answered.
    let mut pids = HashSet::new();
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let reply = env.invoke("shared", "{}").await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        pids.insert(json(&reply).as_u64().expect("pid"));
        if pids.len() >= 2 || started.elapsed() > DEADLINE {
            break;
        }
    }
    assert_eq!(
        pids.len(),
        2,
        "replies came from these workers only: {pids:?}"
    );
    drop(second);
}
