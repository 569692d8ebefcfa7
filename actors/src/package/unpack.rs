//! Unpacking a package's tar.gz into an empty directory, refusing whatever could write
//! outside it or fill the disk. The `tar` and `flate2` crates read the format; the
//! checks are ours, made on every entry before anything of it is written.

use std::cell::Cell;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::read::GzDecoder;
use tar::EntryType;

/// Limits of one package (also in the README).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bytes of the unpacked tar stream (file data, headers and padding together).
    pub(crate) unpacked_bytes: u64,
    /// Entries (files, directories, links).
    pub(crate) entries: u64,
    /// Unpacked bytes per compressed byte, once past `ratio_floor` unpacked bytes.
    pub(crate) ratio: u64,
    pub(crate) ratio_floor: u64,
}

pub(crate) const LIMITS: Limits = Limits {
    unpacked_bytes: 1024 * 1024 * 1024,
    entries: 100_000,
    ratio: 200,
    ratio_floor: 16 * 1024 * 1024,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum UnpackError {
    #[error("{path:?}: {why}")]
    Unsafe { path: String, why: &'static str },
    #[error("more than {0} entries")]
    TooManyEntries(u64),
    #[error("unpacks to more than {limit} bytes (a tar bomb?)")]
    TooLarge { limit: u64 },
    #[error("unpacks to more than {ratio} times its {compressed} compressed bytes (a tar bomb?)")]
    Ratio { ratio: u64, compressed: u64 },
    #[error("not a readable tar.gz: {0}")]
    Format(io::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// What was unpacked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Unpacked {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// Unpacks `archive` (gzip-compressed tar) into `dest`, which must be an empty
/// directory of the caller's. On an error `dest` holds part of the archive and is the
/// caller's to remove; nothing is ever written outside it.
pub(crate) fn unpack(archive: &[u8], dest: &Path, limits: Limits) -> Result<Unpacked, UnpackError> {
    let tripped = Rc::new(Cell::new(None));
    let counted = Bounded {
        inner: GzDecoder::new(archive),
        tripped: tripped.clone(),
        read: 0,
        limit: limits.unpacked_bytes.min(
            (archive.len() as u64)
                .saturating_mul(limits.ratio)
                .max(limits.ratio_floor),
        ),
        limits,
        compressed: archive.len() as u64,
    };
    // The tar crate wraps a reader's error in its own: the bound says itself.
    let read_error = |e: io::Error| match tripped.get() {
        Some(Tripped::Size(limit)) => UnpackError::TooLarge { limit },
        Some(Tripped::Ratio(ratio, compressed)) => UnpackError::Ratio { ratio, compressed },
        None => UnpackError::Format(e),
    };
    let mut tar = tar::Archive::new(counted);
    let mut done = Unpacked::default();
    let mut symlinks = Vec::new();
    for entry in tar.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        done.entries += 1;
        if done.entries > limits.entries {
            return Err(UnpackError::TooManyEntries(limits.entries));
        }
        let raw_path = entry.path().map_err(read_error)?.into_owned();
        let shown = raw_path.display().to_string();
        let unsafe_entry = |why| UnpackError::Unsafe {
            path: shown.clone(),
            why,
        };
        let Some(relative) = inside(&raw_path) else {
            return Err(unsafe_entry(
                "an absolute path or one with '..' would write outside the package",
            ));
        };
        if relative.as_os_str().is_empty() {
            continue; // "./" itself
        }
        check_no_symlink_on_the_way(dest, &relative)
            .map_err(|_| unsafe_entry("a path through a symlink"))?;
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory => {
                make_dir(&target)?;
                set_mode(&target, 0o755)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    make_dir(parent)?;
                }
                replace_file(&target)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|source| write_error(&target, source))?;
                done.bytes += io::copy(&mut entry, &mut file).map_err(read_error)?;
                let executable = entry.header().mode().map_err(read_error)? & 0o111 != 0;
                set_mode(&target, if executable { 0o755 } else { 0o644 })?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(read_error)?
                    .ok_or_else(|| unsafe_entry("a symlink without a target"))?
                    .into_owned();
                if link.is_absolute() || !stays_inside(&relative, &link) {
                    return Err(unsafe_entry("a symlink pointing outside the package"));
                }
                if let Some(parent) = target.parent() {
                    make_dir(parent)?;
                }
                replace_file(&target)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|source| write_error(&target, source))?;
                symlinks.push((shown, target));
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(read_error)?
                    .ok_or_else(|| unsafe_entry("a hardlink without a target"))?
                    .into_owned();
                let source = inside(&link)
                    .filter(|l| !l.as_os_str().is_empty())
                    .ok_or_else(|| unsafe_entry("a hardlink pointing outside the package"))?;
                check_no_symlink_on_the_way(dest, &source)
                    .map_err(|_| unsafe_entry("a hardlink through a symlink"))?;
                let source = dest.join(source);
                // Only to a file this archive already wrote.
                if !fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_file()) {
                    return Err(unsafe_entry(
                        "a hardlink to something that is not a file of this package",
                    ));
                }
                if let Some(parent) = target.parent() {
                    make_dir(parent)?;
                }
                replace_file(&target)?;
                fs::hard_link(&source, &target).map_err(|e| write_error(&target, e))?;
            }
            // Metadata the tar crate has already applied to the next entry.
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(unsafe_entry("a device file or FIFO"))
            }
            _ => return Err(unsafe_entry("an entry type a package may not hold")),
        }
    }
    // A link may point through another: only what the filesystem resolves to counts.
    let root = fs::canonicalize(dest).map_err(|e| write_error(dest, e))?;
    for (shown, link) in symlinks {
        let resolved = fs::canonicalize(&link);
        if !resolved.is_ok_and(|r| r.starts_with(&root)) {
            return Err(UnpackError::Unsafe {
                path: shown,
                why: "a symlink that does not resolve to a path inside the package",
            });
        }
    }
    Ok(done)
}

