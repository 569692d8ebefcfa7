//! Connecting to NATS: a client command's connection (one try, then the reason), and a
//! node's (every server, reconnecting without limit, each loss and return logged).

use std::path::PathBuf;
use std::sync::OnceLock;

/// `--creds` / `NATS_CREDS`, set once from the command line.
static CREDS: OnceLock<PathBuf> = OnceLock::new();

pub(crate) fn set_creds(path: PathBuf) {
    let _ = CREDS.set(path);
}

/// The options every connection starts from: the user's credentials, if given.
async fn options() -> anyhow::Result<async_nats::ConnectOptions> {
    use anyhow::Context;
    let options = async_nats::ConnectOptions::new();
    match CREDS.get() {
        Some(path) => options
            .credentials_file(path)
            .await
            .with_context(|| format!("--creds: cannot read {}", path.display())),
        None => Ok(options),
    }
}

/// Connects to the servers of `--nats` (comma-separated).
pub(crate) async fn client(urls: &str) -> anyhow::Result<async_nats::Client> {
    use anyhow::Context;
    options()
        .await?
        .name("natsfn")
        .connect(server_list(urls))
        .await
        .with_context(|| format!("cannot connect to NATS at {urls} (set --nats or NATS_URL)"))
}

/// A node's connection: every server of `--nats` and those the cluster advertises,
/// reconnecting without limit; each loss and return is logged (the node's
/// connection watch decides what it means for the work).
pub(crate) async fn node(urls: &str) -> anyhow::Result<async_nats::Client> {
    use anyhow::Context;
    options()
        .await?
        .name("natsfn node")
        .max_reconnects(None)
        // Back-off capped at 1 s (the client's own grows to 4 s): a node is back within
        // a second of a server being back.
        .reconnect_delay_callback(|attempts| {
            let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
            if attempts <= 1 {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_millis(2_u64.saturating_pow(exp))
                    .min(std::time::Duration::from_secs(1))
            }
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS: connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS: disconnected"),
                async_nats::Event::LameDuckMode => {
                    tracing::warn!("NATS: the server is shutting down (lame duck mode)")
                }
                other => tracing::debug!("NATS: {other}"),
            }
        })
        .connect(server_list(urls))
        .await
        .with_context(|| format!("cannot connect to NATS at {urls} (set --nats or NATS_URL)"))
}

/// `a,b,c` as the client wants it: one address each (a `&str` is one address only).
fn server_list(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_urls_are_split_on_commas() {
        assert_eq!(
            super::server_list("nats://a:4222, nats://b:4222,,nats://c:4222"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
    }
}
