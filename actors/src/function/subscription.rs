//! A function's queue subscriptions, each forwarding requests to its FunctionActor.
//! Leaving a subject drains it: messages the server already sent still run.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use natsfn_protocol::names::queue_group;
use natsfn_protocol::service::discovery_subjects;
use ractor::ActorRef;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDrop;

use super::service::ServiceStats;
use super::FunctionMsg;
use crate::context::NodeContext;
use crate::forward;
use crate::invocation::{EndpointId, Invocation};
use crate::metrics::Refused;

/// The subjects a function listens on, and those it left whose last messages are
/// still being forwarded.
#[derive(Default)]
pub(crate) struct Subscriptions {
    active: HashMap<String, Subscription>,
    draining: HashMap<String, Subscription>,
}

impl Subscriptions {
    /// Makes the subscriptions match `wanted`: new ones first, then the left ones are
    /// drained, so no request falls between.
    pub(crate) async fn set(
        &mut self,
        ctx: &NodeContext,
        function: &str,
        wanted: &BTreeSet<String>,
        service: &ServiceStats,
        actor: &ActorRef<FunctionMsg>,
        refused: &Refused,
    ) -> Result<(), async_nats::SubscribeError> {
        for subject in wanted {
            if !self.active.contains_key(subject) {
                let endpoint = service.endpoint(subject);
                let sub = Subscription::start(
                    ctx,
                    function,
                    subject.clone(),
                    endpoint,
                    actor.clone(),
                    refused.clone(),
                )
                .await?;
                self.active.insert(subject.clone(), sub);
            }
        }
        let left: Vec<String> = self
            .active
            .keys()
            .filter(|s| !wanted.contains(*s))
            .cloned()
            .collect();
        for subject in left {
            self.drain(subject);
        }
        Ok(())
    }

    /// Stops listening on every subject (the function retires).
    pub(crate) fn drain_all(&mut self) {
        let all: Vec<String> = self.active.keys().cloned().collect();
        for subject in all {
            self.drain(subject);
        }
    }

    fn drain(&mut self, subject: String) {
        if let Some(mut sub) = self.active.remove(&subject) {
            sub.drain();
            self.draining.insert(subject, sub);
        }
    }

    /// The subscription of `subject` ended (drained, or closed by the server).
    pub(crate) fn ended(&mut self, subject: &str) {
        if self.draining.remove(subject).is_none() {
            self.active.remove(subject);
        }
    }

    /// Nothing is listening and nothing is still being forwarded.
    pub(crate) fn is_empty(&self) -> bool {
        self.active.is_empty() && self.draining.is_empty()
    }

    /// Ends every subscription at once (the actor stops).
    pub(crate) fn clear(&mut self) {
        self.active.clear();
        self.draining.clear();
    }
}

struct Subscription {
    drain: Option<oneshot::Sender<()>>,
    /// The forwarding task, stopped when this is dropped.
    _task: AbortOnDrop,
}

impl Subscription {
    async fn start(
        ctx: &NodeContext,
        function: &str,
        subject: String,
        endpoint: EndpointId,
        actor: ActorRef<FunctionMsg>,
        refused: Refused,
    ) -> Result<Subscription, async_nats::SubscribeError> {
        let subscriber = ctx
            .client
            .queue_subscribe(subject.clone(), queue_group(function))
            .await?;
        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        let ctx = ctx.clone();
        let task = tokio::spawn(async move {
            forward::until_drained(subscriber, drain_rx, &subject, |msg| {
                let (ctx, actor, refused) = (&ctx, &actor, &refused);
                async move {
                    let arrived = std::time::Instant::now();
                    match Invocation::from_message(ctx, msg, endpoint).await {
                        Some(invocation) => actor.cast(FunctionMsg::Invoke(invocation)).is_ok(),
                        // Answered 400 already.
                        None => {
                            refused.bad_request(arrived.elapsed());
                            true
                        }
                    }
                }
            })
            .await;
            let _ = actor.cast(FunctionMsg::SubscriptionEnded(subject));
        });
        Ok(Subscription {
            drain: Some(drain_tx),
            _task: AbortOnDrop::new(task.abort_handle()),
        })
    }

    /// Unsubscribes; the task ends (reporting `SubscriptionEnded`) once the messages
    /// already delivered have been forwarded.
    fn drain(&mut self) {
        if let Some(tx) = self.drain.take() {
            let _ = tx.send(());
        }
    }
}

/// The `$SRV` discovery subscriptions of a function's service instance. Plain ones,
/// not a queue group: every instance answers. Requests go to the FunctionActor, which
/// owns the stats they ask for.
pub(crate) struct Discovery {
    /// The forwarding task, stopped when this is dropped; dropping its subscribers
    /// unsubscribes them.
    _task: AbortOnDrop,
}

impl Discovery {
    pub(crate) async fn start(
        ctx: &NodeContext,
        function: &str,
        id: &str,
        actor: ActorRef<FunctionMsg>,
    ) -> Result<Discovery, async_nats::SubscribeError> {
        let mut subscribers = Vec::with_capacity(3);
        for subject in discovery_subjects(function, id) {
            subscribers.push(ctx.client.subscribe(subject).await?);
        }
        let mut requests = futures::stream::select_all(subscribers);
        let task = tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                if actor.cast(FunctionMsg::Service(msg)).is_err() {
                    break;
                }
            }
        });
        Ok(Discovery {
            _task: AbortOnDrop::new(task.abort_handle()),
        })
    }
}
