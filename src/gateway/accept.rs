//! The gateway's accept loop. Every client costs a bounded amount: at most
//! `MAX_CONNECTIONS` connections in all (more wait in the listen backlog) and at most
//! `MAX_PER_CLIENT` from one client (an IPv4 address, or an IPv6 /64, which one host
//! usually has whole; more are closed at once), `HEADER_READ_TIMEOUT` for the TLS
//! handshake and again for each request's head (idle keep-alive connections included);
//! each connection is its own task, so a slow one delays nobody else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request as HttpRequest;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use super::Peer;

/// Connections served at once; further ones wait in the kernel's listen backlog.
const MAX_CONNECTIONS: usize = 4096;
/// Connections one client may hold at once: a client that opens more (slow or idle
/// ones, on purpose or not) leaves the other `MAX_CONNECTIONS - MAX_PER_CLIENT` slots
/// to everyone else.
const MAX_PER_CLIENT: usize = 256;
/// Time a client has to finish a TLS handshake, and to send a request's line and
/// headers (and an idle keep-alive connection to start its next request).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let clients = Clients::default();
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "the HTTP gateway cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = clients.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection closed: its client already holds {MAX_PER_CLIENT}");
            continue; // dropping the stream closes it, and frees the permit
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            let peer_of = Peer {
                addr: peer,
                tls: tls.is_some(),
            };
            let served = match tls {
                None => serve(stream, app, peer_of).await,
                Some(tls) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve(stream, app, peer_of).await,
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                        Err(_) => Err("no TLS handshake in time".into()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection until it closes.
async fn serve<S>(stream: S, app: Router, peer: Peer) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: HttpRequest<_>| {
        request.extensions_mut().insert(peer);
        let mut app = app.clone();
        async move {
            let response: Result<Response, Infallible> = app.call(request.map(Body::new)).await;
            response
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| e.to_string())
}

/// Open connections per client.
#[derive(Clone, Default)]
struct Clients(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One open connection of a client; dropping it frees its place.
struct ClientSlot {
    clients: Clients,
    client: IpAddr,
}

impl Clients {
    fn admit(&self, ip: IpAddr) -> Option<ClientSlot> {
        let client = client_of(ip);
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(client).or_default();
        if *count >= MAX_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            clients: self.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The client an address belongs to: an IPv4 address (also when mapped into IPv6),
/// or the /64 of an IPv6 one.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_of(ip("10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(client_of(ip("::ffff:10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:aa:bb:cc:dd")),
            ip("2001:db8:1:2::")
        );
    }

    #[test]
    fn a_client_holds_at_most_its_share_and_gets_it_back() {
        let clients = Clients::default();
        let one = "2001:db8::1".parse().unwrap();
        let same = "2001:db8::2".parse().unwrap();
        let other = "2001:db9::1".parse().unwrap();
        let mut held: Vec<ClientSlot> = (0..MAX_PER_CLIENT)
            .map(|_| clients.admit(one).expect("within the share"))
            .collect();
        assert!(
            clients.admit(same).is_none(),
            "the same /64 is the same client"
        );
        assert!(clients.admit(other).is_some());
        held.pop();
        assert!(clients.admit(one).is_some());
        drop(held);
        assert!(clients.0.lock().unwrap().is_empty());
    }
}
