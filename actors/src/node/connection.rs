//! Watches the node's NATS connection: logs each loss and return, and tells the
//! NodeActor (in a message type of its own) when the node has been cut off for longer
//! than its grace period (it then stops taking work) and when it is back (it then
//! catches up and serves again), and of each subscription the server refused it.

use std::time::{Duration, Instant};

use async_nats::connection::State;
use ractor::DerivedActorRef;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::metrics::Metrics;

/// How often the connection state is looked at: a loss is noticed within this.
const LOOK_EVERY: Duration = Duration::from_millis(100);

pub(crate) enum ConnectionReport {
    /// No NATS connection for longer than the grace period.
    Isolated,
    /// Connected again after being isolated.
    Reconnected,
    /// The server refused the node a subscription to this subject (its permissions).
    SubscriptionDenied(String),
}

pub(crate) async fn watch(
    client: async_nats::Client,
    grace: Duration,
    metrics: std::sync::Arc<Metrics>,
    mut denials: UnboundedReceiver<String>,
    node: DerivedActorRef<ConnectionReport>,
) {
    let mut lost_at: Option<Instant> = None;
    let mut isolated = false;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(subject) = denials.recv() => {
                if node.send_message(ConnectionReport::SubscriptionDenied(subject)).is_err() {
                    return;
                }
                continue;
            }
        }
        let connected = client.connection_state() == State::Connected;
        match (connected, lost_at) {
            (false, None) => {
                tracing::warn!(
                    "lost the NATS connection; reconnecting (any server of the cluster will do)"
                );
                lost_at = Some(Instant::now());
            }
            (false, Some(since)) if !isolated && since.elapsed() >= grace => {
                tracing::error!(
                    grace_ms = grace.as_millis() as u64,
                    "no NATS connection for {grace:?} (--nats-grace): this node stops taking \
                     work until it is back"
                );
                isolated = true;
                metrics.set_isolated(true);
                if node.send_message(ConnectionReport::Isolated).is_err() {
                    return;
                }
            }
            (true, Some(since)) => {
                let server = client.server_info();
                tracing::info!(
                    server = %server.server_name,
                    url = %format!("{}:{}", server.host, server.port),
                    down_ms = since.elapsed().as_millis() as u64,
                    "NATS connection back after {:?}",
                    since.elapsed()
                );
                lost_at = None;
                if isolated {
                    isolated = false;
                    metrics.set_isolated(false);
                    if node.send_message(ConnectionReport::Reconnected).is_err() {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}
