//! Scoped NATS credentials for handlers. A node started with `--signing-key` (a signing
//! key of its own account) mints, for each worker of a binding with `nats`, a user of
//! that account that may publish and subscribe to the binding's subjects and its own
//! inbox prefix, nothing else. This file is the node's half: the key, the account, and
//! the minting; `worker/credentials.rs` keeps one worker's `.creds` file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use natsfn_protocol::NatsAccess;
use nkeys::{KeyPair, KeyPairType};

/// How long a minted user JWT is valid. A signing key cannot revoke a user, so what a
/// leaked file grants ends with it.
pub(crate) const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(3600);

/// Asks the server who the node's connection is (answered by nats-server 2.10 and newer
/// to any user allowed to publish it): its `account` is the one the minted users are in.
const USER_INFO: &str = "$SYS.REQ.USER.INFO";

/// An account signing key (`--signing-key`), read from its seed.
pub struct SigningKey(KeyPair);

impl SigningKey {
    /// `seed`: an account nkey seed (`SA...`), as the key file holds it.
    pub fn from_seed(seed: &str) -> Result<SigningKey, CredentialsError> {
        let key = KeyPair::from_seed(seed.trim()).map_err(|_| CredentialsError::NotASeed)?;
        match key.key_pair_type() {
            KeyPairType::Account => Ok(SigningKey(key)),
            other => Err(CredentialsError::NotAnAccountKey(format!("{other:?}"))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("not an nkey seed (the file must hold the seed alone, e.g. SAAB...)")]
    NotASeed,
    #[error("a {0} key, not an account signing key (an account seed starts with SA)")]
    NotAnAccountKey(String),
    #[error("cannot ask the server for this node's account ({USER_INFO}): {0}; --signing-key needs nats-server 2.10 or newer in operator mode, and the node's user may publish {USER_INFO}")]
    UserInfo(String),
    #[error("the server says this node's account is {0:?}, not an account public key: --signing-key needs a server in operator mode")]
    NotOperatorMode(String),
}

/// Mints handler credentials: immutable, shared by the node's workers.
pub(crate) struct CredentialIssuer {
    signing_key: KeyPair,
    /// The public key of the node's account (the minted users' `issuer_account`).
    account: String,
    /// `NATS_URL` of the workers: the node's servers (given without credentials).
    pub(crate) nats_url: String,
    /// Holds one private directory per worker with credentials.
    pub(crate) dir: PathBuf,
    /// Also named in each user, so the server's connection list says whose it is.
    node_id: Arc<str>,
    pub(crate) lifetime: Duration,
}

/// What one binding's workers are given: the issuer and the binding's `nats`.
pub(crate) struct HandlerGrant {
    pub(crate) issuer: Arc<CredentialIssuer>,
    pub(crate) access: NatsAccess,
}

impl std::fmt::Debug for HandlerGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerGrant")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl CredentialIssuer {
    /// Finds the node's account by asking the server; `nats_url` is the node's
    /// `--nats` (the workers get it without user names, passwords or tokens).
    pub(crate) async fn discover(
        client: &async_nats::Client,
        key: SigningKey,
        nats_url: &str,
        dir: PathBuf,
        node_id: Arc<str>,
    ) -> Result<CredentialIssuer, CredentialsError> {
        let reply = client
            .request(USER_INFO, bytes::Bytes::new())
            .await
            .map_err(|e| CredentialsError::UserInfo(e.to_string()))?;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| CredentialsError::UserInfo(format!("an answer that is not JSON: {e}")))?;
        if let Some(error) = info.get("error") {
            return Err(CredentialsError::UserInfo(error.to_string()));
        }
        let account = info["data"]["account"].as_str().unwrap_or_default();
        if KeyPair::from_public_key(account)
            .map(|k| k.key_pair_type() != KeyPairType::Account)
            .unwrap_or(true)
        {
            return Err(CredentialsError::NotOperatorMode(account.to_owned()));
        }
        Ok(CredentialIssuer {
            signing_key: key.0,
            account: account.to_owned(),
            nats_url: nats_url.to_owned(),
            dir,
            node_id,
            lifetime: CREDENTIAL_LIFETIME,
        })
    }

