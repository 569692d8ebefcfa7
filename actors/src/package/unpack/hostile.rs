//! Issue 21 §3: package archives, generated (files, directories, symlinks, hardlinks,
//! devices, paths with `..` or a root, bombs) and then mutated (bytes of the tar or of
//! its gzip changed, either cut short), unpacked into a temporary directory: 2,000
//! seeded cases (each writes to disk). Each is unpacked within the limits or refused with
//! a typed error; nothing is ever written outside the target directory.

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use tar::EntryType;

use super::{unpack, Limits};
use crate::hostile::runner;

/// Archives unpack to disk: fewer cases than an in-memory parser's 100,000.
const ARCHIVES: u32 = 2_000;

/// Small, so that each is reached cheaply.
const LIMITS: Limits = Limits {
    unpacked_bytes: 256 * 1024,
    entries: 6,
    ratio: 200,
    ratio_floor: 64 * 1024,
};

const NAMES: &[&str] = &[
    "a",
    "a/b",
    "./a",
    "dir/",
    "dir/f",
    "link",
    "link/x",
    "hard",
    "..",
    "../victim",
    "a/../../victim",
    "/tmp/natsfn-escape",
    "./",
    "",
    "bin/bootstrap",
    "a//b",
];

const TARGETS: &[&str] = &[
    "a",
    "dir",
    "link",
    "..",
    "../victim",
    "/",
    "/etc/passwd",
    "a/../..",
    "dir/../a",
    "",
    "hard",
];

#[derive(Debug, Clone)]
struct Item {
    kind: EntryType,
    name: String,
    link: String,
    data: Vec<u8>,
    mode: u32,
}

fn kind() -> impl Strategy<Value = EntryType> {
    prop_oneof![
        6 => Just(EntryType::Regular),
        3 => Just(EntryType::Directory),
        3 => Just(EntryType::Symlink),
        2 => Just(EntryType::Link),
        1 => Just(EntryType::Fifo),
        1 => Just(EntryType::Char),
        1 => Just(EntryType::XHeader),
        1 => Just(EntryType::GNULongName),
        1 => any::<u8>().prop_map(EntryType::new),
    ]
}

fn name(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(pool).prop_map(str::to_owned),
        1 => "[a-z./]{0,20}",
        1 => proptest::collection::vec(any::<u8>(), 0..20)
            .prop_map(|b| String::from_utf8_lossy(&b).chars().take(20).collect()),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..64),
        // A bomb: zeros compress to nearly nothing.
        1 => (LIMITS.unpacked_bytes / 2..LIMITS.unpacked_bytes * 2).prop_map(|n| vec![0; n as usize]),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    (kind(), name(NAMES), name(TARGETS), data(), any::<u32>()).prop_map(
        |(kind, name, link, data, mode)| Item {
            kind,
            name,
            link,
            data,
            mode: mode & 0o7777,
        },
    )
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Bytes of the tar stream changed before it is compressed.
    Tar(Vec<(Index, u8)>),
    /// Bytes of the gzip stream changed.
    Gzip(Vec<(Index, u8)>),
    /// The gzip stream cut short.
    Cut(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    let flips = || proptest::collection::vec((any::<Index>(), any::<u8>()), 1..6);
    prop_oneof![
        4 => Just(Damage::None),
        3 => flips().prop_map(Damage::Tar),
        2 => flips().prop_map(Damage::Gzip),
        1 => any::<Index>().prop_map(Damage::Cut),
    ]
}

