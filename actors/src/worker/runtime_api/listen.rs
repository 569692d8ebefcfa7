//! Where a worker's Runtime API listens, and the listener that hands axum only the
//! worker's connections.

use std::net::{Ipv4Addr, SocketAddr};

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};

use crate::sandbox::net::peer_uid;

/// Where a worker's Runtime API listens.
pub(crate) enum RuntimeApiListen {
    /// On the host's loopback, at a port of the kernel's choosing (network `full`).
    /// `peer_uid`: the worker's uid; a connection from a socket of any other uid is
    /// closed unanswered. `None` takes every connection (isolation off).
    Loopback { peer_uid: Option<u32> },
    /// On this listener, bound already inside the worker's network namespace (network
    /// `none` or `nats`), where only the worker can connect.
    Bound(std::net::TcpListener),
}

/// The Runtime API's listener: what `accept` hands axum is a connection of the worker
/// (by its uid on the host's loopback; inside the worker's namespace, any).
pub(super) struct WorkerOnly {
    listener: TcpListener,
    peer_uid: Option<u32>,
    /// A connection has been refused already (logged once).
    refused: bool,
}

impl WorkerOnly {
    pub(super) async fn new(listen: RuntimeApiListen) -> std::io::Result<WorkerOnly> {
        let (listener, peer_uid) = match listen {
            RuntimeApiListen::Loopback { peer_uid } => {
                (TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?, peer_uid)
            }
            RuntimeApiListen::Bound(listener) => {
                listener.set_nonblocking(true)?;
                (TcpListener::from_std(listener)?, None)
            }
        };
        Ok(WorkerOnly {
            listener,
            peer_uid,
            refused: false,
        })
    }
}

impl Listener for WorkerOnly {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (tcp, peer) = Listener::accept(&mut self.listener).await;
            let Some(uid) = self.peer_uid else {
                return (tcp, peer);
            };
            // Read once per connection: runtime clients keep theirs open.
            let owner = tcp
                .local_addr()
                .ok()
                .and_then(|local| peer_uid(local, peer));
            if owner == Some(uid) {
                return (tcp, peer);
            }
            if !self.refused {
                self.refused = true;
                tracing::debug!(
                    "runtime API: closed a connection from {peer} (uid {owner:?}), not the worker's (uid {uid}); further ones are closed silently"
                );
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
