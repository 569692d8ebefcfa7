//! natsfn's roles in operator mode: the allow lists of nats-secure/permissions.conf
//! (and the node's `allow_responses`) given as user JWTs, as nats-secure/operator/
//! README.md tells with `nsc`. The node serves on them alone, with and without
//! `--signing-key` (which needs `$SYS.REQ.USER.INFO` besides), the admin deploys, the
//! invoker invokes and cannot remove.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::harness::*;

/// What a node with `--signing-key` asks to learn its account, in operator mode.
const USER_INFO: &str = "$SYS.REQ.USER.INFO";

/// A user of the operator's account with exactly `role`'s permissions, and `more`
/// subjects to publish; its `.creds` written to `dir/name.creds`.
fn role_user(
    operator: &Operator,
    dir: &Path,
    name: &str,
    role: &RolePermissions,
    more: &[&str],
) -> PathBuf {
    let creds = operator.user_extended(
        name,
        |token| {
            let publish = role.publish.iter().map(String::as_str);
            let token = publish
                .chain(more.iter().copied())
                .fold(token, |token, subject| token.allow_publish(subject));
            // "subject queue" entries stay as written: nats-server reads a queue group
            // in a JWT's allow list as in its configuration.
            role.subscribe
                .iter()
                .fold(token, |token, subject| token.allow_subscribe(subject))
        },
        // nats-jwt 0.3 has no `resp`: set in the claims (nats-server's JWT field).
        |nats| {
            if let Some(responses) = role.responses {
                let ttl = u64::try_from(responses.expires.as_nanos()).expect("a ttl in u64");
                nats["resp"] = json!({"max": responses.max, "ttl": ttl});
            }
        },
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, &creds).expect("write creds");
    path
}

