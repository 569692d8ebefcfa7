//! The `java` runtime's parts on the node: finding a JDK (17 or newer) and the Jackson
//! jars, building the bootstrap (runtimes/java, shipped in the binary as sources) with
//! that JDK's javac once per machine, with a class-data sharing archive
//! of what a worker loads at start-up, and the JVM's command line for a worker.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OnceCell;

macro_rules! java_source {
    ($path:literal) => {
        ($path, include_str!(concat!("../../runtimes/java/", $path)))
    };
}

/// The bootstrap's sources (runtimes/java), relative to it.
const SOURCES: [(&str, &str); 12] = [
    java_source!("natsfn/runtime/Bootstrap.java"),
    java_source!("natsfn/runtime/Handlers.java"),
    java_source!("natsfn/runtime/Wire.java"),
    java_source!("com/amazonaws/services/lambda/runtime/Client.java"),
    java_source!("com/amazonaws/services/lambda/runtime/ClientContext.java"),
    java_source!("com/amazonaws/services/lambda/runtime/CognitoIdentity.java"),
    java_source!("com/amazonaws/services/lambda/runtime/Context.java"),
    java_source!("com/amazonaws/services/lambda/runtime/LambdaLogger.java"),
    java_source!("com/amazonaws/services/lambda/runtime/LambdaRuntime.java"),
    java_source!("com/amazonaws/services/lambda/runtime/RequestHandler.java"),
    java_source!("com/amazonaws/services/lambda/runtime/RequestStreamHandler.java"),
    java_source!("com/amazonaws/services/lambda/runtime/logging/LogLevel.java"),
];

/// The bootstrap's main class.
const MAIN_CLASS: &str = "natsfn.runtime.Bootstrap";
/// Where Debian's libjackson2-databind-java puts its jars.
const DEBIAN_JACKSON: [&str; 3] = [
    "/usr/share/java/jackson-databind.jar",
    "/usr/share/java/jackson-core.jar",
    "/usr/share/java/jackson-annotations.jar",
];
const MIN_VERSION: u32 = 17;

/// A JDK the node found, and (once the node has built it) the bootstrap.
#[derive(Debug, Clone)]
pub struct Jdk {
    /// The real `java` executable (symlinks resolved).
    pub java: PathBuf,
    /// The major version (17, 21, ...).
    pub version: u32,
    /// Jackson's jars (databind, core, annotations), from `NATSFN_JAVA_CLASSPATH` or
    /// Debian's /usr/share/java.
    pub jackson: Vec<PathBuf>,
    javac: PathBuf,
    jar: PathBuf,
    /// Built when the first Java function is planned (nodes that run none never pay
    /// for javac), once per node.
    bootstrap: Arc<OnceCell<Result<Bootstrap, String>>>,
}

/// The built bootstrap in the runtime directory.
#[derive(Debug, Clone)]
pub(crate) struct Bootstrap {
    jar: PathBuf,
    /// The class-data sharing archive, when it could be made.
    archive: Option<PathBuf>,
}

