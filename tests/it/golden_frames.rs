//! The runtimes' own channel codecs against the golden worker frames
//! (protocol/tests/frames/golden.json, which protocol/tests/golden_frames.rs holds the
//! Rust side to): each runtime's codec test reads every frame the node sends and writes
//! every frame its bootstrap sends as exactly the golden bytes. Each test runs the
//! runtime's test with the interpreter the node would run its workers with (python3 /
//! node on PATH or `NATSFN_PYTHON3` / `NATSFN_NODE`, the JDK of `java` or `NATSFN_JAVA`);
//! a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> PathBuf {
    root().join("protocol/tests/frames/golden.json")
}

/// Runs `command` to its end; fails the test unless it succeeds, with what it printed.
fn passes(mut command: Command, what: &str) -> String {
    let out = command
        .current_dir(root())
        .env("NATSFN_GOLDEN_FRAMES", golden())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({command:?}): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn program(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.into())
}

#[test]
fn the_python3_codec_reads_and_writes_the_golden_frames() {
    let mut command = Command::new(program("NATSFN_PYTHON3", "python3"));
    command
        .arg("runtimes/python3/tests/test_wire.py")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = passes(command, "the python3 codec test");
    assert!(out.contains("\nOK"), "{out}");
}

#[test]
fn the_nodejs_codec_reads_and_writes_the_golden_frames() {
    let mut command = Command::new(program("NATSFN_NODE", "node"));
    command.args(["--test", "runtimes/nodejs/test/wire.test.js"]);
    let out = passes(command, "the nodejs codec test");
    assert!(out.contains("# fail 0"), "{out}");
}

#[test]
fn the_java_codec_reads_and_writes_the_golden_frames() {
    let classes = tempfile::tempdir().expect("temp dir");
    crate::java::run(
        Command::new(crate::java::jdk_tool("javac"))
            .current_dir(root())
            .args(["--release", "17", "-encoding", "UTF-8", "-d"])
            .arg(classes.path())
            .arg("runtimes/java/natsfn/runtime/Wire.java")
            .arg("runtimes/java/test/natsfn/runtime/WireGoldenTest.java"),
    );
    let mut command = Command::new(crate::java::jdk_tool("java"));
    command
        .arg("-cp")
        .arg(classes.path())
        .arg("natsfn.runtime.WireGoldenTest")
        .arg(golden());
    let out = passes(command, "the java codec test");
    assert!(out.starts_with("ok: "), "{out}");
}