/// The `nats` claims of a `.creds` file's JWT.
fn claims(creds: &Path) -> Value {
    use base64::Engine;
    let text = std::fs::read_to_string(creds).expect("read creds");
    let jwt = text.lines().nth(1).expect("the JWT line");
    let claims = jwt.split('.').nth(1).expect("a JWT has claims");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .expect("base64url");
    serde_json::from_slice::<Value>(&claims).expect("claims in JSON")["nats"].clone()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

/// A client connected with `creds`, with `inbox` as its inbox prefix when given.
async fn connect(server: &NatsServer, creds: &Path, inbox: Option<&str>) -> async_nats::Client {
    let mut options = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .expect("read creds");
    if let Some(prefix) = inbox {
        options = options.custom_inbox_prefix(prefix);
    }
    options
        .connect(&server.url)
        .await
        .unwrap_or_else(|e| panic!("connect with {}: {e}", creds.display()))
}

#[tokio::test]
async fn the_roles_as_user_jwts_hold_in_operator_mode() {
    let node = shipped_role("NODE");
    let admin = shipped_role("ADMIN");
    let invoker = shipped_role("INVOKER");
    // What this test binds (`fn.hello`) is covered by the shipped site policy.
    assert!(
        node.subscribe.iter().any(|s| s == "fn.> natsfn.*"),
        "{node:?}"
    );
    assert!(invoker.publish.iter().any(|s| s == "fn.>"), "{invoker:?}");
    let responses = node.responses.expect("NODE has allow_responses");
    assert_eq!(responses.max, 1);
    assert_eq!(responses.expires.as_secs(), 16 * 60);
    assert_eq!((admin.responses, invoker.responses), (None, None));
    for signing_key in [false, true] {
        serve_deploy_invoke(&node, &admin, &invoker, signing_key).await;
    }
}

/// The whole round on a new operator-mode server, the node with `--signing-key` or not.
async fn serve_deploy_invoke(
    node_role: &RolePermissions,
    admin_role: &RolePermissions,
    invoker_role: &RolePermissions,
    signing_key: bool,
) {
    let operator = Operator::new();
    let server = operator.start_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let more: &[&str] = if signing_key { &[USER_INFO] } else { &[] };
    let node_creds = role_user(&operator, dir.path(), "node", node_role, more);
    let admin_creds = role_user(&operator, dir.path(), "admin", admin_role, &[]);
    let invoker_creds = role_user(&operator, dir.path(), "invoker", invoker_role, &[]);
    // An invoker reading only its own replies (docs/security.md): the node may answer
    // it only by its `resp` (allow_responses), `_INBOX.>` being no help.
    let own_inbox = RolePermissions {
        subscribe: vec!["_INBOX_invoker.>".to_owned()],
        ..invoker_role.clone()
    };
    let own_creds = role_user(&operator, dir.path(), "invoker-own", &own_inbox, &[]);

    // The JWTs hold exactly the roles.
    let minted = claims(&node_creds);
    let mut publish = node_role.publish.clone();
    publish.extend(more.iter().map(|s| (*s).to_owned()));
    assert_eq!(minted["pub"]["allow"], json!(publish));
    assert_eq!(minted["sub"]["allow"], json!(node_role.subscribe));
    assert_eq!(minted["resp"], json!({"max": 1, "ttl": 960_000_000_000u64}));
    for (creds, role) in [(&admin_creds, admin_role), (&invoker_creds, invoker_role)] {
        let minted = claims(creds);
        assert_eq!(minted["pub"]["allow"], json!(role.publish));
        assert_eq!(minted["sub"]["allow"], json!(role.subscribe));
        assert_eq!(minted.get("resp"), None);
    }

    let node_creds = dir_str(&node_creds);
    let key = dir_str(&operator.signing_key);
    let mut args = vec!["--creds", &node_creds, "--inbox-prefix", "_INBOX_node"];
    if signing_key {
        args.extend(["--signing-key", &key]);
    }
    let mut node = Node::start_alone(&server.url, "node-a", &args);
    eventually("the node to start", || {
        let started = node.log().contains("natsfn node running");
        assert!(
            started || node.is_running(),
            "the node exited: {}",
            node.log()
        );
        async move { started.then_some(()) }
    })
    .await;

    let example = format!("{}/examples/hello-python", env!("CARGO_MANIFEST_DIR"));
    let admin = dir_str(&admin_creds);
    let deployed = run_cli(
        &server,
        &[
            "--creds",
            &admin,
            "deploy",
            &example,
            "-f",
            "hello",
            "--runtime",
            "python3",
            "--handler",
            "app.handler",
            "-s",
            "fn.hello",
        ],
    )
    .await;
    succeeded(&deployed);

    let invoker = dir_str(&invoker_creds);
    let invoked = run_cli(&server, &["--creds", &invoker, "invoke", "hello", "{}"]).await;
    assert_eq!(succeeded(&invoked).trim(), r#"{"message": "hello, world"}"#);
    let client = connect(&server, &invoker_creds, None).await;
    let reply = request(&client, "fn.hello", r#"{"name": "jwt"}"#.into()).await;
    assert_eq!(json(&reply), json!({"message": "hello, jwt"}));
    let own = connect(&server, &own_creds, Some("_INBOX_invoker")).await;
    for subject in ["fn.hello", "natsfn.invoke.hello"] {
        let reply = request(&own, subject, r#"{"name": "own"}"#.into()).await;
        assert_eq!(json(&reply), json!({"message": "hello, own"}), "{subject}");
    }

    let removed = run_cli(&server, &["--creds", &invoker, "rm", "hello"]).await;
    assert!(!removed.status.success(), "{}", stdout(&removed));
    assert!(
        stderr(&removed).contains("Permissions Violation"),
        "{}",
        stderr(&removed)
    );
    let got = succeeded(&run_cli(&server, &["--creds", &admin, "get", "hello"]).await);
    let got: Value = serde_json::from_str(&got).expect("get prints JSON");
    assert_eq!(got["status"]["state"], "ready", "{got}");

    let log = node.log();
    assert!(!log.contains("Permissions Violation"), "{log}");
}

/// One `nsc add user` or `nsc edit user` of nats-secure/operator/README.md.
#[derive(Debug, Default)]
struct NscUser {
    edit: bool,
    name: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
    responses: Option<i64>,
    ttl: Option<String>,
}

/// The README's `nsc … user` commands, continued lines joined, `'…'` one word each.
fn nsc_users(readme: &str) -> Vec<NscUser> {
    readme
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("nsc add user ") || line.starts_with("nsc edit user "))
        .map(|line| {
            let mut words = shell_words(line).into_iter().skip(3);
            let mut user = NscUser {
                edit: line.starts_with("nsc edit"),
                ..NscUser::default()
            };
            while let Some(word) = words.next() {
                let mut value = || words.next().unwrap_or_else(|| panic!("{word}: {line}"));
                match word.as_str() {
                    "--account" => assert_eq!(value(), "NATSFN", "{line}"),
                    "--name" => user.name = value(),
                    "--allow-pub" => user.publish.push(value()),
                    "--allow-sub" => user.subscribe.push(value()),
                    "--response-ttl" => user.ttl = Some(value()),
                    _ => {
                        let count = word.strip_prefix("--allow-pub-response=");
                        let count = count.and_then(|n| n.parse().ok());
                        user.responses = Some(count.unwrap_or_else(|| panic!("{word}: {line}")));
                    }
                }
            }
            user
        })
        .collect()
}

/// Words split at spaces, a `'…'` one word without its quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            ' ' if !quoted => words.extend(word.take()),
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "an unclosed quote: {line}");
    words.extend(word);
    words
}

#[test]
fn the_nsc_commands_of_the_operator_readme_give_the_roles() {
    let secure = Path::new(env!("CARGO_MANIFEST_DIR")).join("nats-secure");
    let conf = std::fs::read_to_string(secure.join("permissions.conf")).expect("read conf");
    let readme = std::fs::read_to_string(secure.join("operator/README.md")).expect("read");
    let users = nsc_users(&readme);
    for name in ["node", "admin", "invoker"] {
        let role = role(&conf, &name.to_uppercase());
        let added: Vec<&NscUser> = users.iter().filter(|u| !u.edit && u.name == name).collect();
        assert_eq!(
            added.len(),
            1,
            "one `nsc add user --name {name}`: {users:?}"
        );
        let user = added[0];
        assert_eq!(user.publish, role.publish, "{name}'s --allow-pub");
        assert_eq!(user.subscribe, role.subscribe, "{name}'s --allow-sub");
        assert_eq!(
            user.responses,
            role.responses.map(|r| r.max),
            "{name}'s --allow-pub-response"
        );
        assert_eq!(
            user.ttl.as_deref().map(go_duration),
            role.responses.map(|r| r.expires),
            "{name}'s --response-ttl"
        );
    }
    let edits: Vec<&NscUser> = users.iter().filter(|u| u.edit).collect();
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert_eq!(edits[0].name, "node");
    assert_eq!(edits[0].publish, [USER_INFO]);
    assert!(edits[0].subscribe.is_empty() && edits[0].responses.is_none());
    assert_eq!(users.len(), 4, "{users:?}");
}
