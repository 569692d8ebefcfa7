//! A node's start: its runtimes written out, its buckets and streams opened (made on
//! first use), the package cache, the log shipper, the status reporter and the node's
//! key in `natsfn-nodes`; then the bindings watch and the connection watch.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use async_nats::jetstream;
use ractor::ActorRef;
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDrop;

use super::connection;
use super::registry::{self, NodeRegistry};
use super::{NodeArgs, NodeMsg, NodeState};
use crate::buckets;
use crate::context::NodeContext;
use crate::credentials::{CredentialIssuer, CredentialsError};
use crate::launch;
use crate::logs::LogShipper;
use crate::status::StatusReporter;

#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("node id {0:?}: expected letters, digits and -_=/. (it is a key of natsfn-nodes)")]
    NodeId(String),
    #[error(transparent)]
    Bucket(#[from] buckets::BucketError),
    #[error(transparent)]
    Stream(#[from] buckets::StreamError),
    #[error("cannot create the package cache under {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the runtime bootstraps to {dir}: {source}")]
    Runtimes {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Not a source: the message is whole already.
    #[error("--signing-key: {0}")]
    Credentials(CredentialsError),
}

impl NodeState {
    pub(super) async fn start(
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, NodeError> {
        if !registry::is_valid_node_id(&args.node_id) {
            return Err(NodeError::NodeId(args.node_id));
        }
        let runtime_dir = args.runtime_dir.unwrap_or_else(launch::default_runtime_dir);
        launch::install_runtimes(&runtime_dir).map_err(|source| NodeError::Runtimes {
            dir: runtime_dir.clone(),
            source,
        })?;
        let js = jetstream::new(args.client.clone());
        let data_dir = args
            .data_dir
            .unwrap_or_else(crate::package::default_data_dir);
        let packages =
            crate::package::PackageCache::new(&data_dir, js.clone()).map_err(|source| {
                NodeError::DataDir {
                    dir: data_dir.clone(),
                    source,
                }
            })?;
        let bindings = buckets::bindings(&js).await?;
        let versions = buckets::versions(&js).await?;
        let aliases = buckets::aliases(&js).await?;
        let status = buckets::status(&js).await?;
        let nodes = buckets::nodes(&js).await?;
        buckets::logs(&js, args.logs).await?;
        buckets::async_streams(&js).await?;
        let node_id: Arc<str> = args.node_id.into();
        let credentials = match args.signing_key {
            Some(key) => Some(Arc::new(
                CredentialIssuer::discover(
                    &args.client,
                    key,
                    &args.nats_url,
                    runtime_dir.join("credentials"),
                    node_id.clone(),
                )
                .await
                .map_err(NodeError::Credentials)?,
            )),
            None => None,
        };
        let logs = LogShipper::spawn(args.client.clone());
        let ctx = NodeContext {
            max_payload: args.client.server_info().max_payload,
            shared_client: Arc::new(args.client.clone()),
            client: args.client,
            runtime_dir: runtime_dir.into(),
            interpreters: Arc::new(args.interpreters),
            status: StatusReporter::spawn(node_id.clone(), status),
            logs,
            node_id,
            worker_slots: Arc::new(Semaphore::new(args.max_workers)),
            max_workers: args.max_workers,
            metrics: args.metrics,
            packages,
            credentials,
            url_auth_refused: args.url_auth_refused,
            sandbox: args.sandbox,
        };
        ctx.metrics.set_max_workers(args.max_workers);
        let registry = NodeRegistry::spawn(
            js,
            nodes.clone(),
            &ctx.node_id,
            args.max_workers,
            args.labels.clone(),
            ctx.metrics.clone(),
        );
        let connection = tokio::spawn(connection::watch(
            ctx.client.clone(),
            args.nats_grace,
            ctx.metrics.clone(),
            args.subscription_denials,
            myself.get_derived(),
        ));
        let mut state = NodeState {
            ctx,
            functions: HashMap::new(),
            live: HashSet::new(),
            draining: false,
            isolated: false,
            bindings,
            versions,
            aliases,
            published: HashMap::new(),
            peers: HashMap::new(),
            nodes,
            labels: Arc::new(args.labels),
            watchers: Vec::new(),
            _connection: AbortOnDrop::new(connection.abort_handle()),
            registry: Some(registry),
        };
        state.watch(&myself);
        Ok(state)
    }
}
