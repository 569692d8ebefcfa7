//! Connecting to a secured NATS the way the nats CLI does: each way to authenticate
//! (flags, NATS_* variables, the URL, a nats CLI context), TLS, and the refusals: a
//! wrong credential ends the command (a node too) within 5 s with the server's reason,
//! and no secret appears in what it prints.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::*;

/// What a refused command may take at most (the issue's promise).
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// Runs natsfn with exactly these arguments and extra variables (and, unlike the
/// harness's, with a selected context in effect); returns what it did and how long it
/// took.
async fn natsfn(args: &[&str], vars: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .args(args)
        .env_remove("NATS_CONTEXT")
        .envs(vars.iter().copied())
        .output()
        .await
        .expect("run natsfn");
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(what: &str, (out, _): &(Output, Duration)) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
}

/// The command failed soon, with `reason`, and without printing `secret`.
fn assert_refused(what: &str, (out, took): &(Output, Duration), reason: &str, secret: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what} should be refused");
    assert!(*took < REFUSED_WITHIN, "{what} took {took:?}");
    assert!(err.contains(reason), "{what}: expected {reason:?} in {err}");
    assert!(
        !secret.is_empty() && !err.contains(secret),
        "{what} printed the secret: {err}"
    );
}

const PASSWORD: &str = "s3cret-pw";

fn users_config() -> String {
    format!("authorization {{ users = [ {{user: ann, password: \"{PASSWORD}\"}} ] }}")
}

#[tokio::test]
async fn user_and_password_authenticate_as_flags_as_variables_and_in_the_url() {
    let server = NatsServer::start_alone(&users_config());
    let url = &server.url;
    let in_url = format!("nats://ann:{PASSWORD}@127.0.0.1:{}", server.port);
    let flags = ["--nats", url, "--user", "ann", "--password", PASSWORD, "ls"];
    assert_ok("--user/--password", &natsfn(&flags, &[]).await);
    let vars = [("NATS_USER", "ann"), ("NATS_PASSWORD", PASSWORD)];
    assert_ok(
        "NATS_USER/NATS_PASSWORD",
        &natsfn(&["--nats", url, "ls"], &vars).await,
    );
    assert_ok(
        "user:password@ in the URL",
        &natsfn(&["--nats", &in_url, "ls"], &[]).await,
    );

    let none = natsfn(&["--nats", url, "ls"], &[]).await;
    assert_refused("no credentials", &none, "authorization violation", PASSWORD);
    assert!(stderr(&none.0).contains("--creds"), "{}", stderr(&none.0));
    let wrong = format!("nats://ann:not-{PASSWORD}@127.0.0.1:{}", server.port);
    let refused = natsfn(&["--nats", &wrong, "ls"], &[]).await;
    assert_refused(
        "a wrong password",
        &refused,
        "authorization violation",
        "not-s3cret",
    );
    assert!(
        stderr(&refused.0).contains(url),
        "the URL is named, without its password"
    );
}

#[tokio::test]
async fn a_node_with_credentials_in_its_url_serves_and_one_with_wrong_ones_exits_within_5_s() {
    let server = NatsServer::start_alone(&users_config());
    let in_url = format!("nats://ann:{PASSWORD}@127.0.0.1:{}", server.port);
    let _node = Node::start_alone(&in_url, "node-a", &[]);
    let code = format!("{}/examples/hello-python", env!("CARGO_MANIFEST_DIR"));
    let bind = [
        "--nats",
        &in_url,
        "bind",
        "-f",
        "hello",
        "--runtime",
        "python3",
        "--handler",
        "app.handler",
        "--code",
        &code,
    ];
    assert_ok("bind", &natsfn(&bind, &[]).await);
    let invoke = [
        "--nats",
        &server.url,
        "invoke",
        "hello",
        r#"{"name": "secure"}"#,
    ];
    let creds = [("NATS_USER", "ann"), ("NATS_PASSWORD", PASSWORD)];
    let invoked = natsfn(&invoke, &creds).await;
    assert_ok("invoke", &invoked);
    assert!(String::from_utf8_lossy(&invoked.0.stdout).contains("secure"));

    let wrong = format!("nats://ann:wrong-{PASSWORD}@127.0.0.1:{}", server.port);
    let started = Instant::now();
    let mut refused = Node::start_alone(&wrong, "node-b", &[]);
    let status = tokio::time::timeout(REFUSED_WITHIN, refused.exited())
        .await
        .unwrap_or_else(|_| panic!("a refused node kept running: {}", refused.log()));
    assert!(!status.success());
    assert!(started.elapsed() < REFUSED_WITHIN);
    let log = refused.log();
    assert!(log.contains("authorization violation"), "{log}");
    assert!(
        !log.contains("wrong-s3cret"),
        "the node printed the password: {log}"
    );
}

