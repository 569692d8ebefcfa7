//! natsfn's roles (nats-secure/) on the harness's servers. Every server the test suite
//! starts has the account NATSFN with a superuser for the tests' own clients (they
//! connect without credentials: `no_auth_user`) and the `node` user with `$NODE` of
//! nats-secure/permissions.conf; every node is started as that user. So the whole
//! suite runs with the node on exactly that allow list, plus one line of site policy:
//! the tests' functions bind two-token subjects (`orders.new`), as a site adds its own.
//! The benchmark keeps open servers ([`open_servers`]).

use std::path::{Path, PathBuf};

/// Set by the benchmark, whose "before" build may not know the connection flags:
/// its servers are open and its nodes connect as they are.
static OPEN_SERVERS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Servers without roles, nodes without credentials, from now on (the benchmark).
#[allow(dead_code)]
pub fn open_servers() {
    OPEN_SERVERS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether servers get the roles and nodes connect as `node`.
pub(super) fn roles() -> bool {
    !OPEN_SERVERS.load(std::sync::atomic::Ordering::Relaxed)
}

pub const NODE_PASSWORD: &str = "node-sample-password";
pub const ADMIN_PASSWORD: &str = "admin-sample-password";
pub const INVOKER_PASSWORD: &str = "invoker-sample-password";

/// How a node of the suite connects: as `node`, with the inbox prefix its role allows.
pub(super) const NODE_CONNECT: [&str; 6] = [
    "--user",
    "node",
    "--password",
    NODE_PASSWORD,
    "--inbox-prefix",
    "_INBOX_node",
];

/// The shipped node role's one site-policy entry for bound subjects.
const SHIPPED_SITE: &str = r#""fn.> natsfn.*""#;
/// The test suite's own site policy: any two-token subject, in a function's queue group.
const TEST_SITE: &str = r#""*.* natsfn.*""#;

/// nats-secure/, or a copy of it in `NATSFN_SECURE_DIR` (scripts/node-role-minimal
/// runs tests on copies with one entry left out).
pub fn secure_dir() -> PathBuf {
    std::env::var_os("NATSFN_SECURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("nats-secure"))
}

/// The configuration lines of a suite server storing its files in `dir`: the shipped
/// permissions with the suite's site policy, the account, its users (the shipped
/// ones, and the tests' superuser).
pub(super) fn suite_config(dir: &Path) -> String {
    let shipped = std::fs::read_to_string(secure_dir().join("permissions.conf"))
        .expect("read nats-secure/permissions.conf");
    assert_eq!(
        shipped.matches(SHIPPED_SITE).count(),
        1,
        "nats-secure/permissions.conf: the node's subscribe list names {SHIPPED_SITE} once"
    );
    let permissions = dir.join("permissions.conf");
    std::fs::write(
        &permissions,
        shipped.replacen(
            SHIPPED_SITE,
            &format!("{SHIPPED_SITE}\n      {TEST_SITE}"),
            1,
        ),
    )
    .expect("write permissions.conf");
    // nats-server includes only paths relative to the including file.
    format!(
        "include \"permissions.conf\"\n\
         accounts {{\n  NATSFN {{\n    jetstream: enabled\n    users: [\n      \
         {{user: test, password: test}}\n      \
         {{user: node, password: {NODE_PASSWORD}, permissions: $NODE}}\n      \
         {{user: admin, password: {ADMIN_PASSWORD}, permissions: $ADMIN}}\n      \
         {{user: invoker, password: {INVOKER_PASSWORD}, permissions: $INVOKER}}\n    ]\n  }}\n}}\n\
         no_auth_user: test\n"
    )
}

/// A server with natsfn's roles exactly as shipped: nats-secure/accounts.conf (its
/// users node, admin and invoker, and nobody else).
pub fn secure_server() -> super::NatsServer {
    let dir = tempfile::tempdir().expect("temp dir");
    super::NatsServer::start_file(dir, &secure_dir().join("accounts.conf"))
}

/// A server whose admin and invoker may read only their own replies (`_INBOX_admin.>`,
/// `_INBOX_invoker.>`), as docs/security.md shows.
pub fn own_inbox_server() -> super::NatsServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let shipped = std::fs::read_to_string(secure_dir().join("permissions.conf"))
        .expect("read nats-secure/permissions.conf");
    let (before, invoker) = shipped
        .split_once("INVOKER = {")
        .expect("permissions.conf defines INVOKER");
    let (node, admin) = before
        .split_once("ADMIN = {")
        .expect("permissions.conf defines ADMIN");
    let inbox = r#""_INBOX.>""#;
    assert_eq!(admin.matches(inbox).count(), 1, "ADMIN subscribes {inbox}");
    assert_eq!(
        invoker.matches(inbox).count(),
        1,
        "INVOKER subscribes {inbox}"
    );
    let permissions = format!(
        "{node}ADMIN = {{{}INVOKER = {{{}",
        admin.replace(inbox, r#""_INBOX_admin.>""#),
        invoker.replace(inbox, r#""_INBOX_invoker.>""#)
    );
    std::fs::write(dir.path().join("permissions.conf"), permissions).expect("write");
    let accounts = std::fs::read_to_string(secure_dir().join("accounts.conf"))
        .expect("read nats-secure/accounts.conf");
    let conf = dir.path().join("accounts.conf");
    std::fs::write(&conf, accounts).expect("write accounts.conf");
    super::NatsServer::start_file(dir, &conf)
}

/// A user of the shipped accounts: its name and password.
#[derive(Clone, Copy)]
pub struct Role(pub &'static str, pub &'static str);

pub const ADMIN: Role = Role("admin", ADMIN_PASSWORD);
pub const INVOKER: Role = Role("invoker", INVOKER_PASSWORD);

impl Role {
    pub async fn client(self, server: &super::NatsServer) -> async_nats::Client {
        self.client_with(server, async_nats::ConnectOptions::new())
            .await
    }

    pub async fn client_with(
        self,
        server: &super::NatsServer,
        options: async_nats::ConnectOptions,
    ) -> async_nats::Client {
        options
            .user_and_password(self.0.into(), self.1.into())
            .connect(&server.url)
            .await
            .unwrap_or_else(|e| panic!("connect as {}: {e}", self.0))
    }

    /// Runs the natsfn command line as this user.
    pub async fn cli(self, server: &super::NatsServer, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--user", self.0, "--password", self.1];
        all.extend_from_slice(args);
        super::run_cli(server, &all).await
    }
}
