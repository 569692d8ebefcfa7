//! The subscriptions that qualified invocations come in on: one per function for
//! `natsfn.invoke.<fn>.*` (every version, alias and `$LATEST`), and one per subject an
//! alias binds. Both are queue subscriptions in the function's queue group, read the
//! routes per message and hand the invocation to the actor that runs it.

use std::collections::BTreeMap;

use natsfn_protocol::names::{qualified_invoke_subject, queue_group};
use natsfn_protocol::ErrorCode;
use ractor::ActorRef;
use tokio::sync::oneshot;

use super::{read, SharedRoutes};
use crate::context::NodeContext;
use crate::forward;
use crate::function::FunctionMsg;
use crate::invocation::{EndpointId, Invocation};

/// A version actor's only endpoint, and the `$LATEST` actor's canonical one: what a
/// routed invocation counts under in the stats of the actor that runs it.
const ROUTED_ENDPOINT: EndpointId = EndpointId(0);

/// How a routed subscription picks the actor.
#[derive(Clone)]
enum Pick {
    /// By the last token of the subject (`natsfn.invoke.<fn>.<qualifier>`).
    Qualifier,
    /// By this alias, whatever the subject.
    Alias(String),
}

/// `natsfn.invoke.<fn>.*` of one function on this node; drained when dropped.
pub(crate) struct QualifiedSubscription {
    _routed: Routed,
}

impl QualifiedSubscription {
    pub(crate) async fn start(
        ctx: &NodeContext,
        function: &str,
        routes: SharedRoutes<ActorRef<FunctionMsg>>,
    ) -> Result<QualifiedSubscription, async_nats::SubscribeError> {
        let subject = qualified_invoke_subject(function, "*");
        Routed::start(ctx, function, subject, Pick::Qualifier, routes)
            .await
            .map(|routed| QualifiedSubscription { _routed: routed })
    }
}

/// The subjects one alias binds (`natsfn alias set --subject`).
pub(crate) struct AliasSubjects {
    alias: String,
    subscriptions: BTreeMap<String, Routed>,
}

impl AliasSubjects {
    pub(crate) fn new(alias: &str) -> AliasSubjects {
        AliasSubjects {
            alias: alias.to_owned(),
            subscriptions: BTreeMap::new(),
        }
    }

    /// Listens on exactly `wanted`: new subjects first, then the others drained.
    pub(crate) async fn set(
        &mut self,
        ctx: &NodeContext,
        function: &str,
        wanted: &[String],
        routes: &SharedRoutes<ActorRef<FunctionMsg>>,
    ) -> Result<(), async_nats::SubscribeError> {
        for subject in wanted {
            if !self.subscriptions.contains_key(subject) {
                let pick = Pick::Alias(self.alias.clone());
                let routed =
                    Routed::start(ctx, function, subject.clone(), pick, routes.clone()).await?;
                self.subscriptions.insert(subject.clone(), routed);
            }
        }
        self.subscriptions.retain(|s, _| wanted.contains(s));
        Ok(())
    }
}

/// One routed subscription. Dropping it drains it: the messages the server already
/// sent are still handed over, then its task ends by itself.
struct Routed {
    drain: Option<oneshot::Sender<()>>,
}

impl Routed {
    async fn start(
        ctx: &NodeContext,
        function: &str,
        subject: String,
        pick: Pick,
        routes: SharedRoutes<ActorRef<FunctionMsg>>,
    ) -> Result<Routed, async_nats::SubscribeError> {
        let subscriber = ctx
            .client
            .queue_subscribe(subject.clone(), queue_group(function))
            .await?;
        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            forward::until_drained(subscriber, drain_rx, &subject, |msg| {
                let (ctx, pick, routes) = (&ctx, &pick, &routes);
                async move {
                    route(ctx, pick, routes, msg).await;
                    true
                }
            })
            .await
        });
        Ok(Routed {
            drain: Some(drain_tx),
        })
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        if let Some(tx) = self.drain.take() {
            let _ = tx.send(());
        }
    }
}

/// Hands one message to the actor its qualifier or alias picks; an unknown qualifier
/// is answered 503 naming it.
async fn route(
    ctx: &NodeContext,
    pick: &Pick,
    routes: &SharedRoutes<ActorRef<FunctionMsg>>,
    msg: async_nats::Message,
) {
    let target = {
        let routes = read(routes);
        let roll = fastrand::f64();
        match pick {
            Pick::Qualifier => {
                let qualifier = msg.subject.rsplit('.').next().unwrap_or_default();
                routes.resolve(qualifier, roll)
            }
            Pick::Alias(alias) => routes.alias(alias, roll),
        }
    };
    let Some(invocation) = Invocation::from_message(ctx, msg, ROUTED_ENDPOINT).await else {
        return; // answered 400 already
    };
    match target {
        Ok(actor) => {
            if let Err(ractor::MessagingErr::SendErr(FunctionMsg::Invoke(invocation))) =
                actor.cast(FunctionMsg::Invoke(invocation))
            {
                let error = natsfn_protocol::LambdaError::service_exception(
                    "the version's actor stopped on this node",
                );
                invocation.caller.elsewhere(ctx, &error).await;
            }
        }
        Err(error) => {
            invocation
                .caller
                .fail(ctx, ErrorCode::Unavailable, &error)
                .await
        }
    }
}
