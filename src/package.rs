//! Packages on the CLI side: packing a directory as a deterministic tar.gz, pushing it to
//! `natsfn-packages`, and `natsfn package push|ls|rm`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use async_nats::jetstream::kv::Operation;
use async_nats::jetstream::object_store::{ObjectInfo, ObjectStore};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use natsfn_actors::buckets;
use natsfn_protocol::names::{BINDINGS_BUCKET, PACKAGES_BUCKET, VERSIONS_BUCKET};
use natsfn_protocol::version::parse_version_key;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every entry's mtime: 1980-01-01, the reproducible-builds convention (zip's epoch).
const MTIME: u64 = 315_532_800;
/// The file that says what not to pack (gitignore syntax; one per directory may be).
const IGNORE_FILE: &str = ".natsfnignore";

/// A packed directory.
pub struct Packed {
    pub archive: Vec<u8>,
    pub files: usize,
    /// Bytes of the files' contents.
    pub bytes: u64,
    /// `sha256:<hex>` of `archive`.
    pub digest: String,
}

/// Packs `dir` as a tar.gz whose bytes depend only on the tree: entries sorted by path,
/// mtime fixed, owner 0:0 without names, modes 0644 or 0755 (by the exec bit), 0755 for
/// directories. `.git/` and whatever `.natsfnignore` names are left out. A symlink is
/// kept when its target is relative and stays inside `dir` (nodes refuse any other).
pub fn pack(dir: &Path) -> anyhow::Result<Packed> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let mut entries: Vec<(PathBuf, ignore::DirEntry)> = Vec::new();
    let walk = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .parents(false)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|e| e.file_name() != ".git" && e.file_name() != IGNORE_FILE)
        .build();
    for entry in walk {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry.depth() == 0 {
            continue;
        }
        let relative = entry.path().strip_prefix(dir)?.to_path_buf();
        entries.push((relative, entry));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let (mut files, mut bytes) = (0, 0u64);
    for (relative, entry) in &entries {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, relative, std::io::empty())?;
        } else if kind.is_file() {
            let data =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            header.set_entry_type(tar::EntryType::Regular);
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, relative, data.as_slice())?;
            files += 1;
            bytes += data.len() as u64;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path)?;
            if !natsfn_actors::stays_inside(relative, &target) {
                bail!(
                    "{}: a symlink to {} points outside {}; nodes refuse such packages",
                    path.display(),
                    target.display(),
                    dir.display()
                );
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, relative, &target)?;
        } else {
            bail!(
                "{}: not a file, directory or symlink; a package cannot hold it (add it to {IGNORE_FILE})",
                path.display()
            );
        }
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    let archive = gz.finish()?;
    let digest = sha256_digest(&archive);
    Ok(Packed {
        archive,
        files,
        bytes,
        digest,
    })
}

/// `sha256:<hex>` of `bytes`, as bindings pin a package.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn open_store(client: &async_nats::Client) -> anyhow::Result<ObjectStore> {
    let js = async_nats::jetstream::new(client.clone());
    Ok(buckets::packages(&js).await?)
}

/// Packs `dir` and stores it as `package`; says what was packed. Returns the digest.
pub async fn push(store: &ObjectStore, dir: &Path, package: &str) -> anyhow::Result<String> {
    check_name(package)?;
    let packed = pack(dir)?;
    println!(
        "packed {}: {} files, {} bytes ({} compressed), {}",
        dir.display(),
        packed.files,
        packed.bytes,
        packed.archive.len(),
        packed.digest
    );
    let limit = natsfn_actors::MAX_PACKAGE_BYTES;
    if packed.archive.len() as u64 > limit {
        bail!(
            "the package is {} bytes compressed; nodes fetch at most {limit}",
            packed.archive.len()
        );
    }
    let info = store
        .put(package, &mut packed.archive.as_slice())
        .await
        .with_context(|| format!("cannot store package {package} in natsfn-packages"))?;
    let stored = info.digest.as_deref().and_then(nats_digest);
    if stored.as_deref() != Some(packed.digest.as_str()) {
        bail!(
            "natsfn-packages stored {package} with digest {:?}, not {}; push again",
            info.digest,
            packed.digest
        );
    }
    println!("pushed package {package} ({})", packed.digest);
    Ok(packed.digest)
}

