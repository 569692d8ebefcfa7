//! A nats-server in operator mode: an operator, a system account and one account `APP`
//! (JetStream on) with a signing key, all made here as nkeys and JWTs, preloaded with
//! `resolver: MEMORY`. Nodes and test clients connect as users of `APP` signed by its
//! signing key, the one a node is given as `--signing-key` to mint handlers' users.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::{Env, NatsServer, Node};

/// The keys and files of an operator-mode server; `config` is its configuration.
pub struct Operator {
    dir: TempDir,
    account: KeyPair,
    signing: KeyPair,
    /// `--signing-key FILE`: the seed of `APP`'s signing key, alone.
    pub signing_key: PathBuf,
    /// A `.creds` of a user of `APP` who may do anything (a node, a test client).
    pub user_creds: PathBuf,
    pub config: String,
}

impl Operator {
    pub fn new() -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let operator_jwt = encode_jwt(
            &operator,
            &operator.public_key(),
            "natsfn-test",
            json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
        );
        let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
            "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
        let system_jwt = encode_jwt(
            &operator,
            &system.public_key(),
            "SYS",
            json!({"type": "account", "version": 2, "limits": unlimited}),
        );
        let mut limits = unlimited;
        for storage in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[storage] = json!(-1);
        }
        let app_jwt = encode_jwt(
            &operator,
            &account.public_key(),
            "APP",
            json!({"type": "account", "version": 2, "limits": limits,
                   "signing_keys": [signing.public_key()]}),
        );
        let config = format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt}\n  {app}: {app_jwt}\n}}\n",
            sys = system.public_key(),
            app = account.public_key(),
        );
        let signing_key = dir.path().join("signing.nk");
        std::fs::write(&signing_key, signing.seed().expect("seed")).expect("write seed");
        let operator = Operator {
            user_creds: dir.path().join("user.creds"),
            dir,
            account,
            signing,
            signing_key,
            config,
        };
        let user = operator.user("anything", |token| token);
        std::fs::write(&operator.user_creds, user).expect("write creds");
        operator
    }

    /// The `.creds` text of a new user of `APP`, its token shaped by `shape`.
    pub fn user(
        &self,
        name: &str,
        shape: impl FnOnce(nats_jwt::Token<nats_jwt::User>) -> nats_jwt::Token<nats_jwt::User>,
    ) -> String {
        self.user_extended(name, shape, |_| {})
    }

    /// `user`, its `nats` claims then changed by `extend` and signed anew: for what
    /// nats-jwt 0.3's builder cannot say (a user's `resp`, nats-server's
    /// `allow_responses`).
    pub fn user_extended(
        &self,
        name: &str,
        shape: impl FnOnce(nats_jwt::Token<nats_jwt::User>) -> nats_jwt::Token<nats_jwt::User>,
        extend: impl FnOnce(&mut Value),
    ) -> String {
        let user = KeyPair::new_user();
        let token =
            nats_jwt::Token::new_user(self.account.public_key(), user.public_key()).name(name);
        let made = shape(token).sign(&self.signing);
        let claims = made.split('.').nth(1).expect("a JWT has claims");
        let claims = URL_SAFE_NO_PAD.decode(claims).expect("claims in base64url");
        let mut claims: Value = serde_json::from_slice(&claims).expect("claims in JSON");
        extend(&mut claims["nats"]);
        let jwt = sign_claims(&self.signing, &claims);
        let seed = user.seed().expect("seed");
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    pub fn start_server(&self) -> NatsServer {
        NatsServer::start_alone(&self.config)
    }

    /// A client connected as the user who may do anything.
    pub async fn client(&self, server: &NatsServer) -> async_nats::Client {
        async_nats::ConnectOptions::with_credentials_file(&self.user_creds)
            .await
            .expect("read creds")
            .connect(&server.url)
            .await
            .expect("connect to the operator-mode nats-server")
    }

    /// A node with `--signing-key`, connected with the creds given in its
    /// environment as `NATS_CREDS` (which its workers must not see).
    pub fn node(&self, server: &NatsServer, id: &str) -> Node {
        Node::start_env(
            &server.url,
            id,
            &["--signing-key", &super::dir_str(&self.signing_key)],
            &[("NATS_CREDS", &super::dir_str(&self.user_creds))],
        )
    }

    /// The usual test setting, on this server and node.
    pub async fn env(&self, server: NatsServer, node: Node) -> Env {
        let client = self.client(&server).await;
        Env::with_client(server, node, client).await
    }
}

/// A JWT as nats-server reads them: `header.claims.signature`, base64url, signed by
/// `signer` with Ed25519 (nats-jwt makes users and accounts, not operators or
/// accounts with JetStream).
fn encode_jwt(signer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": iat,
        "iss": signer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    sign_claims(signer, &claims)
}

/// A JWT of `claims`, signed by `signer` (its `iss`) with Ed25519.
fn sign_claims(signer: &KeyPair, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let half = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = signer.sign(half.as_bytes()).expect("sign");
    format!("{half}.{}", URL_SAFE_NO_PAD.encode(signature))
}
