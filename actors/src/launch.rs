//! How to start a function's worker process: worked out once per binding revision, so
//! that starting a worker is only a spawn.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use natsfn_protocol::{BindingSpec, CodeSource, LambdaError, Runtime};

use crate::context::{Interpreters, NodeContext};
use crate::credentials::HandlerGrant;
use crate::package::{Lease, Resolved};

/// The bootstraps ship inside the binary and are written out once at node start-up.
const BOOTSTRAPS: [(&str, &str); 4] = [
    (
        "python3/bootstrap.py",
        include_str!("../../runtimes/python3/bootstrap.py"),
    ),
    (
        "python3/_natsfn_wire.py",
        include_str!("../../runtimes/python3/_natsfn_wire.py"),
    ),
    (
        "nodejs/bootstrap.js",
        include_str!("../../runtimes/nodejs/bootstrap.js"),
    ),
    (
        "nodejs/wire.js",
        include_str!("../../runtimes/nodejs/wire.js"),
    ),
];

/// Writes the bootstraps under `dir` (atomically per file, so concurrent nodes sharing
/// the directory never see half a file).
pub(crate) fn install_runtimes(dir: &Path) -> std::io::Result<()> {
    for (relative, source) in BOOTSTRAPS {
        let path = dir.join(relative);
        if std::fs::read_to_string(&path).is_ok_and(|existing| existing == source) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, source)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// The default place for the bootstraps: one directory per natsfn build.
pub(crate) fn default_runtime_dir() -> PathBuf {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (_, source) in BOOTSTRAPS {
        for b in source.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    std::env::temp_dir().join(format!("natsfn-runtimes-{hash:016x}"))
}

#[derive(Debug, Clone)]
pub(crate) struct LaunchPlan {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<PathBuf>,
    pub(crate) cwd: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    /// The worker is a `provided` one: its WorkerActor serves it the Lambda Runtime
    /// API instead of speaking frames on the private channel.
    pub(crate) runtime_api: bool,
    /// The binding's `nats`: each worker gets NATS credentials of its own.
    pub(crate) nats: Option<Arc<HandlerGrant>>,
    /// What a sandboxed worker reads (mounted read-only where it is): its code, its
    /// layers, the bootstraps, its runtime.
    pub(crate) reads: Vec<PathBuf>,
    /// The binding's `memory_mb`, `ephemeral_storage_mb` and `network`.
    pub(crate) memory_mb: u32,
    pub(crate) ephemeral_storage_mb: u32,
    pub(crate) network: natsfn_protocol::Network,
    /// The packages (code, layers) it runs stay unpacked while the plan lives.
    _packages: Vec<Arc<Lease>>,
}

/// PATH inside a worker: the interpreter's own directory, then the usual system ones.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `AWS_REGION` of a provided worker unless its binding's env says otherwise.
const DEFAULT_REGION: &str = "us-east-1";

impl LaunchPlan {
    /// Everything but the per-worker variables. An error is why the function cannot
    /// start at all (answered 503 and written to its status).
    pub(crate) fn for_spec(
        function: &str,
        version: &str,
        spec: &BindingSpec,
        code: Resolved,
        ctx: &NodeContext,
    ) -> Result<LaunchPlan, LambdaError> {
        let (runtime_dir, interpreters) = (&*ctx.runtime_dir, &*ctx.interpreters);
        let (credentials, sandboxed) = (ctx.credentials.as_ref(), ctx.sandbox.is_some());
        let nats = match (&spec.nats, credentials) {
            (None, _) => None,
            (Some(access), Some(issuer)) => Some(Arc::new(HandlerGrant {
                issuer: issuer.clone(),
                access: access.clone(),
            })),
            (Some(_), None) => {
                return Err(LambdaError::credentials_unavailable(
                    "nats: this node was started without --signing-key, so it cannot mint the handler's NATS credentials",
                ))
            }
        };
        let mut plan = Self::for_code(function, version, spec, &code, runtime_dir, interpreters)?;
        if sandboxed {
            // Mounted with its own mode: the function's uid must be able to enter it.
            if let Some(dir) = std::iter::once(&code.dir)
                .chain(&code.layers)
                .find(|dir| !crate::sandbox::readable_by_others(dir))
            {
                return Err(LambdaError::code_unavailable(format!(
                    "{}: the function runs as a uid of its own and cannot read it; make it readable by others (chmod o+rx), or run the node with --isolation none",
                    dir.display()
                )));
            }
            plan.reads.push(runtime_dir.to_owned());
            plan.reads.push(code.dir.clone());
            plan.reads.extend(code.layers.iter().cloned());
        }
        plan.memory_mb = spec.memory_mb;
        plan.ephemeral_storage_mb = spec.ephemeral_storage_mb;
        plan.network = spec.network;
        plan._packages = code.leases;
        plan.nats = nats;
        Ok(plan)
    }

    fn for_code(
        function: &str,
        version: &str,
        spec: &BindingSpec,
        code: &Resolved,
        runtime_dir: &Path,
        interpreters: &Interpreters,
    ) -> Result<LaunchPlan, LambdaError> {
        let cwd = code.dir.clone();
        if matches!(spec.code, CodeSource::Dir { .. }) && !cwd.is_dir() {
            return Err(LambdaError::code_unavailable(format!(
                "code.dir {}: not a directory on node",
                cwd.display()
            )));
        }
        let (interpreter, bootstrap, execution_env) = match spec.runtime {
            Runtime::Python3 => (&interpreters.python3, "python3/bootstrap.py", "python3"),
            Runtime::Nodejs => (&interpreters.node, "nodejs/bootstrap.js", "nodejs"),
            Runtime::Java | Runtime::Provided => {
                let plan = match spec.runtime {
                    Runtime::Java => Self::java,
                    _ => Self::provided,
                };
                return plan(
                    function,
                    version,
                    spec,
                    cwd,
                    &code.layers,
                    runtime_dir,
                    interpreters,
                );
            }
        };
        let Some(program) = interpreter.clone() else {
            return Err(LambdaError::invalid_entrypoint(format!(
                "runtime {}: its interpreter was not found on this node's PATH",
                spec.runtime.as_str()
            )));
        };
        let path = match program.parent() {
            Some(dir) => format!("{}:{SYSTEM_PATH}", dir.display()),
            None => SYSTEM_PATH.to_owned(),
        };
        let mut env = lambda_env(function, version, spec, &cwd, runtime_dir, path);
        layer_env(&mut env, &code.layers);
        env.push(("_HANDLER".into(), spec.handler.clone().unwrap_or_default()));
        env.push((
            "AWS_EXECUTION_ENV".into(),
            format!("AWS_Lambda_{execution_env}"),
        ));
        if spec.runtime == Runtime::Python3 {
            env.push(("PYTHONUNBUFFERED".into(), "1".into()));
            // The code directory is the user's: leave it as it was (Lambda's is read-only).
            env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        }
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let reads = interpreter_roots(&program);
        Ok(LaunchPlan {
            program,
            args: vec![runtime_dir.join(bootstrap)],
            cwd,
            env,
            runtime_api: false,
            nats: None,
            reads,
            memory_mb: spec.memory_mb,
            ephemeral_storage_mb: spec.ephemeral_storage_mb,
            network: spec.network,
            _packages: Vec::new(),
        })
    }

    /// The JVM running natsfn's Java bootstrap (built for the first java function, see java.rs).
    fn java(
        function: &str,
        version: &str,
        spec: &BindingSpec,
        cwd: PathBuf,
        layers: &[PathBuf],
        runtime_dir: &Path,
        interpreters: &Interpreters,
    ) -> Result<LaunchPlan, LambdaError> {
        let unavailable =
            |reason: &str| LambdaError::invalid_entrypoint(format!("runtime java: {reason}"));
        let jdk = interpreters.java.as_ref().map_err(|r| unavailable(r))?;
        let args = jdk
            .worker_args(spec.memory_mb)
            .map_err(|r| unavailable(&r))?;
        let path = match jdk.java.parent() {
            Some(dir) => format!("{}:{SYSTEM_PATH}", dir.display()),
            None => SYSTEM_PATH.to_owned(),
        };
        let mut env = lambda_env(function, version, spec, &cwd, runtime_dir, path);
        // The bootstrap puts each layer's `java/lib/` jars on the class path.
        layer_env(&mut env, layers);
        env.push(("_HANDLER".into(), spec.handler.clone().unwrap_or_default()));
        env.push((
            "AWS_EXECUTION_ENV".into(),
            format!("AWS_Lambda_java{}", jdk.version),
        ));
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(LaunchPlan {
            program: jdk.java.clone(),
            args: args.into_iter().map(PathBuf::from).collect(),
            cwd,
            env,
            runtime_api: false,
            nats: None,
            reads: jdk.sandbox_reads(),
            memory_mb: spec.memory_mb,
            ephemeral_storage_mb: spec.ephemeral_storage_mb,
            network: spec.network,
            _packages: Vec::new(),
        })
    }

    /// A custom runtime: the code directory's own `bootstrap`, with the environment
    /// Lambda gives one (`AWS_LAMBDA_RUNTIME_API` is added per worker).
    fn provided(
        function: &str,
        version: &str,
        spec: &BindingSpec,
        cwd: PathBuf,
        layers: &[PathBuf],
        runtime_dir: &Path,
        interpreters: &Interpreters,
    ) -> Result<LaunchPlan, LambdaError> {
        use std::os::unix::fs::PermissionsExt;
        let program = cwd.join("bootstrap");
        let executable = std::fs::metadata(&program)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            return Err(LambdaError::invalid_entrypoint(format!(
                "runtime provided: {} is missing or not executable",
                program.display()
            )));
        }
        let mut env = lambda_env(
            function,
            version,
            spec,
            &cwd,
            runtime_dir,
            SYSTEM_PATH.into(),
        );
        layer_env(&mut env, layers);
        // Runtime clients read it; a binding's env may name another.
        env.push(("AWS_REGION".into(), DEFAULT_REGION.into()));
        if let Some(handler) = &spec.handler {
            env.push(("_HANDLER".into(), handler.clone()));
        }
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(LaunchPlan {
            program,
            args: Vec::new(),
            cwd,
            env,
            runtime_api: true,
            nats: None,
            // The node's own runtimes, as Lambda's image has its: a bootstrap may run
            // python3 or node (awslambdaric, say).
            reads: [&interpreters.python3, &interpreters.node]
                .into_iter()
                .flatten()
                .flat_map(|program| interpreter_roots(program))
                .collect(),
            memory_mb: spec.memory_mb,
            ephemeral_storage_mb: spec.ephemeral_storage_mb,
            network: spec.network,
            _packages: Vec::new(),
        })
    }
}

/// The directory an interpreter was installed into (`<prefix>/bin/python3` ->
/// `<prefix>`), for the link and for where it leads (a virtualenv's python is a link).
fn interpreter_roots(program: &Path) -> Vec<PathBuf> {
    let real = std::fs::canonicalize(program).ok();
    std::iter::once(program)
        .chain(real.as_deref())
        .filter_map(|p| p.parent()?.parent().map(Path::to_path_buf))
        .collect()
}

/// Layers as Lambda's runtimes see `/opt`: `python/` on PYTHONPATH, `nodejs/node_modules/`
/// on NODE_PATH, `bin/` on PATH (a later layer before an earlier one, so it wins; the
/// code directory comes before them all, as the bootstraps put it), and every layer in
/// NATSFN_LAYERS, earliest first (where Java's `java/lib/` or a provided bootstrap's
/// `/opt` is looked for).
fn layer_env(env: &mut Vec<(String, String)>, layers: &[PathBuf]) {
    if layers.is_empty() {
        return;
    }
    let existing = |sub: &str| -> Vec<String> {
        layers
            .iter()
            .rev()
            .map(|layer| layer.join(sub))
            .filter(|dir| dir.is_dir())
            .map(|dir| dir.display().to_string())
            .collect()
    };
    let bin = existing("bin");
    if let Some((_, path)) = env.iter_mut().find(|(k, _)| k == "PATH") {
        if !bin.is_empty() {
            *path = format!("{}:{path}", bin.join(":"));
        }
    }
    for (var, sub) in [
        ("PYTHONPATH", "python"),
        ("NODE_PATH", "nodejs/node_modules"),
    ] {
        let dirs = existing(sub);
        if !dirs.is_empty() {
            env.push((var.into(), dirs.join(":")));
        }
    }
    let all: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
    env.push(("NATSFN_LAYERS".into(), all.join(":")));
}

/// The variables Lambda gives every runtime (the per-worker ones are added at spawn).
fn lambda_env(
    function: &str,
    version: &str,
    spec: &BindingSpec,
    cwd: &Path,
    runtime_dir: &Path,
    path: String,
) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), path),
        ("LANG".into(), "C.UTF-8".into()),
        ("TZ".into(), ":UTC".into()),
        ("LAMBDA_TASK_ROOT".into(), cwd.display().to_string()),
        (
            "LAMBDA_RUNTIME_DIR".into(),
            runtime_dir.display().to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), version.to_owned()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            spec.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME".into(),
            format!("/aws/lambda/{function}"),
        ),
    ]
}
