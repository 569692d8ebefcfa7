//! Async invocations at steady state: events enqueued as fast as JetStream stores them,
//! run by three nodes, until the function's consumer has nothing pending or unacked.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::Serialize;
use serde_json::json;

use crate::harness::{code_dir, dir_str, enqueue_numbered, wait_status, Cluster, NatsServer, Node};

const NOOP_PY: &str = "def handler(event, context):\n    return None\n";

#[derive(Serialize)]
pub struct EventsRow {
    pub name: String,
    pub events: usize,
    /// Publishing them all (each stored and acknowledged), seconds.
    pub enqueue_s: f64,
    /// From the first publish until every event has run and been acknowledged.
    pub drained_s: f64,
}

#[derive(Serialize)]
pub struct EventsReport {
    pub rows: Vec<EventsRow>,
}

impl EventsReport {
    pub fn markdown(&self) -> String {
        let mut md = String::from(
            "\n| async invocations, python3 no-op, pool.max 4 per node | events | enqueued/s | run and acked/s |\n|---|---:|---:|---:|\n",
        );
        for row in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} |\n",
                row.name,
                row.events,
                row.events as f64 / row.enqueue_s,
                row.events as f64 / row.drained_s,
            ));
        }
        md
    }
}

/// `events` through three nodes on one server, then on a 3-server cluster (R3) with
/// the shipped `sync_interval: always` and with JetStream's default.
pub async fn measure(events: usize) -> EventsReport {
    let mut rows = Vec::new();
    {
        let server = NatsServer::start();
        let _nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
            .iter()
            .map(|id| Node::start(&server, id))
            .collect();
        let js = jetstream::new(server.client().await);
        rows.push(run(&js, "3 nodes, one nats-server", events).await);
    }
    for (sync_always, name) in [
        (true, "3 nodes, 3-server cluster (R3), sync_interval always"),
        (
            false,
            "3 nodes, 3-server cluster (R3), JetStream's default sync",
        ),
    ] {
        let cluster = Cluster::start_with(false, sync_always).await;
        let urls = cluster.urls();
        let nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
            .iter()
            .map(|id| Node::start_urls(&urls, id, &[]))
            .collect();
        let js = jetstream::new(cluster.client().await);
        rows.push(run(&js, name, events).await);
        drop(nodes);
    }
    EventsReport { rows }
}

async fn run(js: &jetstream::Context, name: &str, events: usize) -> EventsRow {
    let code = code_dir(&[("app.py", NOOP_PY)]);
    let bindings = natsfn_actors::buckets::bindings(js)
        .await
        .expect("bindings");
    let status = natsfn_actors::buckets::status(js).await.expect("status");
    let spec = json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())},
                      "pool": {"min": 4, "max": 4}});
    let revision = bindings
        .put("noop", spec.to_string().into())
        .await
        .expect("bind");
    wait_status(&status, "noop", |s| {
        s.revision >= revision && s.state == natsfn_protocol::FunctionState::Ready
    })
    .await;
    // Every node's standby (the status is the first node's word).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    enqueue_numbered(js, "noop", 0..events as u64).await;
    let enqueue_s = started.elapsed().as_secs_f64();
    let stream = js.get_stream("NATSFN_ASYNC").await.expect("async stream");
    loop {
        if let Ok(info) = stream.consumer_info("natsfn-async-noop").await {
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence as usize >= events
            {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "async events did not drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    EventsRow {
        name: name.to_owned(),
        events,
        enqueue_s,
        drained_s: started.elapsed().as_secs_f64(),
    }
}
