//! Connecting to NATS the way the nats CLI does: its flags, its variables and its
//! contexts, each handed to async-nats' own `ConnectOptions`. A client command's
//! connection is one try, then the reason; a node's reconnects without limit, each loss
//! and return logged. Passwords and tokens never reach a message: URLs are printed
//! redacted.

mod context;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::{ConnectErrorKind, ServerAddr, ServerError};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::sync::watch;

use crate::cli::NatsArgs;

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// A command (a node too) gives up this soon when no server lets it in.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Where and as whom to connect: the flags (or their variables), then the URL's own
/// `user:password@`, then the nats CLI context.
#[derive(Clone)]
pub struct Nats {
    /// Without the credentials of the URLs they came from (those are in `auth`).
    servers: Vec<ServerAddr>,
    auth: Auth,
    client_cert: Option<(PathBuf, PathBuf)>,
    ca: Option<PathBuf>,
    inbox_prefix: Option<String>,
    /// The first permission violation the server reported to a client command.
    refused: Arc<watch::Sender<Option<String>>>,
}

#[derive(Clone)]
pub enum Auth {
    None,
    Creds(PathBuf),
    NKey(PathBuf),
    UserPassword(String, String),
    Token(String),
}

impl Nats {
    /// Resolves the command line (and the selected or named nats CLI context).
    pub fn resolve(args: NatsArgs) -> anyhow::Result<Nats> {
        let ctx = context::load(args.context.as_deref())?.unwrap_or_default();
        let urls = args
            .url
            .or(ctx.url.clone())
            .unwrap_or_else(|| DEFAULT_URL.into());
        let (servers, in_url) = parse_servers(&urls)?;
        let given = [
            args.creds.map(Auth::Creds),
            args.nkey.map(Auth::NKey),
            match (args.user, args.password) {
                (Some(user), password) => {
                    Some(Auth::UserPassword(user, password.unwrap_or_default()))
                }
                (None, Some(_)) => bail!("--password (NATS_PASSWORD) needs --user (NATS_USER)"),
                (None, None) => None,
            },
            args.token.map(Auth::Token),
        ];
        let mut given = given.into_iter().flatten();
        let auth = match (given.next(), given.next()) {
            (Some(_), Some(_)) => bail!(
                "more than one way to authenticate was given (--creds, --nkey, --user, \
                 --token or their NATS_* variables): give one"
            ),
            (Some(auth), None) => auth,
            (None, _) => in_url.or_else(|| ctx.auth()).unwrap_or(Auth::None),
        };
        let client_cert = match (args.tlscert.or(ctx.cert), args.tlskey.or(ctx.key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!(
                "a client certificate needs both --tlscert (NATS_CERT) and --tlskey (NATS_KEY)"
            ),
        };
        Ok(Nats {
            servers,
            auth,
            client_cert,
            ca: args.tlsca.or(ctx.ca),
            inbox_prefix: args.inbox_prefix.or(ctx.inbox_prefix),
            refused: Arc::default(),
        })
    }

    /// Servers a command of its own started (`natsfn dev`), entered as `auth`.
    pub fn local(urls: &str, auth: Auth) -> anyhow::Result<Nats> {
        Ok(Nats {
            servers: parse_servers(urls)?.0,
            auth,
            client_cert: None,
            ca: None,
            inbox_prefix: None,
            refused: Arc::default(),
        })
    }

    /// The same servers and credentials, replies arriving under `prefix`.
    pub fn inbox_prefix(mut self, prefix: &str) -> Nats {
        self.inbox_prefix = Some(prefix.to_owned());
        self
    }

    /// The servers, comma-separated, with no credentials in them (safe to print or
    /// to hand on).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(ServerAddr::as_url_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn options(&self, name: &str) -> anyhow::Result<async_nats::ConnectOptions> {
        let mut options = match &self.auth {
            Auth::None => async_nats::ConnectOptions::new(),
            Auth::Creds(file) => async_nats::ConnectOptions::with_credentials_file(file)
                .await
                .with_context(|| format!("cannot read the credentials file {}", file.display()))?,
            Auth::NKey(file) => async_nats::ConnectOptions::with_nkey(read_seed(file)?),
            Auth::UserPassword(user, password) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        };
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options.name(name).connection_timeout(CONNECT_WITHIN))
    }

    async fn connect(
        &self,
        options: async_nats::ConnectOptions,
    ) -> anyhow::Result<async_nats::Client> {
        let urls = self.urls();
        match tokio::time::timeout(CONNECT_WITHIN, options.connect(self.servers.clone())).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => {
                let hint = match e.kind() {
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                        self.hint()
                    }
                    // rustls' refusals reach here as I/O errors.
                    _ if e.kind() == ConnectErrorKind::Tls || e.to_string().to_lowercase().contains("certificate") => {
                        "TLS: check --tlsca, --tlscert and --tlskey (NATS_CA, NATS_CERT, NATS_KEY)"
                    }
                    _ => "set --nats or NATS_URL",
                };
                Err(e).with_context(|| format!("cannot connect to NATS at {urls} ({hint})"))
            }
            Err(_) => bail!(
                "cannot connect to NATS at {urls}: no server let this client in within {CONNECT_WITHIN:?}"
            ),
        }
    }

    /// What to check next, when the server's reason is about who is connecting.
    fn hint(&self) -> &'static str {
        match self.auth {
            Auth::None => "the server asks for credentials: --creds, --nkey, --user/--password, --token or --context",
            _ => "check the credentials given",
        }
    }

    /// The first request the server refused a client command (a permission
    /// violation, in the server's words); never, if none is.
    pub async fn refused(&self) -> String {
        let mut refused = self.refused.subscribe();
        let first = refused.wait_for(Option::is_some).await.map(|t| t.clone());
        match first {
            Ok(text) => text.unwrap_or_default(),
            // The sender lives as long as `self`.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Connects a client command: one pass over the servers, then the reason. A request
/// the server refuses it is reported to [`Nats::refused`].
pub async fn client(nats: &Nats) -> anyhow::Result<async_nats::Client> {
    let refused = nats.refused.clone();
    let options = nats.options("natsfn").await?.event_callback(move |event| {
        let refused = refused.clone();
        async move {
            if let async_nats::Event::ServerError(ServerError::Other(text)) = event {
                if text.starts_with("Permissions Violation") {
                    refused.send_if_modified(|first| {
                        first.get_or_insert(text);
                        true
                    });
                }
            }
        }
    });
    nats.connect(options).await
}

/// A node's connection: every server of `--nats` and those the cluster advertises,
/// reconnecting without limit; each loss and return is logged (the node's
/// connection watch decides what it means for the work). With it, the subjects the
/// server refuses the node a subscription to: the server says so only in an error
/// the client hears of here, later.
pub async fn node(nats: &Nats) -> anyhow::Result<(async_nats::Client, UnboundedReceiver<String>)> {
    let (denied, denials) = mpsc::unbounded_channel();
    let options = nats
        .options("natsfn node")
        .await?
        .max_reconnects(None)
        // Back-off capped at 1 s (the client's own grows to 4 s): a node is back within
        // a second of a server being back.
        .reconnect_delay_callback(|attempts| {
            let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
            if attempts <= 1 {
                Duration::ZERO
            } else {
                Duration::from_millis(2_u64.saturating_pow(exp)).min(Duration::from_secs(1))
            }
        })
        .event_callback(move |event| {
            let denied = denied.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS: connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS: disconnected"),
                    async_nats::Event::LameDuckMode => {
                        tracing::warn!("NATS: the server is shutting down (lame duck mode)")
                    }
                    async_nats::Event::ServerError(ServerError::Other(text))
                        if text.starts_with("Permissions Violation") =>
                    {
                        tracing::warn!("NATS: {text}");
                        if let Some(subject) = denied_subscription(&text) {
                            // Nobody to tell once the node has stopped.
                            let _ = denied.send(subject);
                        }
                    }
                    other => tracing::debug!("NATS: {other}"),
                }
            }
        });
    Ok((nats.connect(options).await?, denials))
}

