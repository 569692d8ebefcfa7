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
        "import os\ndef handler(event, context):\n    return [os.environ['AWS_LAMBDA_LOG_STREAM_NAME'], int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])]\n",
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
    // The node that answered: the one running the worker (by its log stream and start
    // time: each node has a worker of the same log stream).
    let nodes = [&env.node, &second];
    let mut answered = HashSet::new();
    let mut workers = HashSet::new();
    let started = std::time::Instant::now();
    while started.elapsed() < DEADLINE {
        let reply = env.invoke("shared", "{}").await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        let answer = json(&reply);
        let worker = answer[0].as_str().expect("worker").to_owned();
        let started_at = answer[1].as_u64();
        let running: Vec<&str> = nodes
            .iter()
            .filter(|n| n.worker_pid_of(&worker, started_at).is_some())
            .map(|n| n.id.as_str())
            .collect();
        if let [node] = running[..] {
            answered.insert(node.to_owned());
        }
        workers.insert((worker, running.join(",")));
        if answered.len() >= 2 {
            break;
        }
    }
    assert_eq!(
        answered.len(),
        2,
        "replies came from these workers (and nodes) only: {workers:?}"
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

/// `natsfn nodes` run against the two servers left right after one is killed rides out
/// the leader election: first the JetStream meta leader (consumer creation waits for a
/// new one; the command used to fail with "timed out"), then, once that server is back,
/// the leader of the `natsfn-nodes` stream (its stream info waits).
#[tokio::test]
async fn natsfn_nodes_rides_out_a_leader_election_after_a_server_is_killed() {
    let mut cluster = Cluster::start().await;
    let _node = Node::start_urls(&cluster.urls(), "node-a", &[]);
    let urls = cluster.urls();
    let listed = || {
        let urls = urls.clone();
        async move {
            let out = run_cli_on(&urls, &["nodes"]).await;
            String::from_utf8_lossy(&out.stdout)
                .contains("node-a")
                .then_some(())
        }
    };
    eventually("natsfn nodes to list node-a", listed).await;
    let stream = format!("KV_{}", natsfn_protocol::names::NODES_BUCKET);
    let js = async_nats::jetstream::new(cluster.client().await);
    let stream_leader = || {
        let (js, stream) = (js.clone(), stream.clone());
        async move { replicas_of(&js, &stream).await?.leader }
    };

    let meta = eventually("JetStream to have a meta leader", || cluster.meta_leader()).await;
    // The stream's leader elsewhere: its info is answered, and only creating the
    // listing's consumer waits for the meta group.
    eventually("natsfn-nodes to be led by another server", || {
        let (js, stream, meta, leader) =
            (js.clone(), stream.clone(), meta.clone(), stream_leader());
        async move {
            let leader = leader.await?;
            if leader != meta {
                return Some(());
            }
            let stepdown = format!("STREAM.LEADER.STEPDOWN.{stream}");
            let _: Result<serde_json::Value, _> = js.request(stepdown, &json!({})).await;
            None
        }
    })
    .await;
    kill_and_list(&mut cluster, &meta, "the meta leader").await;

    let back = (0..3)
        .find(|&i| cluster.pid(i).is_none())
        .expect("a killed server");
    cluster.restart(back);
    eventually(
        "the restarted server to hold its replica of natsfn-nodes",
        || {
            let js = js.clone();
            let (stream, name) = (stream.clone(), cluster.name(back).to_owned());
            async move {
                let cluster = replicas_of(&js, &stream).await?;
                let current = cluster.leader.as_deref() == Some(name.as_str())
                    || cluster.replicas.iter().any(|r| r.name == name && r.current);
                current.then_some(())
            }
        },
    )
    .await;
    eventually("natsfn nodes to list node-a again", listed).await;
    let leader = eventually("natsfn-nodes to have a leader", stream_leader).await;
    kill_and_list(&mut cluster, &leader, "the leader of natsfn-nodes").await;
}

/// Where `stream`'s replicas are and which leads, if the server says.
async fn replicas_of(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Option<async_nats::jetstream::stream::ClusterInfo> {
    let mut stream = js.get_stream(stream).await.ok()?;
    stream.info().await.ok()?.cluster.clone()
}

/// Kills server `name`, then at once runs `natsfn nodes` against the two others, which
/// must list node-a.
async fn kill_and_list(cluster: &mut Cluster, name: &str, what: &str) {
    let killed = (0..3)
        .find(|&i| cluster.name(i) == name)
        .expect("one of the three");
    let others: Vec<String> = (0..3)
        .filter(|&i| i != killed)
        .map(|i| cluster.url(i))
        .collect();
    cluster.kill(killed);
    let started = std::time::Instant::now();
    let out = run_cli_on(&others.join(","), &["nodes"]).await;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "natsfn nodes failed {took:?} after {what} ({name}) was killed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node-a"), "{stdout}");
    println!("natsfn nodes answered {took:?} after {what} ({name}) was killed");
}
