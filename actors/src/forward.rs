//! The loop of a subscription that hands its messages on (a function's subjects, the
//! routed ones of its versions and aliases): until the subscription ends, or is
//! drained (its `drain` sender sent or dropped), in which case the messages the server
//! already sent are still handed on.

use std::future::Future;

use futures::StreamExt;
use tokio::sync::oneshot;

/// Hands each message to `forward` until it says to stop (`false`), the subscription
/// ends, or a drain ends it.
pub(crate) async fn until_drained<F, Fut>(
    mut subscriber: async_nats::Subscriber,
    mut drain: oneshot::Receiver<()>,
    subject: &str,
    mut forward: F,
) where
    F: FnMut(async_nats::Message) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut drain, if !draining => {
                draining = true;
                if let Err(e) = subscriber.drain().await {
                    tracing::warn!(%subject, error = %e, "cannot drain subscription");
                    break;
                }
            }
            msg = subscriber.next() => match msg {
                Some(msg) => {
                    if !forward(msg).await {
                        break;
                    }
                }
                None => break,
            },
        }
    }
}
