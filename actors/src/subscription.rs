//! One queue subscription of a function, forwarding each request to its FunctionActor.
//! Leaving a subject drains it: messages the server already sent still run.

use futures::StreamExt;
use natsfn_protocol::names::queue_group;
use ractor::ActorRef;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::context::NodeContext;
use crate::function_actor::FunctionMsg;
use crate::invocation::Invocation;

pub(crate) struct Subscription {
    drain: Option<oneshot::Sender<()>>,
    task: AbortHandle,
}

impl Subscription {
    pub(crate) async fn start(
        ctx: &NodeContext,
        function: &str,
        subject: String,
        actor: ActorRef<FunctionMsg>,
    ) -> Result<Subscription, async_nats::SubscribeError> {
        let mut subscriber = ctx
            .client
            .queue_subscribe(subject.clone(), queue_group(function))
            .await?;
        let (drain_tx, mut drain_rx) = oneshot::channel::<()>();
        let ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let mut draining = false;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut drain_rx, if !draining => {
                        draining = true;
                        if let Err(e) = subscriber.drain().await {
                            tracing::warn!(%subject, error = %e, "cannot drain subscription");
                            break;
                        }
                    }
                    msg = subscriber.next() => match msg {
                        Some(msg) => {
                            if let Some(invocation) = Invocation::from_message(&ctx, msg).await {
                                if actor.cast(FunctionMsg::Invoke(invocation)).is_err() {
                                    break;
                                }
                            }
                        }
                        None => break,
                    },
                }
            }
            let _ = actor.cast(FunctionMsg::SubscriptionEnded(subject));
        });
        Ok(Subscription {
            drain: Some(drain_tx),
            task: task.abort_handle(),
        })
    }

    /// Unsubscribes; the task ends (reporting `SubscriptionEnded`) once the messages
    /// already delivered have been forwarded.
    pub(crate) fn drain(&mut self) {
        if let Some(tx) = self.drain.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}
