//! `natsfn dev --secure`: the local server requires credentials. Each role of
//! nats-secure/permissions.conf gets an nkey of its own, made once and kept in the data
//! dir, so that the commands printed at start keep working across restarts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::connect::{Auth, Nats};

/// The node role's own inbox prefix (nats-secure/permissions.conf).
const NODE_INBOX: &str = "_INBOX_node";

const PERMISSIONS: &str = include_str!("../../nats-secure/permissions.conf");
/// Each role and the variable of permissions.conf that holds its permissions.
const ROLES: [(&str, &str); 3] = [("node", "NODE"), ("admin", "ADMIN"), ("invoker", "INVOKER")];

pub(super) struct Secure {
    dir: PathBuf,
    /// The authorization block that lets each role in with its permissions.
    authorization: String,
}

impl Secure {
    /// The roles' seeds in DATA/secure (made if missing, readable by this user only)
    /// and the configuration that lets each in with its permissions.
    pub fn prepare(data_dir: &Path) -> anyhow::Result<Secure> {
        let dir = data_dir.join("secure");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut authorization = String::from("authorization {\n  users = [\n");
        for (role, variable) in ROLES {
            let key = role_key(&dir.join(format!("{role}.nk")))?;
            let _ = writeln!(
                authorization,
                "    {{nkey: {}, permissions: ${variable}}}",
                key.public_key()
            );
        }
        authorization.push_str("  ]\n}\n");
        write(&dir.join("permissions.conf"), PERMISSIONS)?;
        Ok(Secure { dir, authorization })
    }

    /// The lines a server configuration in `conf_dir` needs to require the roles'
    /// nkeys; permissions.conf is put beside it (nats-server includes relative paths only).
    pub fn config_in(&self, conf_dir: &Path) -> anyhow::Result<String> {
        write(&conf_dir.join("permissions.conf"), PERMISSIONS)?;
        Ok(format!(
            "\ninclude \"permissions.conf\"\n{}",
            self.authorization
        ))
    }

    /// How the node of `natsfn dev` connects: the node role reads replies under its
    /// own inbox prefix only.
    pub fn node_nats(&self, urls: &str) -> anyhow::Result<Nats> {
        Ok(Nats::local(urls, Auth::NKey(self.seed("node")))?.inbox_prefix(NODE_INBOX))
    }

    /// The same, as a `natsfn node` command line's flags.
    pub fn node_args(&self) -> [std::ffi::OsString; 4] {
        [
            "--nkey".into(),
            self.seed("node").into(),
            "--inbox-prefix".into(),
            NODE_INBOX.into(),
        ]
    }

    pub fn seed(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.nk"))
    }

    /// What a person needs to connect, one line per role.
    pub fn how_to_connect(&self, url: &str) -> String {
        let admin = self.seed("admin");
        let invoker = self.seed("invoker");
        format!(
            "natsfn dev: the server requires credentials (--secure); one nkey per role, in {dir}:\n\
             \x20 admin (bind, deploy, invoke, logs): export NATS_URL={url} NATS_NKEY={admin}\n\
             \x20 invoker (invoke only):             natsfn --nkey {invoker} invoke hello '{{}}'\n\
             \x20 the nats CLI:                      nats context save natsfn-dev-admin --server {url} --nkey {admin}\n\
             \x20 (their permissions: {dir}/permissions.conf, as in nats-secure/)",
            dir = self.dir.display(),
            admin = admin.display(),
            invoker = invoker.display(),
        )
    }
}

/// The role's key pair from its seed file, made (mode 0600) when missing.
fn role_key(file: &Path) -> anyhow::Result<nkeys::KeyPair> {
    if file.exists() {
        let seed = crate::connect::read_seed(file)?;
        return nkeys::KeyPair::from_seed(&seed)
            .with_context(|| format!("{} does not hold an nkey seed", file.display()));
    }
    let key = nkeys::KeyPair::new_user();
    let seed = key.seed().context("cannot make an nkey seed")?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    writeln!(out, "{seed}").with_context(|| format!("cannot write {}", file.display()))?;
    Ok(key)
}

fn write(file: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
}