/// `path` as a plain relative path (no root, no `..`; `.` dropped), or None.
fn inside(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a symlink at `at` (relative to the package root) with relative target
/// `link` names a path inside the package, component by component. The CLI packs by
/// the same rule.
pub fn stays_inside(at: &Path, link: &Path) -> bool {
    let mut depth = at.components().count().saturating_sub(1) as i64;
    for component in link.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Refuses a path whose existing parents include a symlink: writing there would
/// follow it.
fn check_no_symlink_on_the_way(dest: &Path, relative: &Path) -> Result<(), ()> {
    let mut at = dest.to_path_buf();
    let parents = relative.components().count().saturating_sub(1);
    for component in relative.components().take(parents) {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(()),
            Ok(_) => {}
            Err(_) => return Ok(()), // not there yet: created as a directory
        }
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<(), UnpackError> {
    fs::create_dir_all(path).map_err(|e| write_error(path, e))
}

/// A later entry of the same name wins, as with `tar -x`; a directory stays.
fn replace_file(path: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(write_error(
            path,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory of that name exists",
            ),
        )),
        Ok(_) => fs::remove_file(path).map_err(|e| write_error(path, e)),
        Err(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), UnpackError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| write_error(path, e))
}

fn write_error(path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy)]
enum Tripped {
    Size(u64),
    Ratio(u64, u64),
}

/// The decompressed stream, stopped as soon as it passes the limit: a bomb is never
/// inflated beyond it.
struct Bounded<R> {
    inner: R,
    tripped: Rc<Cell<Option<Tripped>>>,
    read: u64,
    limit: u64,
    limits: Limits,
    compressed: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            let tripped = if self.limit < self.limits.unpacked_bytes {
                Tripped::Ratio(self.limits.ratio, self.compressed)
            } else {
                Tripped::Size(self.limits.unpacked_bytes)
            };
            self.tripped.set(Some(tripped));
            return Err(io::Error::other("package size limit"));
        }
        Ok(n)
    }
}