/// The subject of the server's `Permissions Violation for Subscription to "SUBJECT"`
/// (followed by ` using queue "Q"` for a queue subscription).
fn denied_subscription(text: &str) -> Option<String> {
    let quoted = text.strip_prefix("Permissions Violation for Subscription to \"")?;
    quoted
        .split_once('"')
        .map(|(subject, _)| subject.to_owned())
}

/// `a,b,c` parsed as the client parses them, each without its credentials; the first
/// URL's `user:password@` (or `token@`) is the URL's way to authenticate.
fn parse_servers(urls: &str) -> anyhow::Result<(Vec<ServerAddr>, Option<Auth>)> {
    let mut servers = Vec::new();
    let mut auth = None;
    for (i, url) in urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .enumerate()
    {
        // The error of a URL that does not parse would print it, password and all.
        let Ok(addr) = url.parse::<ServerAddr>() else {
            bail!("server {} of --nats (NATS_URL) is not a NATS URL", i + 1);
        };
        let mut plain = addr.clone().into_inner();
        if let Some(user) = addr.username() {
            let user = decode(user);
            auth.get_or_insert(match addr.password() {
                Some(password) => Auth::UserPassword(user, decode(password)),
                None => Auth::Token(user),
            });
            // Clearing them cannot fail on a URL that has them.
            let _ = plain.set_password(None);
            let _ = plain.set_username("");
        }
        servers.push(ServerAddr::from_url(plain)?);
    }
    if servers.is_empty() {
        bail!("--nats (NATS_URL) names no server");
    }
    Ok((servers, auth))
}

fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// A key file holds an nkey seed alone (surrounding whitespace aside).
pub fn read_seed(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the nkey seed file {}", file.display()))?;
    let seed = text.trim();
    if nkeys::KeyPair::from_seed(seed).is_err() {
        bail!(
            "{} does not hold an nkey seed (a line starting with S)",
            file.display()
        );
    }
    Ok(seed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &str) -> String {
        Nats::local(list, Auth::None)
            .map(|n| n.urls())
            .unwrap_or_default()
    }

    #[test]
    fn nats_urls_are_split_on_commas() {
        assert_eq!(
            urls("nats://a:4222, nats://b:4222,,c:4222"),
            "nats://a:4222,nats://b:4222,nats://c:4222"
        );
    }

    #[test]
    fn credentials_in_a_url_authenticate_and_are_never_printed() {
        let (servers, auth) = parse_servers("nats://ann:p%40ss@a:4222,nats://b:4222").unwrap();
        assert!(matches!(auth, Some(Auth::UserPassword(u, p)) if u == "ann" && p == "p@ss"));
        assert_eq!(servers[0].as_url_str(), "nats://a:4222");
        let (_, auth) = parse_servers("tls://s3cr3t@a:4222").unwrap();
        assert!(matches!(auth, Some(Auth::Token(t)) if t == "s3cr3t"));
        let Err(err) = parse_servers("nats://ann:secret@[bad") else {
            panic!("a URL that does not parse is refused");
        };
        let err = err.to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn a_refused_subscription_names_its_subject() {
        let queue =
            r#"Permissions Violation for Subscription to "orders.new" using queue "natsfn.f""#;
        assert_eq!(denied_subscription(queue).as_deref(), Some("orders.new"));
        let plain = r#"Permissions Violation for Subscription to "_INBOX.abc.*""#;
        assert_eq!(denied_subscription(plain).as_deref(), Some("_INBOX.abc.*"));
        let publish = r#"Permissions Violation for Publish to "orders.new""#;
        assert_eq!(denied_subscription(publish), None);
    }

    #[test]
    fn two_ways_to_authenticate_are_refused() {
        let args = NatsArgs {
            token: Some("t".into()),
            user: Some("u".into()),
            context: Some(String::new()),
            ..NatsArgs::default()
        };
        assert!(Nats::resolve(args).is_err());
    }
}
