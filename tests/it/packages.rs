//! Packages: `natsfn deploy` and `natsfn package`, nodes fetching, verifying and
//! unpacking them into their cache, layers, and hostile archives refused.

use std::path::{Path, PathBuf};
use std::process::Output;

use flate2::write::GzEncoder;
use natsfn_protocol::FunctionState;
use serde_json::{json, Value};
use tar::{EntryType, Header};
use tempfile::TempDir;

use crate::harness::*;

/// A server and a node whose data dir sits in `sandbox`, so that a test can see
/// everything a package could have written outside the cache.
struct Setup {
    env: Env,
    sandbox: TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let sandbox = tempfile::tempdir().expect("sandbox");
        let data = sandbox.path().join("data");
        let server = NatsServer::start();
        let node = Node::start_with(
            &server,
            "node-a",
            &["--data-dir", data.to_str().expect("utf-8")],
        );
        Setup {
            env: Env::with(server, node).await,
            sandbox,
        }
    }

    fn cache(&self) -> PathBuf {
        self.sandbox.path().join("data/packages")
    }

    /// The unpacked packages (one directory per digest).
    fn cached(&self) -> Vec<String> {
        let mut dirs: Vec<String> = std::fs::read_dir(self.cache())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    async fn natsfn(&self, args: &[&str]) -> Output {
        run_cli(&self.env.server, args).await
    }

    /// Runs natsfn, which must succeed; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.natsfn(args).await;
        assert!(
            out.status.success(),
            "natsfn {args:?} failed: {}{}\nnode log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.env.node.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deploys examples/hello-python as function `hello`; the CLI's stdout.
    async fn deploy_hello(&self) -> String {
        let example = example("hello-python");
        self.ok(&[
            "deploy",
            &example,
            "-f",
            "hello",
            "--runtime",
            "python3",
            "--handler",
            "app.handler",
        ])
        .await
    }

    /// Stores `bytes` as package `name` with the Object Store API, as any NATS tool could.
    async fn put_object(&self, name: &str, bytes: &[u8]) {
        let js = async_nats::jetstream::new(self.env.client.clone());
        let store = natsfn_actors::buckets::packages(&js)
            .await
            .expect("packages bucket");
        store.put(name, &mut &bytes[..]).await.expect("put package");
    }
}

fn digest_in(output: &str) -> String {
    let at = output.find("sha256:").expect("a digest in the output");
    output[at..at + 71].to_owned()
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn deploy_then_invoke_over_nats_and_the_same_tree_gives_the_same_digest() {
    let s = Setup::start().await;
    let out = s
        .ok(&[
            "deploy",
            &example("hello-python"),
            "-f",
            "hello",
            "--runtime",
            "python3",
            "--handler",
            "app.handler",
            "-s",
            "hello.packaged",
        ])
        .await;
    assert!(out.contains("packed ") && out.contains("1 files"), "{out}");
    assert!(out.contains("hello is ready"), "{out}");
    let digest = digest_in(&out);
    let reply = s.env.request("hello.packaged", r#"{"name":"nats"}"#).await;
    assert_eq!(json(&reply), json!({"message": "hello, nats"}));
    // The binding pins what was uploaded.
    let entry = s.env.bindings.get("hello").await.unwrap().unwrap();
    let spec: Value = serde_json::from_slice(&entry).unwrap();
    assert_eq!(spec["code"], json!({"package": "hello", "digest": digest}));
    assert_eq!(s.cached(), vec![digest["sha256:".len()..].to_owned()]);

    // A copy of the tree, written later (other mtimes), other modes of the same kind:
    // the same bytes.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(&example("hello-python")).join("app.py"),
        copy.path().join("app.py"),
    )
    .unwrap();
    let again = s
        .ok(&["package", "push", &dir_str(copy.path()), "-p", "hello-copy"])
        .await;
    assert_eq!(digest_in(&again), digest, "{again}");
}

#[tokio::test]
async fn two_functions_sharing_a_package_share_one_directory_until_neither_uses_it() {
    let s = Setup::start().await;
    let code = code_dir(&[(
        "app.py",
        "import os\ndef handler(event, context):\n    return {'root': os.environ['LAMBDA_TASK_ROOT'], 'greeting': os.environ.get('GREETING')}\n",
    )]);
    let out = s
        .ok(&["package", "push", &dir_str(code.path()), "-p", "shared"])
        .await;
    assert!(out.contains("1 files"), "{out}");
    // `a` starts as a directory binding with env; bind -p changes only its code.
    s.ok(&[
        "bind",
        "-f",
        "a",
        "--runtime",
        "python3",
        "--handler",
        "app.handler",
        "--code",
        &dir_str(code.path()),
        "--env",
        "GREETING=hi",
    ])
    .await;
    s.ok(&["bind", "-p", "shared", "-f", "a"]).await;
    s.ok(&[
        "bind",
        "-p",
        "shared",
        "-f",
        "b",
        "--runtime",
        "python3",
        "--handler",
        "app.handler",
    ])
    .await;
    let a = json(&s.env.invoke("a", "{}").await);
    let b = json(&s.env.invoke("b", "{}").await);
    assert_eq!(a["greeting"], "hi", "bind -p kept the env: {a}");
    assert_eq!(a["root"], b["root"], "{a} {b}");
    let cached = s.cached();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(
        a["root"].as_str().unwrap(),
        dir_str(&s.cache().join(&cached[0]))
    );
    // A new binding of a package must say how to run it.
    let out = s.natsfn(&["bind", "-p", "shared", "-f", "c"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --runtime"));

    s.ok(&["rm", "a"]).await;
    s.env
        .wait_status("b", |st| st.state == FunctionState::Ready)
        .await;
    assert_eq!(json(&s.env.invoke("b", "{}").await)["root"], b["root"]);
    assert_eq!(s.cached(), cached, "still used by b");
    s.ok(&["rm", "b"]).await;
    eventually("the unused package directory to go", || async {
        s.cached().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn python3_and_nodejs_see_layers_later_ones_winning_and_their_own_code_first() {
    let s = Setup::start().await;
    let first = code_dir(&[
        ("python/shared_mod.py", "VALUE = 'first'\n"),
        ("python/only_first.py", "VALUE = 'only in first'\n"),
        ("python/mine.py", "VALUE = 'layer'\n"),
        (
            "nodejs/node_modules/shared-mod/index.js",
            "module.exports = 'first';\n",
        ),
        (
            "nodejs/node_modules/only-first/index.js",
            "module.exports = 'only in first';\n",
        ),
        (
            "nodejs/node_modules/mine/index.js",
            "module.exports = 'layer';\n",
        ),
        ("bin/layer-tool", "#!/bin/sh\necho tool\n"),
    ]);
    {
        use std::os::unix::fs::PermissionsExt;
        let tool = first.path().join("bin/layer-tool");
        std::fs::set_permissions(tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let second = code_dir(&[
        ("python/shared_mod.py", "VALUE = 'second'\n"),
        (
            "nodejs/node_modules/shared-mod/index.js",
            "module.exports = 'second';\n",
        ),
    ]);
    s.ok(&["package", "push", &dir_str(first.path()), "-p", "first"])
        .await;
    s.ok(&["package", "push", &dir_str(second.path()), "-p", "second"])
        .await;
    let py = code_dir(&[
        (
            "app.py",
            "import os, shutil, shared_mod, only_first, mine\n\
             def handler(event, context):\n    \
             return {'shared': shared_mod.VALUE, 'only': only_first.VALUE, 'mine': mine.VALUE,\n            \
             'tool': shutil.which('layer-tool') is not None, 'layers': os.environ['NATSFN_LAYERS']}\n",
        ),
        ("mine.py", "VALUE = 'code'\n"),
    ]);
    let js = code_dir(&[
        (
            "index.js",
            "exports.handler = async () => ({shared: require('shared-mod'), only: require('only-first'),\n  \
             mine: require('mine'), layers: process.env.NATSFN_LAYERS});\n",
        ),
        ("node_modules/mine/index.js", "module.exports = 'code';\n"),
    ]);
    for (name, dir, runtime, handler) in [
        ("py", &py, "python3", "app.handler"),
        ("js", &js, "nodejs", "index.handler"),
    ] {
        s.ok(&[
            "deploy",
            &dir_str(dir.path()),
            "-f",
            name,
            "--runtime",
            runtime,
            "--handler",
            handler,
            "--layer",
            "first",
            "--layer",
            "second",
        ])
        .await;
        let reply = json(&s.env.invoke(name, "{}").await);
        assert_eq!(reply["shared"], "second", "{name}: {reply}");
        assert_eq!(reply["only"], "only in first", "{name}: {reply}");
        assert_eq!(reply["mine"], "code", "{name}: {reply}");
        let layers: Vec<&str> = reply["layers"].as_str().unwrap().split(':').collect();
        assert_eq!(layers.len(), 2, "{reply}");
        assert!(layers.iter().all(|l| l.starts_with(&dir_str(&s.cache()))));
        if name == "py" {
            assert_eq!(reply["tool"], true, "bin/ of a layer is on PATH: {reply}");
        }
    }
    let spec: Value =
        serde_json::from_slice(&s.env.bindings.get("py").await.unwrap().unwrap()).unwrap();
    assert_eq!(spec["layers"][0]["package"], "first");
    assert!(spec["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[tokio::test]
async fn package_rm_is_refused_while_bound_and_ls_shows_who_uses_what() {
    let s = Setup::start().await;
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    let lib = code_dir(&[("python/lib.py", "X = 1\n")]);
    s.ok(&["package", "push", &dir_str(lib.path()), "-p", "lib"])
        .await;
    s.ok(&["package", "push", &dir_str(code.path()), "-p", "spare"])
        .await;
    s.ok(&[
        "deploy",
        &dir_str(code.path()),
        "-f",
        "user",
        "--package",
        "app",
        "--runtime",
        "python3",
        "--handler",
        "app.handler",
        "--layer",
        "lib",
    ])
    .await;
    let ls = s.ok(&["package", "ls"]).await;
    let line = |name: &str| {
        ls.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{ls}"))
            .to_owned()
    };
    assert!(line("app").contains("user (code)"), "{ls}");
    assert!(line("lib").contains("user (layer)"), "{ls}");
    assert!(line("spare").trim_end().ends_with('-'), "{ls}");
    assert!(line("app").contains("sha256:"), "{ls}");
    for used in ["app", "lib"] {
        let out = s.natsfn(&["package", "rm", used]).await;
        assert!(!out.status.success(), "rm {used} was not refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is used by user"), "{err}");
    }
    s.ok(&["package", "rm", "spare"]).await;
    s.ok(&["package", "rm", "lib", "--force"]).await;
    let ls = s.ok(&["package", "ls"]).await;
    assert!(
        ls.contains("app ") && !ls.contains("spare") && !ls.contains("lib "),
        "{ls}"
    );
    // The function still runs from its node's cache.
    assert_eq!(json(&s.env.invoke("user", "{}").await), json!(1));
}

/// Every file and directory under `root` (relative), but the node's data dir.
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if relative.starts_with("data") {
                continue;
            }
            out.push(relative);
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// An entry written as given: the `tar` crate's own builder refuses such paths.
fn raw(
    tar: &mut tar::Builder<impl std::io::Write>,
    kind: EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_cksum();
    tar.append(&header, data).unwrap();
}

fn archive(build: impl FnOnce(&mut tar::Builder<GzEncoder<Vec<u8>>>)) -> Vec<u8> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    raw(
        &mut tar,
        EntryType::Regular,
        "app.py",
        "",
        b"def handler(e, c):\n    return 1\n",
    );
    build(&mut tar);
    tar.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn hostile_archives_are_rejected_and_write_nothing_outside_the_cache() {
    let s = Setup::start().await;
    let outside = s.sandbox.path().join("outside.txt");
    std::fs::write(&outside, "secret").unwrap();
    let absolute = s.sandbox.path().join("absolute.txt");
    let absolute = absolute.to_str().unwrap().to_owned();
    let before = tree(s.sandbox.path());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            archive(|t| raw(t, EntryType::Regular, "../../escaped.txt", "", b"x")),
            "\"../../escaped.txt\": an absolute path or one with '..'",
        ),
        (
            "absolute",
            archive(|t| raw(t, EntryType::Regular, &absolute, "", b"x")),
            "an absolute path",
        ),
        (
            "symlink-out",
            archive(|t| {
                raw(t, EntryType::Symlink, "lib", "../../..", b"");
                raw(t, EntryType::Regular, "lib/escaped.txt", "", b"x");
            }),
            "\"lib\": a symlink pointing outside",
        ),
        (
            "symlink-abs",
            archive(|t| raw(t, EntryType::Symlink, "etc", "/etc", b"")),
            "\"etc\": a symlink pointing outside",
        ),
        (
            "symlink-chain",
            archive(|t| {
                raw(t, EntryType::Symlink, "a/up", "..", b"");
                // Lexically inside (a/up/.. = a), but a/up is the package root itself.
                raw(t, EntryType::Symlink, "b", "a/up/..", b"");
            }),
            "does not resolve to a path inside the package",
        ),
        (
            "hardlink-out",
            archive(|t| raw(t, EntryType::Link, "h", "../../outside.txt", b"")),
            "\"h\": a hardlink pointing outside",
        ),
        (
            "device",
            archive(|t| raw(t, EntryType::Char, "null", "", b"")),
            "\"null\": a device file or FIFO",
        ),
        (
            "fifo",
            archive(|t| raw(t, EntryType::Fifo, "pipe", "", b"")),
            "\"pipe\": a device file or FIFO",
        ),
        (
            "bomb",
            archive(|t| {
                let size = 256 * 1024 * 1024;
                let mut header = Header::new_gnu();
                header.set_entry_type(EntryType::Regular);
                header.set_size(size);
                header.set_mode(0o644);
                header.set_path("zeros").unwrap();
                header.set_cksum();
                t.append(&header, std::io::Read::take(std::io::repeat(0), size))
                    .unwrap();
            }),
            "(a tar bomb?)",
        ),
    ];
    for (name, bytes, why) in cases {
        s.put_object(name, &bytes).await;
        let revision = s
            .env
            .put_binding(name, Binding::python("app.handler", Code::package(name)))
            .await;
        let status = s
            .env
            .wait_status(name, |st| {
                st.revision >= revision && st.state != FunctionState::Starting
            })
            .await;
        assert_eq!(status.state, FunctionState::Error, "{name}: {status:?}");
        let reason = status.reason.unwrap_or_default();
        assert!(
            reason.starts_with(&format!(
                "Runtime.InvalidPackage: code package \"{name}\" (sha256:"
            )),
            "{name}: {reason}"
        );
        assert!(
            reason.contains(why),
            "{name}: {reason:?} does not say {why:?}"
        );
        let reply = s.env.invoke(name, "{}").await;
        assert_eq!(error_code(&reply), Some(503), "{name}: {reply:?}");
        assert_eq!(json(&reply)["errorType"], "Runtime.InvalidPackage");
    }
    assert_eq!(
        tree(s.sandbox.path()),
        before,
        "something was written outside the cache"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    assert!(s.cached().is_empty(), "{:?}", s.cached());
    let leftovers: Vec<_> = std::fs::read_dir(s.cache().join(".tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!Path::new("/escaped.txt").exists() && !Path::new(&absolute).exists());
    assert!(!s
        .sandbox
        .path()
        .parent()
        .unwrap()
        .join("escaped.txt")
        .exists());
}

#[tokio::test]
async fn a_digest_mismatch_and_a_missing_package_are_named_and_nothing_else_is_disturbed() {
    let s = Setup::start().await;
    let out = s.deploy_hello().await;
    let real = digest_in(&out);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (
            "mismatch",
            Code::pinned("hello", &wrong),
            "Runtime.PackageDigestMismatch",
            format!(
                "code package \"hello\": expected {wrong}, the object in natsfn-packages is {real}"
            ),
        ),
        (
            "missing",
            Code::package("nope"),
            "Runtime.PackageNotFound",
            "code package \"nope\": no such object in natsfn-packages".to_owned(),
        ),
    ];
    for (name, code, error_type, message) in cases {
        let revision = s
            .env
            .put_binding(name, Binding::python("app.handler", code))
            .await;
        let status = s
            .env
            .wait_status(name, |st| {
                st.revision >= revision && st.state != FunctionState::Starting
            })
            .await;
        assert_eq!(status.state, FunctionState::Error, "{status:?}");
        let reason = status.reason.unwrap_or_default();
        assert!(
            reason.starts_with(&format!("{error_type}: {message}")),
            "{reason}"
        );
        let reply = s.env.invoke(name, "{}").await;
        assert_eq!(error_code(&reply), Some(503), "{reply:?}");
        let body = json(&reply);
        assert_eq!(body["errorType"], error_type, "{body}");
        assert!(
            body["errorMessage"].as_str().unwrap().starts_with(&message),
            "{body}"
        );
    }
    // A missing layer is named as one.
    let revision = s
        .env
        .put_binding(
            "layered",
            Binding::python("app.handler", Code::package("hello"))
                .layer("hello")
                .layer("gone"),
        )
        .await;
    let status = s
        .env
        .wait_status("layered", |st| {
            st.revision >= revision && st.state != FunctionState::Starting
        })
        .await;
    assert!(status
        .reason
        .unwrap_or_default()
        .starts_with("Runtime.PackageNotFound: layers[1] package \"gone\""),);
    // The node and its other function are untouched.
    assert_eq!(
        json(&s.env.invoke("hello", r#"{"name":"still"}"#).await),
        json!({"message": "hello, still"})
    );
}

/// The cache is keyed by digest, but a binding names an object: one whose object is
/// not in `natsfn-packages` is an error even when this node holds bytes of that digest
/// (another function's package), a new function and an edited one alike; the edited
/// one keeps serving its last good revision.
#[tokio::test]
async fn a_missing_package_is_an_error_even_when_its_digest_is_cached() {
    let s = Setup::start().await;
    let out = s.deploy_hello().await;
    let digest = digest_in(&out);
    assert_eq!(s.cached(), vec![digest["sha256:".len()..].to_owned()]);
    let missing = || Binding::python("app.handler", Code::pinned("no-such-package", &digest));
    let message = "code package \"no-such-package\": no such object in natsfn-packages";

    // A new function.
    let revision = s.env.put_binding("stranger", missing()).await;
    let status = s
        .env
        .wait_status("stranger", |st| {
            st.revision >= revision && st.state != FunctionState::Starting
        })
        .await;
    assert_eq!(status.state, FunctionState::Error, "{status:?}");
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.starts_with(&format!("Runtime.PackageNotFound: {message}")),
        "{reason}"
    );
    let reply = s.env.invoke("stranger", "{}").await;
    assert_eq!(error_code(&reply), Some(503), "{reply:?}");
    assert_eq!(json(&reply)["errorType"], "Runtime.PackageNotFound");

    // An edit of a function that serves.
    let good = s
        .env
        .bindings
        .entry("hello")
        .await
        .expect("read")
        .expect("bound")
        .revision;
    let revision = s.env.put_binding("hello", missing()).await;
    let status = s
        .env
        .wait_status("hello", |st| {
            st.revision >= revision && st.state != FunctionState::Starting
        })
        .await;
    assert_eq!(status.state, FunctionState::Error, "{status:?}");
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.starts_with(&format!("Runtime.PackageNotFound: {message}"))
            && reason.contains(&format!("still serving revision {good}")),
        "{reason}"
    );
    assert_eq!(
        json(&s.env.invoke("hello", r#"{"name":"still"}"#).await),
        json!({"message": "hello, still"})
    );

    // A deleted object is gone too, though its info (and digest) stays in the stream.
    let js = async_nats::jetstream::new(s.env.client.clone());
    let store = natsfn_actors::buckets::packages(&js).await.expect("bucket");
    let mut bytes = Vec::new();
    let mut object = store.get("hello").await.expect("get hello");
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
        .await
        .expect("read hello");
    s.put_object("doomed", &bytes).await;
    store.delete("doomed").await.expect("delete");
    let revision = s
        .env
        .put_binding(
            "ghost",
            Binding::python("app.handler", Code::pinned("doomed", &digest)),
        )
        .await;
    let status = s
        .env
        .wait_status("ghost", |st| {
            st.revision >= revision && st.state != FunctionState::Starting
        })
        .await;
    assert_eq!(status.state, FunctionState::Error, "{status:?}");
    assert!(
        status
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("Runtime.PackageNotFound: code package \"doomed\""),
        "{status:?}"
    );
}

#[tokio::test]
async fn nodes_sharing_a_data_dir_never_remove_a_package_the_other_runs() {
    let s = Setup::start().await;
    let data = s.sandbox.path().join("data");
    let mut other = Node::start_with(
        &s.env.server,
        "node-b",
        &["--data-dir", data.to_str().unwrap()],
    );
    // Every invocation gets a fresh worker: each one starts from the cached directory.
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 'ok'\n")]);
    s.ok(&["package", "push", &dir_str(code.path()), "-p", "both"])
        .await;
    s.env
        .bind_ready(
            "both",
            Binding::python("app.handler", Code::package("both"))
                .pool_min(1)
                .max_invocations(1),
        )
        .await;
    // Both nodes serve it (the status says ready once either does).
    eventually("both nodes to run a worker of it", || async {
        (!other.worker_pids().is_empty() && !s.env.node.worker_pids().is_empty()).then_some(())
    })
    .await;
    assert_eq!(s.cached().len(), 1, "one directory for both nodes");
    other.terminate();
    other.exited().await;
    for _ in 0..5 {
        let reply = s.env.invoke("both", "{}").await;
        assert_eq!(json(&reply), json!("ok"), "{reply:?}\n{}", s.env.node.log());
    }
    assert_eq!(
        s.cached().len(),
        1,
        "node-b's exit left node-a's package alone"
    );
}

const GREETING: &str = r#"
package com.example.lib;

public class Greeting {
    public static String greet(String who) {
        return "hello " + who + " from a layer";
    }
}
"#;

const USES_LAYER: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.Map;

public class UsesLayer implements RequestHandler<Map<String, String>, String> {
    @Override
    public String handleRequest(Map<String, String> event, Context context) {
        return com.example.lib.Greeting.greet(event.get("who"));
    }
}
"#;

#[tokio::test]
async fn a_java_function_loads_a_class_that_only_a_layers_java_lib_jar_provides() {
    use crate::java::{javac, jdk_tool, run};
    let s = Setup::start().await;
    // The library, as a jar in the layer's java/lib/.
    let build = tempfile::tempdir().expect("temp dir");
    javac(
        &[("com/example/lib/Greeting.java", GREETING)],
        build.path(),
        false,
    );
    let layer = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(layer.path().join("java/lib")).expect("java/lib");
    run(std::process::Command::new(jdk_tool("jar"))
        .arg("--create")
        .arg("--file")
        .arg(layer.path().join("java/lib/greeting.jar"))
        .arg("-C")
        .arg(build.path())
        .arg("."));
    s.ok(&["package", "push", &dir_str(layer.path()), "-p", "greeting"])
        .await;
    // The function, compiled against the library, which it does not carry.
    let code = tempfile::tempdir().expect("temp dir");
    javac(
        &[
            ("example/UsesLayer.java", USES_LAYER),
            ("com/example/lib/Greeting.java", GREETING),
        ],
        code.path(),
        false,
    );
    std::fs::remove_dir_all(code.path().join("com")).expect("drop the library's classes");
    s.ok(&[
        "deploy",
        &dir_str(code.path()),
        "-f",
        "layered-java",
        "--runtime",
        "java",
        "--handler",
        "example.UsesLayer",
        "--layer",
        "greeting",
    ])
    .await;
    let reply = s.env.invoke("layered-java", r#"{"who":"ann"}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!("hello ann from a layer"));
}