impl Jdk {
    /// `java` on PATH or `NATSFN_JAVA`; `Err` says in words why Java functions cannot run.
    pub(crate) async fn discover() -> Result<Jdk, String> {
        let program = std::env::var("NATSFN_JAVA").unwrap_or_else(|_| "java".into());
        let found = if program.contains('/') {
            Some(PathBuf::from(&program))
        } else {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(&program))
                    .find(|p| p.is_file())
            })
        };
        let Some(java) = found.and_then(|p| std::fs::canonicalize(p).ok()) else {
            return Err(format!(
                "no JDK found ({program:?} is not on PATH; install openjdk-17-jdk-headless or set NATSFN_JAVA)"
            ));
        };
        let bin = java.parent().unwrap_or(Path::new("/"));
        let home = bin.parent().unwrap_or(Path::new("/"));
        let version = match release_version(home) {
            Some(v) => v,
            None => version_of(&java)
                .await
                .ok_or_else(|| format!("{}: cannot tell its Java version", java.display()))?,
        };
        if version < MIN_VERSION {
            return Err(format!(
                "{} is Java {version}; Java functions need a JDK {MIN_VERSION} or newer",
                java.display()
            ));
        }
        let (javac, jar) = (bin.join("javac"), bin.join("jar"));
        if !javac.is_file() || !jar.is_file() {
            return Err(format!(
                "{} has no javac/jar beside it (a JRE): the Java bootstrap is built with a JDK's javac; install openjdk-17-jdk-headless",
                java.display()
            ));
        }
        Ok(Jdk {
            java,
            version,
            jackson: jackson()?,
            javac,
            jar,
            bootstrap: Arc::default(),
        })
    }

    /// Builds the bootstrap unless this node did already, or a build of these sources
    /// for this JDK and these Jackson jars is there. The build is one per machine (in
    /// the system temp dir, named by what it is built from, whatever a node's
    /// `--runtime-dir`; `<runtime dir>/java` where the temp dir is not writable): nodes
    /// build it once, under a lock, and each file is renamed into place whole.
    pub(crate) async fn ensure_built(&self, runtime_dir: &Path) {
        self.bootstrap
            .get_or_init(|| async {
                let started = Instant::now();
                let shared = self.shared_dir();
                let dir = if std::fs::create_dir_all(&shared).is_ok() {
                    shared
                } else {
                    runtime_dir.join("java")
                };
                let built = {
                    let (dir, jdk) = (dir.clone(), self.clone());
                    tokio::task::spawn_blocking(move || build(&dir, &jdk)).await
                };
                let built = match built {
                    Ok(Ok(bootstrap)) => bootstrap,
                    Ok(Err(e)) => {
                        return Err(format!("the Java bootstrap could not be built: {e}"))
                    }
                    Err(e) => return Err(format!("the Java bootstrap could not be built: {e}")),
                };
                if built.archive.is_none() {
                    tracing::warn!(
                        "java: no class-data sharing archive; Java workers start slower"
                    );
                }
                tracing::info!(
                    "java: bootstrap ready in {} ({} ms)",
                    dir.display(),
                    started.elapsed().as_millis()
                );
                Ok(built)
            })
            .await;
    }

    /// The JVM's arguments for a worker of `memory_mb`: the heap, metaspace and code
    /// cache sized as Lambda's Java runtime sizes them (85 %, 10 % and 5 % of the
    /// function's memory), the serial collector and C1 only as Lambda runs them, and
    /// the class-data sharing archive.
    pub(crate) fn worker_args(&self, memory_mb: u32) -> Result<Vec<String>, String> {
        let bootstrap = match self.bootstrap.get() {
            Some(built) => built.as_ref().map_err(Clone::clone)?,
            None => return Err("the Java bootstrap was not built on this node".into()),
        };
        let kb = u64::from(memory_mb) * 1024;
        let mut args = vec![
            format!("-XX:MaxHeapSize={}k", kb * 85 / 100),
            format!("-XX:MaxMetaspaceSize={}k", kb * 10 / 100),
            format!("-XX:ReservedCodeCacheSize={}k", kb * 5 / 100),
        ];
        args.extend(common_args());
        if let Some(archive) = &bootstrap.archive {
            args.push(format!("-XX:SharedArchiveFile={}", archive.display()));
        }
        args.extend([
            "-cp".into(),
            self.class_path(&bootstrap.jar),
            MAIN_CLASS.into(),
        ]);
        Ok(args)
    }

    /// `<temp>/natsfn-java-<uid>-<hash of the sources, the JDK and the Jackson jars>`.
    fn shared_dir(&self) -> PathBuf {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let stamp = stamp(self);
        for (path, source) in SOURCES {
            for b in path.bytes().chain(source.bytes()) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        for b in stamp.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        std::env::temp_dir().join(format!("natsfn-java-{uid}-{hash:016x}"))
    }

    /// What a sandboxed JVM reads: the JDK, Jackson, the bootstrap and its archive.
    pub(crate) fn sandbox_reads(&self) -> Vec<PathBuf> {
        let home = self.java.parent().and_then(Path::parent);
        home.into_iter()
            .map(Path::to_path_buf)
            .chain(self.jackson.iter().cloned())
            .chain([self.shared_dir()])
            .collect()
    }

    fn class_path(&self, jar: &Path) -> String {
        std::iter::once(jar)
            .chain(self.jackson.iter().map(PathBuf::as_path))
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// What every JVM of ours runs with (the training run too, so that its archive fits).
fn common_args() -> Vec<String> {
    [
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        // No /tmp/hsperfdata file per worker: nobody attaches jstat to a worker.
        "-XX:-UsePerfData",
        "-Xshare:auto",
        "-Djava.net.preferIPv4Stack=true",
        // The bootstrap adopts the channel's descriptor number (Wire.open).
        "--add-opens=java.base/java.io=ALL-UNNAMED",
    ]
    .map(String::from)
    .to_vec()
}

fn jackson() -> Result<Vec<PathBuf>, String> {
    let (jars, source): (Vec<PathBuf>, &str) = match std::env::var("NATSFN_JAVA_CLASSPATH") {
        Ok(list) if !list.is_empty() => (
            std::env::split_paths(&list).collect(),
            "NATSFN_JAVA_CLASSPATH",
        ),
        _ => (
            DEBIAN_JACKSON.iter().map(PathBuf::from).collect(),
            "the default",
        ),
    };
    match jars.iter().find(|j| !j.is_file()) {
        Some(missing) => Err(format!(
            "Jackson not found: {} (from {source}) is missing; install Debian's libjackson2-databind-java, or set NATSFN_JAVA_CLASSPATH to the jackson-databind, jackson-core and jackson-annotations jars",
            missing.display()
        )),
        None => Ok(jars),
    }
}

/// `JAVA_VERSION="17.0.15"` in the JDK's `release` file: no JVM started to learn it.
fn release_version(home: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(home.join("release")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("JAVA_VERSION="))?;
    major(line.trim_matches('"'))
}

/// `java -version`'s `version "17.0.15"` (or `"1.8.0_392"`).
async fn version_of(java: &Path) -> Option<u32> {
    let out = tokio::process::Command::new(java)
        .arg("-version")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let quoted = text.split('"').nth(1)?;
    major(quoted)
}

fn major(version: &str) -> Option<u32> {
    let mut parts = version.split(['.', '_', '-', '+']);
    match parts.next()?.parse().ok()? {
        1 => parts.next()?.parse().ok(),
        n => Some(n),
    }
}

fn build(dir: &Path, jdk: &Jdk) -> Result<Bootstrap, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir_all(dir).map_err(|e| io(&dir.display().to_string(), e))?;
    let lock = std::fs::File::create(dir.join(".lock")).map_err(|e| io("lock file", e))?;
    // SAFETY: flock on a descriptor this function owns; released when `lock` closes.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(io("lock", std::io::Error::last_os_error()));
    }
    let jar = dir.join("natsfn-java.jar");
    let archive = dir.join("natsfn.jsa");
    let stamp_path = dir.join("stamp");
    let stamp = stamp(jdk);
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) && jar.is_file() {
        return Ok(Bootstrap {
            jar,
            archive: archive.is_file().then_some(archive),
        });
    }
    let work = dir.join(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let src = work.join("src");
    let mut files = Vec::new();
    for (relative, source) in SOURCES {
        let path = src.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("sources", e))?;
        }
        std::fs::write(&path, source).map_err(|e| io("sources", e))?;
        files.push(path);
    }
    let classes = work.join("classes");
    let jackson = jdk
        .jackson
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    run(std::process::Command::new(&jdk.javac)
        .args(["-nowarn", "--release", "17", "-encoding", "UTF-8", "-d"])
        .arg(&classes)
        .arg("-cp")
        .arg(&jackson)
        .args(&files))?;
    let new_jar = work.join("natsfn-java.jar");
    run(std::process::Command::new(&jdk.jar)
        .arg("--create")
        .arg("--file")
        .arg(&new_jar)
        .arg("-C")
        .arg(&classes)
        .arg("."))?;
    std::fs::rename(&new_jar, &jar).map_err(|e| io("install jar", e))?;
    // The archive is made with the jar at its final path: CDS checks the class path.
    let new_archive = work.join("natsfn.jsa");
    let trained = run(std::process::Command::new(&jdk.java)
        .arg(format!(
            "-XX:ArchiveClassesAtExit={}",
            new_archive.display()
        ))
        .args(common_args())
        .arg("-cp")
        .arg(jdk.class_path(&jar))
        .args([MAIN_CLASS, "--train"]));
    let archive = match trained.and_then(|()| {
        std::fs::rename(&new_archive, &archive).map_err(|e| io("install archive", e))
    }) {
        Ok(()) => Some(archive),
        Err(e) => {
            tracing::warn!("java: class-data sharing archive not made: {e}");
            let _ = std::fs::remove_file(&archive);
            None
        }
    };
    let _ = std::fs::remove_dir_all(&work);
    std::fs::write(&stamp_path, stamp).map_err(|e| io("stamp", e))?;
    Ok(Bootstrap { jar, archive })
}

