//! Several nodes on one NATS server share the bindings and the load.

use std::collections::HashSet;

use futures::StreamExt;
use natsfn_protocol::{FunctionState, FunctionStatus};
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
    // Watch before binding, so that neither node's first report is missed.
    let mut reports = env.status.watch("shared").await.expect("watch status");
    env.put_binding("shared", Binding::python("app.handler", &code).pool(1, 1))
        .await;
    let mut ready = HashSet::new();
    while ready.len() < 2 {
        let entry = tokio::time::timeout(DEADLINE, reports.next())
            .await
            .expect("both nodes to report the function ready")
            .expect("status stream")
            .expect("status entry");
        let status: FunctionStatus = serde_json::from_slice(&entry.value).expect("status json");
        if status.state == FunctionState::Ready {
            ready.insert(status.node);
        }
    }
    // pool.max 1 per node: two worker pids means both nodes answered.
    let mut pids = HashSet::new();
    let started = std::time::Instant::now();
    while started.elapsed() < DEADLINE {
        let reply = env.invoke("shared", "{}").await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        pids.insert(json(&reply).as_u64().expect("pid"));
        if pids.len() >= 2 {
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

#[tokio::test]
async fn a_node_asked_to_stop_finishes_what_it_received_then_exits() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "import time\ndef handler(event, context):\n    print('started', flush=True)\n    time.sleep(0.5)\n    return 'finished'\n",
    )]);
    env.bind_ready("slowpoke", Binding::python("app.handler", &code).pool(1, 1))
        .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.slowpoke")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    // Two requests: one running, one waiting in the node's queue.
    let client = env.client.clone();
    let requests = tokio::spawn(async move {
        let one = request(&client, "natsfn.invoke.slowpoke", "{}".into());
        let two = request(&client, "natsfn.invoke.slowpoke", "{}".into());
        futures::join!(one, two)
    });
    tokio::time::timeout(DEADLINE, logs.next())
        .await
        .expect("the first invocation to start")
        .expect("log stream");

    let mut env = env;
    env.node.terminate();
    let (one, two) = requests.await.expect("requests");
    for reply in [one, two] {
        assert_eq!(error_code(&reply), None, "{reply:?}");
        assert_eq!(json(&reply), json!("finished"));
    }
    assert!(env.node.exited().await.success());
}