#[cfg(test)]
#[path = "unpack/hostile.rs"]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(
        tar: &mut tar::Builder<Vec<u8>>,
        kind: EntryType,
        name: &str,
        link: &str,
        data: &[u8],
        mode: u32,
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        let gnu = header.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        tar.append(&header, data).expect("append");
    }

    fn gz(tar: tar::Builder<Vec<u8>>) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar.into_inner().expect("tar")).expect("gzip");
        gz.finish().expect("gzip")
    }

    #[test]
    fn a_good_package_unpacks_with_normalised_modes_and_inside_links() {
        let mut tar = tar::Builder::new(Vec::new());
        entry(&mut tar, EntryType::Directory, "./lib/", "", b"", 0o700);
        entry(&mut tar, EntryType::Regular, "lib/a.py", "", b"old", 0o600);
        entry(&mut tar, EntryType::Regular, "lib/a.py", "", b"new", 0o600);
        entry(&mut tar, EntryType::Regular, "run", "", b"#!/bin/sh", 0o700);
        entry(&mut tar, EntryType::Symlink, "lib/up", "../run", b"", 0o777);
        entry(
            &mut tar,
            EntryType::Link,
            "again.py",
            "lib/a.py",
            b"",
            0o644,
        );
        let dest = tempfile::tempdir().unwrap();
        let done = unpack(&gz(tar), dest.path(), LIMITS).unwrap();
        assert_eq!(done.entries, 6);
        let mode = |p: &str| {
            fs::metadata(dest.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            (mode("lib"), mode("lib/a.py"), mode("run")),
            (0o755, 0o644, 0o755)
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("lib/a.py")).unwrap(),
            "new"
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("again.py")).unwrap(),
            "new"
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("lib/up")).unwrap(),
            "#!/bin/sh"
        );
    }

    #[test]
    fn limits_stop_it() {
        let small = Limits {
            unpacked_bytes: 64 * 1024,
            entries: 3,
            ratio: 1_000_000,
            ratio_floor: 0,
        };
        let mut tar = tar::Builder::new(Vec::new());
        for i in 0..4 {
            entry(
                &mut tar,
                EntryType::Regular,
                &format!("f{i}"),
                "",
                b"x",
                0o644,
            );
        }
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&gz(tar), dest.path(), small).unwrap_err();
        assert!(matches!(err, UnpackError::TooManyEntries(3)), "{err}");

        let mut tar = tar::Builder::new(Vec::new());
        entry(
            &mut tar,
            EntryType::Regular,
            "big",
            "",
            &[7u8; 100 * 1024],
            0o644,
        );
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&gz(tar), dest.path(), small).unwrap_err();
        assert!(
            matches!(err, UnpackError::TooLarge { limit: 65536 }),
            "{err}"
        );

        let mut tar = tar::Builder::new(Vec::new());
        entry(
            &mut tar,
            EntryType::Regular,
            "zeros",
            "",
            &[0u8; 1024 * 1024],
            0o644,
        );
        let archive = gz(tar);
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&archive, dest.path(), LIMITS_WITH_LOW_FLOOR).unwrap_err();
        assert!(
            matches!(err, UnpackError::Ratio { ratio: 200, .. }),
            "{err}"
        );
    }

    const LIMITS_WITH_LOW_FLOOR: Limits = Limits {
        ratio_floor: 64 * 1024,
        ..LIMITS
    };

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let mut tar = tar::Builder::new(Vec::new());
        entry(&mut tar, EntryType::Directory, "d", "", b"", 0o755);
        entry(&mut tar, EntryType::Symlink, "l", "d", b"", 0o777);
        entry(&mut tar, EntryType::Regular, "l/x", "", b"x", 0o644);
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&gz(tar), dest.path(), LIMITS)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "\"l/x\": a path through a symlink");
    }
}
