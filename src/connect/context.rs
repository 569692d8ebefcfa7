//! The nats CLI's contexts: `~/.config/nats/context/NAME.json`, and the one
//! `nats context select` chose (`~/.config/nats/context.txt`) when none is named.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use super::Auth;

/// The fields natsfn uses; the nats CLI writes more (and empty strings for unset ones).
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct NatsContext {
    #[serde(deserialize_with = "non_empty")]
    pub url: Option<String>,
    #[serde(deserialize_with = "non_empty")]
    user: Option<String>,
    #[serde(deserialize_with = "non_empty")]
    password: Option<String>,
    #[serde(deserialize_with = "non_empty")]
    token: Option<String>,
    #[serde(deserialize_with = "non_empty_path")]
    creds: Option<PathBuf>,
    #[serde(deserialize_with = "non_empty_path")]
    nkey: Option<PathBuf>,
    #[serde(deserialize_with = "non_empty_path")]
    pub cert: Option<PathBuf>,
    #[serde(deserialize_with = "non_empty_path")]
    pub key: Option<PathBuf>,
    #[serde(deserialize_with = "non_empty_path")]
    pub ca: Option<PathBuf>,
    #[serde(deserialize_with = "non_empty")]
    pub inbox_prefix: Option<String>,
}

impl NatsContext {
    /// The context's way to authenticate, in the nats CLI's order.
    pub fn auth(&self) -> Option<Auth> {
        if let Some(creds) = &self.creds {
            return Some(Auth::Creds(creds.clone()));
        }
        if let Some(nkey) = &self.nkey {
            return Some(Auth::NKey(nkey.clone()));
        }
        if let Some(user) = &self.user {
            return Some(Auth::UserPassword(
                user.clone(),
                self.password.clone().unwrap_or_default(),
            ));
        }
        self.token.clone().map(Auth::Token)
    }
}

/// The named context (an empty name: none), else the selected one, if any.
pub(super) fn load(name: Option<&str>) -> anyhow::Result<Option<NatsContext>> {
    let Some(dir) = config_dir() else {
        return match name {
            Some(name) if !name.is_empty() => {
                bail!("cannot find context {name}: neither XDG_CONFIG_HOME nor HOME is set")
            }
            _ => Ok(None),
        };
    };
    let name = match name {
        Some("") => return Ok(None),
        Some(name) => name.to_owned(),
        None => match std::fs::read_to_string(dir.join("context.txt")) {
            Ok(selected) if !selected.trim().is_empty() => selected.trim().to_owned(),
            _ => return Ok(None),
        },
    };
    if name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("{name:?} is not a context name");
    }
    let file = dir.join("context").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read context {name} ({})", file.display()))?;
    let mut ctx: NatsContext = serde_json::from_str(&text)
        .with_context(|| format!("context {name} ({}) is not valid JSON", file.display()))?;
    for path in [
        &mut ctx.creds,
        &mut ctx.nkey,
        &mut ctx.cert,
        &mut ctx.key,
        &mut ctx.ca,
    ]
    .into_iter()
    .flatten()
    {
        *path = expand_home(path);
    }
    Ok(Some(ctx))
}

fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("nats"))
}

/// The nats CLI writes `~/…` paths into contexts.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn non_empty_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(non_empty(d)?.map(PathBuf::from))
}