/// The digest of the object `package` holds now, as a binding pins it.
pub async fn current_digest(store: &ObjectStore, package: &str) -> anyhow::Result<String> {
    let info = store.info(package).await.with_context(|| {
        format!(
            "no package {package} in natsfn-packages (natsfn package push DIR --package {package})"
        )
    })?;
    info.digest
        .as_deref()
        .and_then(nats_digest)
        .with_context(|| format!("package {package} has no SHA-256 digest in natsfn-packages"))
}

/// `SHA-256=<base64>` (the Object Store's form) as `sha256:<hex>`.
pub fn nats_digest(digest: &str) -> Option<String> {
    let b64 = digest.strip_prefix("SHA-256=")?;
    let bytes = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD,
    ]
    .iter()
    .find_map(|e| e.decode(b64).ok())?;
    (bytes.len() == 32).then(|| format!("sha256:{}", hex(&bytes)))
}

fn check_name(package: &str) -> anyhow::Result<()> {
    if !natsfn_protocol::names::is_valid_function_name(package) {
        bail!("package name {package:?}: expected 1 to 64 letters, digits, '_' or '-'");
    }
    Ok(())
}

pub async fn push_cmd(
    nats: &crate::connect::Nats,
    dir: &Path,
    package: &str,
) -> anyhow::Result<ExitCode> {
    let store = open_store(&crate::connect::client(nats).await?).await?;
    push(&store, dir, package).await?;
    Ok(ExitCode::SUCCESS)
}

/// For each package, the functions using it: `fn (code)`, `fn (layer)`.
async fn users(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Some(bindings) = crate::patience::bucket(js, BINDINGS_BUCKET).await? else {
        return Ok(users);
    };
    let mut names: Vec<String> = bindings.keys().await?.try_collect().await?;
    names.sort();
    for name in names {
        let Some(entry) = bindings.entry(&name).await? else {
            continue;
        };
        if entry.operation != Operation::Put {
            continue;
        }
        let Ok(spec) = serde_json::from_slice::<Value>(&entry.value) else {
            continue;
        };
        if let Some(p) = spec["code"]["package"].as_str() {
            users
                .entry(p.to_owned())
                .or_default()
                .push(format!("{name} (code)"));
        }
        for layer in spec["layers"].as_array().into_iter().flatten() {
            if let Some(p) = layer["package"].as_str() {
                users
                    .entry(p.to_owned())
                    .or_default()
                    .push(format!("{name} (layer)"));
            }
        }
    }
    Ok(users)
}