    /// The `.creds` file text for `user`: a JWT valid for `lifetime` from now that
    /// lets it publish `access.publish`, subscribe `access.subscribe` and
    /// `<inbox_prefix>.>`, nothing else.
    pub(crate) fn mint(
        &self,
        user: &KeyPair,
        access: &NatsAccess,
        inbox_prefix: &str,
        function: &str,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let expires = (now + self.lifetime).as_secs() as i64;
        let mut token = nats_jwt::Token::new_user(self.account.as_str(), user.public_key())
            .name(format!("natsfn {function} on {}", self.node_id))
            .expires(expires)
            .allow_subscribe(format!("{inbox_prefix}.>"));
        for subject in &access.subscribe {
            token = token.allow_subscribe(subject);
        }
        for subject in &access.publish {
            token = token.allow_publish(subject);
        }
        if access.publish.is_empty() {
            // No allow list at all would mean everything.
            token = token.deny_publish(">");
        }
        let jwt = token.sign(&self.signing_key);
        // A key pair made by `new_user` always has its seed.
        let seed = user.seed().unwrap_or_default();
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    #[cfg(test)]
    pub(crate) fn for_tests(dir: PathBuf, lifetime: Duration) -> CredentialIssuer {
        CredentialIssuer {
            signing_key: KeyPair::new_account(),
            account: KeyPair::new_account().public_key(),
            nats_url: "nats://127.0.0.1:4222".into(),
            dir,
            node_id: "test-node".into(),
            lifetime,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use base64::Engine;
    use natsfn_protocol::NatsAccess;
    use nkeys::KeyPair;

    use super::{CredentialIssuer, SigningKey};

    fn claims(creds: &str) -> serde_json::Value {
        let jwt = creds.lines().nth(1).expect("the JWT line");
        let payload = jwt.split('.').nth(1).expect("a JWT payload");
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&json).expect("claims JSON")
    }

    fn access(publish: &[&str], subscribe: &[&str]) -> NatsAccess {
        NatsAccess {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_user_may_use_its_subjects_and_inbox_and_expires_within_the_lifetime() {
        let issuer = CredentialIssuer::for_tests("/unused".into(), super::CREDENTIAL_LIFETIME);
        let user = KeyPair::new_user();
        let creds = issuer.mint(
            &user,
            &access(&["orders.>"], &["prices.*"]),
            "_INBOX_x",
            "f",
        );
        let c = claims(&creds);
        assert_eq!(c["sub"], user.public_key());
        assert_eq!(c["iss"], issuer.signing_key.public_key());
        assert_eq!(c["nats"]["issuer_account"], issuer.account);
        assert_eq!(c["nats"]["type"], "user");
        assert_eq!(c["nats"]["pub"]["allow"], serde_json::json!(["orders.>"]));
        assert_eq!(
            c["nats"]["sub"]["allow"],
            serde_json::json!(["_INBOX_x.>", "prices.*"])
        );
        let lifetime = c["exp"].as_i64().unwrap_or(0) - c["iat"].as_i64().unwrap_or(0);
        assert!((3599..=3601).contains(&lifetime), "{c}");
        assert!(creds.contains(&user.seed().expect("seed")));
    }

    #[test]
    fn no_publish_subjects_means_publishing_nothing() {
        let issuer = CredentialIssuer::for_tests("/unused".into(), super::CREDENTIAL_LIFETIME);
        let c = claims(&issuer.mint(&KeyPair::new_user(), &access(&[], &["a"]), "_I", "f"));
        assert_eq!(c["nats"]["pub"], serde_json::json!({"deny": [">"]}));
    }

    #[test]
    fn only_an_account_seed_is_a_signing_key() {
        let account = KeyPair::new_account().seed().expect("seed");
        assert!(SigningKey::from_seed(&format!("{account}\n")).is_ok());
        let user = KeyPair::new_user().seed().expect("seed");
        let err = SigningKey::from_seed(&user).err().expect("a user key");
        assert!(
            err.to_string().contains("not an account signing key"),
            "{err}"
        );
        let err = SigningKey::from_seed("hello").err().expect("not a seed");
        assert!(err.to_string().starts_with("not an nkey seed"), "{err}");
    }

    /// The figure the docs quote: `cargo test --release -p natsfn-actors minting_ -- --nocapture`.
    #[test]
    fn minting_a_handler_credential_takes_under_two_milliseconds() {
        let issuer = CredentialIssuer::for_tests("/unused".into(), super::CREDENTIAL_LIFETIME);
        let access = access(&["orders.>", "audit.orders"], &["prices.>"]);
        let mut took: Vec<Duration> = (0..1_000)
            .map(|_| {
                let started = Instant::now();
                let user = KeyPair::new_user();
                let creds = issuer.mint(&user, &access, "_INBOX_natsfn.f.0123", "f");
                std::hint::black_box(creds);
                started.elapsed()
            })
            .collect();
        took.sort_unstable();
        let median = took[took.len() / 2];
        println!(
            "minting a handler credential (user key pair, signed JWT, .creds text): median {median:?}, p99 {:?} over 1000",
            took[took.len() * 99 / 100]
        );
        // Generous for a test build on a busy machine (Ed25519 is optimised even there,
        // see Cargo.toml); a release build takes tens of µs.
        assert!(median < Duration::from_millis(2), "median {median:?}");
    }
}
