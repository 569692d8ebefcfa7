//! Packages on a node: a binding's code and layers fetched from `natsfn-packages`,
//! verified against their digest and unpacked, once per digest, into a cache shared by
//! every function (and every node using the same data dir).

mod cache;
mod unpack;

pub use unpack::stays_inside;

pub(crate) use cache::{Lease, PackageCache};
pub(crate) use unpack::{unpack, Limits};

/// Largest package (compressed object) a node fetches. The Object Store chunks it, so
/// the limit is about the node's memory: the object is held whole while it is verified.
pub const MAX_PACKAGE_BYTES: u64 = 256 * 1024 * 1024;

use std::path::PathBuf;
use std::sync::Arc;

use natsfn_protocol::{BindingSpec, CodeSource, LambdaError};

/// Where a binding's code and layers are on this node, and the leases that keep them
/// there while a plan (and so any worker) uses them.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) dir: PathBuf,
    /// Earliest first.
    pub(crate) layers: Vec<PathBuf>,
    pub(crate) leases: Vec<Arc<Lease>>,
}

impl PackageCache {
    /// Fetches (if need be) every package `spec` names. An error names the package and
    /// what was wrong; it is the function's reason not to start.
    pub(crate) async fn resolve(&self, spec: &BindingSpec) -> Result<Resolved, LambdaError> {
        let mut leases = Vec::with_capacity(spec.layers.len() + 1);
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (i, layer) in spec.layers.iter().enumerate() {
            let lease = self.lease(layer, &format!("layers[{i}]")).await?;
            layers.push(lease.dir().to_path_buf());
            leases.push(lease);
        }
        let dir = match &spec.code {
            CodeSource::Dir { dir } => PathBuf::from(dir),
            CodeSource::Package(package) => {
                let lease = self.lease(package, "code").await?;
                let dir = lease.dir().to_path_buf();
                leases.push(lease);
                dir
            }
        };
        Ok(Resolved {
            dir,
            layers,
            leases,
        })
    }
}

/// A node's data dir unless `--data-dir` says otherwise: the user's cache directory
/// (`$XDG_CACHE_HOME/natsfn`, `~/.cache/natsfn`), else one under the temp dir.
pub(crate) fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("natsfn"))
        .unwrap_or_else(|| std::env::temp_dir().join("natsfn-data"))
}