/// What a build depends on besides the sources (the runtime directory is per build of
/// natsfn already): the JDK and the Jackson jars, by path, size and time.
fn stamp(jdk: &Jdk) -> String {
    std::iter::once(&jdk.java)
        .chain(&jdk.jackson)
        .map(|p| {
            let meta = std::fs::metadata(p);
            let (size, mtime) = meta.map_or((0, 0), |m| (m.size(), m.mtime()));
            format!("{} {size} {mtime}\n", p.display())
        })
        .collect()
}

fn run(command: &mut std::process::Command) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(format!(
        "{program} failed ({}): {}",
        out.status,
        text.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_their_major() {
        assert_eq!(major("17.0.15"), Some(17));
        assert_eq!(major("21"), Some(21));
        assert_eq!(major("1.8.0_392"), Some(8));
        assert_eq!(major("25-ea"), Some(25));
        assert_eq!(major("x"), None);
    }

    #[test]
    fn the_heap_is_sized_from_memory_as_lambda_sizes_it() {
        let jdk = Jdk {
            java: "/jdk/bin/java".into(),
            version: 17,
            jackson: vec!["/j/databind.jar".into()],
            javac: "/jdk/bin/javac".into(),
            jar: "/jdk/bin/jar".into(),
            bootstrap: Arc::default(),
        };
        assert!(jdk.worker_args(128).is_err(), "not built yet");
        let built = Bootstrap {
            jar: "/rt/java/natsfn-java.jar".into(),
            archive: Some("/rt/java/natsfn.jsa".into()),
        };
        jdk.bootstrap.set(Ok(built)).expect("unset");
        let args = jdk.worker_args(512).expect("built");
        assert_eq!(args[0], "-XX:MaxHeapSize=445644k");
        assert_eq!(args[1], "-XX:MaxMetaspaceSize=52428k");
        assert_eq!(args[2], "-XX:ReservedCodeCacheSize=26214k");
        assert!(args.contains(&"-XX:+UseSerialGC".to_owned()));
        assert!(args.contains(&"-XX:TieredStopAtLevel=1".to_owned()));
        assert!(args.contains(&"-XX:SharedArchiveFile=/rt/java/natsfn.jsa".to_owned()));
        let n = args.len();
        assert_eq!(
            &args[n - 3..],
            [
                "-cp",
                "/rt/java/natsfn-java.jar:/j/databind.jar",
                MAIN_CLASS
            ]
        );
    }
}