fn flip(bytes: &mut [u8], flips: &[(Index, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for (at, byte) in flips {
        let i = at.index(bytes.len());
        bytes[i] = *byte;
    }
}

fn archive(items: &[Item], damage: &Damage) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(item.kind);
        header.set_size(item.data.len() as u64);
        header.set_mode(item.mode);
        let gnu = header.as_gnu_mut().expect("a gnu header");
        let name = &item.name.as_bytes()[..item.name.len().min(gnu.name.len())];
        gnu.name[..name.len()].copy_from_slice(name);
        let link = &item.link.as_bytes()[..item.link.len().min(gnu.linkname.len())];
        gnu.linkname[..link.len()].copy_from_slice(link);
        header.set_cksum();
        tar.append(&header, item.data.as_slice()).expect("append");
    }
    let mut tar = tar.into_inner().expect("tar");
    if let Damage::Tar(flips) = damage {
        flip(&mut tar, flips);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let mut gz = gz.finish().expect("gzip");
    match damage {
        Damage::Gzip(flips) => flip(&mut gz, flips),
        Damage::Cut(at) => gz.truncate(at.index(gz.len())),
        _ => {}
    }
    gz
}

/// Bytes of regular files and entries under `dir`, links not followed.
fn walk(dir: &Path, bytes: &mut u64, entries: &mut u64) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.path().symlink_metadata().expect("metadata");
        *entries += 1;
        if meta.is_dir() {
            walk(&entry.path(), bytes, entries);
        } else if meta.is_file() {
            *bytes += meta.len();
        }
    }
}

#[test]
fn hostile_archives_unpack_within_the_limits_or_are_refused() {
    let outcomes = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    let strategy = (proptest::collection::vec(item(), 0..8), damage());
    runner(ARCHIVES, b"natsfn tar.gz!!!")
        .run(&strategy, |(items, damage)| {
            let gz = archive(&items, &damage);
            let outer = tempfile::tempdir().expect("tempdir");
            let dest = outer.path().join("pkg");
            std::fs::create_dir(&dest).expect("pkg");
            std::fs::write(outer.path().join("victim"), b"untouched").expect("victim");
            let result = unpack(&gz, &dest, LIMITS);
            let kind = match &result {
                Ok(done) => {
                    prop_assert!(done.bytes <= LIMITS.unpacked_bytes);
                    prop_assert!(done.entries <= LIMITS.entries);
                    let (mut bytes, mut entries) = (0, 0);
                    walk(&dest, &mut bytes, &mut entries);
                    prop_assert!(bytes <= LIMITS.unpacked_bytes, "{} bytes on disk", bytes);
                    // Parents a path implies are made too: a bounded few per entry.
                    prop_assert!(
                        entries <= LIMITS.entries * 20,
                        "{} entries on disk",
                        entries
                    );
                    // Every link resolves inside the package.
                    let root = dest.canonicalize().expect("root");
                    for item in items.iter().filter(|i| i.kind == EntryType::Symlink) {
                        let at = dest.join(item.name.trim_start_matches('/'));
                        if at
                            .symlink_metadata()
                            .is_ok_and(|m| m.file_type().is_symlink())
                        {
                            if let Ok(resolved) = at.canonicalize() {
                                prop_assert!(
                                    resolved.starts_with(&root),
                                    "{:?} -> {:?}",
                                    at,
                                    resolved
                                );
                            }
                        }
                    }
                    "unpacked".to_owned()
                }
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    format!("{e:?}")
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("")
                        .to_owned()
                }
            };
            *outcomes.borrow_mut().entry(kind).or_default() += 1;
            // Nothing outside the package: the directory holds what it held, and only it.
            let mut names: Vec<_> = std::fs::read_dir(outer.path())
                .expect("outer")
                .map(|e| e.expect("entry").file_name())
                .collect();
            names.sort();
            prop_assert_eq!(names, vec!["pkg", "victim"]);
            prop_assert_eq!(
                std::fs::read(outer.path().join("victim")).expect("victim"),
                b"untouched"
            );
            prop_assert!(!Path::new("/tmp/natsfn-escape").exists());
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner();
    eprintln!("outcomes: {outcomes:?}");
    for kind in ["unpacked", "Unsafe", "TooLarge", "TooManyEntries", "Format"] {
        assert!(outcomes.contains_key(kind), "no {kind}: {outcomes:?}");
    }
}