#[tokio::test]
async fn a_token_authenticates_as_a_flag_a_variable_and_in_the_url() {
    let token = "t0ken-value";
    let server = NatsServer::start_alone(&format!("authorization {{ token: \"{token}\" }}"));
    let url = &server.url;
    assert_ok(
        "--token",
        &natsfn(&["--nats", url, "--token", token, "ls"], &[]).await,
    );
    assert_ok(
        "NATS_TOKEN",
        &natsfn(&["--nats", url, "ls"], &[("NATS_TOKEN", token)]).await,
    );
    let in_url = format!("nats://{token}@127.0.0.1:{}", server.port);
    assert_ok(
        "token@ in the URL",
        &natsfn(&["--nats", &in_url, "ls"], &[]).await,
    );
    let wrong = natsfn(&["--nats", url, "--token", "guessed-token", "ls"], &[]).await;
    assert_refused(
        "a wrong token",
        &wrong,
        "authorization violation",
        "guessed-token",
    );
}

#[tokio::test]
async fn an_nkey_seed_file_authenticates_and_another_seed_or_a_file_without_one_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let seed_file = write(dir.path(), "user.nk", &format!("{seed}\n"));
    let server = NatsServer::start_alone(&format!(
        "authorization {{ users = [ {{nkey: {}}} ] }}",
        user.public_key()
    ));
    let url = &server.url;
    assert_ok(
        "--nkey",
        &natsfn(&["--nats", url, "--nkey", &seed_file, "ls"], &[]).await,
    );
    let var = natsfn(&["--nats", url, "ls"], &[("NATS_NKEY", &seed_file)]).await;
    assert_ok("NATS_NKEY", &var);

    let other_seed = nkeys::KeyPair::new_user().seed().expect("seed");
    let other = write(dir.path(), "other.nk", &other_seed);
    let refused = natsfn(&["--nats", url, "--nkey", &other, "ls"], &[]).await;
    assert_refused(
        "another seed",
        &refused,
        "authorization violation",
        &other_seed,
    );
    let not_a_seed = write(dir.path(), "notes.txt", "hello");
    let refused = natsfn(&["--nats", url, "--nkey", &not_a_seed, "ls"], &[]).await;
    assert_refused(
        "a file without a seed",
        &refused,
        "does not hold an nkey seed",
        "hello",
    );
}

#[tokio::test]
async fn tls_with_a_client_certificate_connects_and_without_one_or_the_ca_it_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path());
    let server = NatsServer::start_alone(&format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}",
        pki.server_cert, pki.server_key, pki.ca
    ));
    let url = format!("tls://127.0.0.1:{}", server.port);
    let full = [
        "--nats",
        &url,
        "--tlsca",
        &pki.ca,
        "--tlscert",
        &pki.client_cert,
        "--tlskey",
        &pki.client_key,
        "ls",
    ];
    assert_ok("--tlsca/--tlscert/--tlskey", &natsfn(&full, &[]).await);
    let vars = [
        ("NATS_CA", pki.ca.as_str()),
        ("NATS_CERT", &pki.client_cert),
        ("NATS_KEY", &pki.client_key),
    ];
    assert_ok(
        "NATS_CA/NATS_CERT/NATS_KEY",
        &natsfn(&["--nats", &url, "ls"], &vars).await,
    );

    let no_cert = natsfn(&["--nats", &url, "--tlsca", &pki.ca, "ls"], &[]).await;
    assert_refused(
        "no client certificate",
        &no_cert,
        "CertificateRequired",
        "-----BEGIN",
    );
    let no_ca = [
        "--nats",
        &url,
        "--tlscert",
        &pki.client_cert,
        "--tlskey",
        &pki.client_key,
        "ls",
    ];
    let refused = natsfn(&no_ca, &[]).await;
    assert_refused(
        "a server certificate from an unknown CA",
        &refused,
        "invalid peer certificate",
        "-----BEGIN",
    );
    assert!(
        stderr(&refused.0).contains("--tlsca"),
        "{}",
        stderr(&refused.0)
    );
}