/// For each package, the published versions using it: `fn version N (code)`. A
/// version is immutable, so these hold whatever `--force` says.
async fn version_users(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Some(versions) = crate::patience::bucket(js, VERSIONS_BUCKET).await? else {
        return Ok(users);
    };
    let mut keys: Vec<(String, u64)> = versions
        .keys()
        .await?
        .try_collect::<Vec<String>>()
        .await?
        .iter()
        .filter_map(|k| parse_version_key(k).map(|(f, n)| (f.to_owned(), n)))
        .collect();
    keys.sort();
    for (function, n) in keys {
        let Some(entry) = versions
            .entry(natsfn_protocol::version::version_key(&function, n))
            .await?
        else {
            continue;
        };
        if entry.operation != Operation::Put {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Value>(&entry.value) else {
            continue;
        };
        let binding = &record["binding"];
        if let Some(p) = binding["code"]["package"].as_str() {
            users
                .entry(p.to_owned())
                .or_default()
                .push(format!("{function} version {n} (code)"));
        }
        for layer in binding["layers"].as_array().into_iter().flatten() {
            if let Some(p) = layer["package"].as_str() {
                users
                    .entry(p.to_owned())
                    .or_default()
                    .push(format!("{function} version {n} (layer)"));
            }
        }
    }
    Ok(users)
}

/// Bindings' and versions' uses of each package together, for `package ls`.
async fn all_users(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut all = users(js).await?;
    for (package, used) in version_users(js).await? {
        all.entry(package).or_default().extend(used);
    }
    Ok(all)
}

pub async fn ls(nats: &crate::connect::Nats) -> anyhow::Result<ExitCode> {
    let client = crate::connect::client(nats).await?;
    let (objects, users) = crate::patience::read(|| listing(client.clone())).await?;
    println!("{:<24} {:>12}  {:<71}  USED BY", "NAME", "SIZE", "DIGEST");
    for info in objects {
        let digest = info
            .digest
            .as_deref()
            .and_then(nats_digest)
            .unwrap_or_else(|| "-".into());
        let used = users
            .get(&info.name)
            .map(|u| u.join(", "))
            .unwrap_or_else(|| "-".into());
        println!("{:<24} {:>12}  {digest:<71}  {used}", info.name, info.size);
    }
    Ok(ExitCode::SUCCESS)
}

/// The packages by name, and who uses each, read afresh.
async fn listing(
    client: async_nats::Client,
) -> anyhow::Result<(Vec<ObjectInfo>, BTreeMap<String, Vec<String>>)> {
    let js = crate::patience::jetstream(client);
    let mut objects = Vec::new();
    let opened = js.get_object_store(PACKAGES_BUCKET).await;
    let Some(store) = crate::patience::unless_missing(opened)? else {
        return Ok((objects, all_users(&js).await?));
    };
    let mut list = store.list().await?;
    while let Some(info) = list.next().await {
        let info = info?;
        if !info.deleted {
            objects.push(info);
        }
    }
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((objects, all_users(&js).await?))
}

pub async fn rm(
    nats: &crate::connect::Nats,
    package: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::client(nats).await?;
    let store = open_store(&client).await?;
    if store.info(package).await.is_err() {
        bail!("no package {package} in natsfn-packages");
    }
    let js = async_nats::jetstream::new(client);
    // A version cannot be rebound: its code must stay as long as it does.
    if let Some(used) = version_users(&js).await?.get(package) {
        bail!(
            "package {package} is used by {}; remove those versions first (natsfn version rm)",
            used.join(", ")
        );
    }
    if let Some(used) = users(&js).await?.get(package) {
        if !force {
            bail!(
                "package {package} is used by {}; rebind or remove those first, or --force",
                used.join(", ")
            );
        }
        eprintln!(
            "removing {package} although {} use it (--force): nodes that have not fetched it cannot start them",
            used.join(", ")
        );
    }
    store
        .delete(package)
        .await
        .with_context(|| format!("cannot remove package {package}"))?;
    println!("removed package {package}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_same_digest_whatever_the_mtimes_and_owners() {
        use std::os::unix::fs::PermissionsExt;
        let make = |dir: &Path| {
            std::fs::create_dir_all(dir.join("lib/sub")).unwrap();
            std::fs::create_dir_all(dir.join(".git")).unwrap();
            std::fs::write(dir.join(".git/HEAD"), "ref").unwrap();
            std::fs::write(dir.join("app.py"), "def handler(e, c): return 1\n").unwrap();
            std::fs::write(dir.join("lib/sub/x.txt"), "x").unwrap();
            std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
            std::fs::write(dir.join("junk.log"), "noise").unwrap();
            std::fs::write(dir.join(IGNORE_FILE), "*.log\n").unwrap();
            std::os::unix::fs::symlink("lib/sub/x.txt", dir.join("link")).unwrap();
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        make(a.path());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make(b.path());
        std::fs::set_permissions(
            a.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(
            b.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(
            b.path().join("app.py"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let (pa, pb) = (pack(a.path()).unwrap(), pack(b.path()).unwrap());
        assert_eq!(pa.digest, pb.digest);
        assert_eq!(pa.archive, pb.archive);
        assert_eq!(pa.files, 3);
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(pa.archive.as_slice()));
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, MTIME)
            );
            names.push((e.path().unwrap().display().to_string(), h.mode().unwrap()));
        }
        assert_eq!(
            names,
            [
                ("app.py".to_string(), 0o644),
                ("lib".into(), 0o755),
                ("lib/sub".into(), 0o755),
                ("lib/sub/x.txt".into(), 0o644),
                ("link".into(), 0o777),
                ("run.sh".into(), 0o755),
            ]
        );
        std::fs::write(b.path().join("app.py"), "changed").unwrap();
        assert_ne!(pack(b.path()).unwrap().digest, pa.digest);
    }

    #[test]
    fn escaping_symlinks_are_not_packed() {
        let a = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", a.path().join("p")).unwrap();
        let err = pack(a.path()).err().unwrap().to_string();
        assert!(err.contains("points outside"), "{err}");
    }
}