#[tokio::test]
async fn a_nats_cli_context_gives_the_url_the_credentials_and_the_inbox_prefix() {
    // ann may only read replies under `_ann.>`: the context's inbox prefix is needed.
    let server = NatsServer::start_alone(&format!(
        "authorization {{ users = [ {{user: ann, password: \"{PASSWORD}\", \
         permissions: {{publish: \">\", subscribe: \"_ann.>\"}} }} ] }}"
    ));
    let config = tempfile::tempdir().expect("temp dir");
    let contexts = config.path().join("nats/context");
    std::fs::create_dir_all(&contexts).expect("context dir");
    let context = serde_json::json!({
        "description": "written as `nats context save` writes it",
        "url": server.url, "user": "ann", "password": PASSWORD, "token": "", "creds": "",
        "nkey": "", "cert": "", "key": "", "ca": "", "inbox_prefix": "_ann",
    });
    std::fs::write(contexts.join("secure.json"), context.to_string()).expect("context");
    let home = dir_str(config.path());
    let xdg = [("XDG_CONFIG_HOME", home.as_str())];
    assert_ok(
        "--context",
        &natsfn(&["--context", "secure", "ls"], &xdg).await,
    );
    let named = [
        ("XDG_CONFIG_HOME", home.as_str()),
        ("NATS_CONTEXT", "secure"),
    ];
    assert_ok("NATS_CONTEXT", &natsfn(&["ls"], &named).await);
    std::fs::write(config.path().join("nats/context.txt"), "secure").expect("select");
    assert_ok("the selected context", &natsfn(&["ls"], &xdg).await);

    let flags_only = [
        "--context",
        "",
        "--nats",
        &server.url,
        "--user",
        "ann",
        "--password",
        PASSWORD,
        "ls",
    ];
    let refused = natsfn(&flags_only, &xdg).await;
    assert!(
        !refused.0.status.success(),
        "without the inbox prefix ann reads no reply"
    );
    let prefixed = [&flags_only[..8], &["--inbox-prefix", "_ann", "ls"]].concat();
    assert_ok("--inbox-prefix", &natsfn(&prefixed, &xdg).await);
    let missing = natsfn(&["--context", "nope", "ls"], &xdg).await;
    assert_refused("an unknown context", &missing, "nope.json", PASSWORD);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    dir_str(&path)
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("CA");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, &ca, &ca_key)
                .expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["client".into()]);
        Pki {
            ca: write(dir, "ca.pem", &ca.pem()),
            server_cert: write(dir, "server.pem", &server_cert),
            server_key: write(dir, "server-key.pem", &server_key),
            client_cert: write(dir, "client.pem", &client_cert),
            client_key: write(dir, "client-key.pem", &client_key),
        }
    }
}

#[tokio::test]
async fn a_creds_file_authenticates_in_operator_mode_and_a_user_of_another_account_is_refused() {
    let operator = Operator::new();
    let server = operator.start_server();
    let creds = dir_str(&operator.user_creds);
    let url = &server.url;
    assert_ok(
        "--creds",
        &natsfn(&["--nats", url, "--creds", &creds, "ls"], &[]).await,
    );
    assert_ok(
        "NATS_CREDS",
        &natsfn(&["--nats", url, "ls"], &[("NATS_CREDS", &creds)]).await,
    );

    // A well-formed user of an account this server does not know.
    let stranger = Operator::new();
    let foreign = dir_str(&stranger.user_creds);
    let refused = natsfn(&["--nats", url, "--creds", &foreign, "ls"], &[]).await;
    let seed = std::fs::read_to_string(&stranger.user_creds).expect("creds");
    let seed = seed
        .lines()
        .find(|l| l.starts_with("SU"))
        .expect("a user seed");
    assert_refused(
        "a user of another account",
        &refused,
        "authorization violation",
        seed,
    );
    let missing = natsfn(&["--nats", url, "--creds", "/nonexistent.creds", "ls"], &[]).await;
    assert_refused("a missing file", &missing, "/nonexistent.creds", seed);
}
