//! One Lambda handler, four runtimes: every case here runs for python3, nodejs, java
//! and provided, and asserts the same behaviour of each (what AWS Lambda does): the
//! event arrives as sent and the result returns as JSON, the context carries Lambda's
//! fields, module state survives between warm invocations, an error the handler throws
//! is a 500 with Lambda's error body, a handler past its timeout is a 504, a worker
//! that dies is a 502 at once, and code or a handler that cannot be loaded is a 503
//! whose status says why.
//!
//! The table is [`PYTHON3`], [`NODEJS`], [`JAVA`] and [`PROVIDED`], a [`Fixture`] per
//! runtime: the one function every case binds (its code, its handler, and what the
//! runtime needs besides) and the names and words the runtime uses for what the cases
//! provoke; the modules at the end run every case for each of them. The function does what its event asks:
//! `{"fail": message}` throws `InsufficientFunds(message)`, `{"sleep": seconds}`
//! sleeps, `{"exit": true}` ends its process, `{"context": true}` answers with the
//! context's fields; any other event is echoed as `{"event", "worker", "count"}` (the
//! worker, by its AWS_LAMBDA_LOG_STREAM_NAME, and how many echoes it has answered). The `provided` row runs the python
//! function under AWS's own runtime interface client (awslambdaric, which scripts/test
//! installs) on the worker's Runtime API: Lambda's semantics from Lambda's own client.
//! Runtime-specific behaviour stays in the runtime's module (python, nodejs, java,
//! provided).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::harness::*;

/// A runtime's row of the table.
struct Fixture {
    /// Writes the function into a new code directory.
    code: fn() -> TempDir,
    /// The binding of the code in `dir` with `handler` (one worker).
    spec: fn(dir: &Path, handler: &str) -> Binding,
    /// The handler of the function.
    handler: &'static str,
    /// How the runtime names the function's `InsufficientFunds` in `errorType`.
    error_type: &'static str,
    /// A file the stack trace of that error names.
    trace_names: &'static str,
    /// The context's memory limit of a 256 MB function, as JSON (a string where the
    /// runtime's own API has one).
    memory_256: &'static str,
    /// A handler in a module / class that does not exist, with the init error's type and
    /// the start of its message.
    missing_code: (&'static str, &'static str, &'static str),
    /// A handler the function's module / class does not have, and its init error.
    missing_handler: (&'static str, &'static str, &'static str),
}

const PYTHON_APP: &str = r#"
import os
import time

count = 0


class InsufficientFunds(Exception):
    pass


def handler(event, context):
    global count
    if "fail" in event:
        raise InsufficientFunds(event["fail"])
    if "sleep" in event:
        time.sleep(event["sleep"])
    if "exit" in event:
        os._exit(3)
    if "context" in event:
        return {
            "request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "arn": context.invoked_function_arn,
            "memory": context.memory_limit_in_mb,
            "log_group": context.log_group_name,
            "log_stream": context.log_stream_name,
            "remaining": context.get_remaining_time_in_millis(),
        }
    count += 1
    return {"event": event, "worker": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"], "count": count}
"#;

const PYTHON3: Fixture = Fixture {
    code: || code_dir(&[("app.py", PYTHON_APP)]),
    spec: |dir, handler| Binding::python(handler, dir).pool(1, 1),
    handler: "app.handler",
    error_type: "InsufficientFunds",
    trace_names: "app.py",
    // awslambdaric hands on the environment variable's string; so does natsfn.
    memory_256: r#""256""#,
    missing_code: (
        "missing.handler",
        "Runtime.ImportModuleError",
        "Unable to import module 'missing': No module named 'missing'",
    ),
    missing_handler: (
        "app.nope",
        "Runtime.HandlerNotFound",
        "Handler 'nope' missing on module 'app'",
    ),
};

const NODE_APP: &str = r#"
const { setTimeout: sleep } = require('timers/promises');

class InsufficientFunds extends Error {
  constructor(message) {
    super(message);
    this.name = 'InsufficientFunds';
  }
}

let count = 0;

exports.handler = async (event, context) => {
  if ('fail' in event) throw new InsufficientFunds(event.fail);
  if ('sleep' in event) await sleep(event.sleep * 1000);
  if ('exit' in event) process.exit(3);
  if ('context' in event) {
    return {
      request_id: context.awsRequestId,
      function_name: context.functionName,
      function_version: context.functionVersion,
      arn: context.invokedFunctionArn,
      memory: context.memoryLimitInMB,
      log_group: context.logGroupName,
      log_stream: context.logStreamName,
      remaining: context.getRemainingTimeInMillis(),
    };
  }
  count += 1;
  return { event, worker: process.env.AWS_LAMBDA_LOG_STREAM_NAME, count };
};
"#;

const NODEJS: Fixture = Fixture {
    code: || code_dir(&[("app.js", NODE_APP)]),
    spec: |dir, handler| Binding::nodejs(handler, dir).pool(1, 1),
    handler: "app.handler",
    error_type: "InsufficientFunds",
    trace_names: "app.js",
    memory_256: r#""256""#,
    missing_code: (
        "missing.handler",
        "Runtime.ImportModuleError",
        "Unable to import module 'missing': ",
    ),
    missing_handler: (
        "app.nope",
        "Runtime.HandlerNotFound",
        "app.nope is undefined or not exported",
    ),
};

const JAVA_APP: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

public class Conformance implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    private static int count = 0;

    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        if (event.containsKey("fail")) {
            throw new InsufficientFunds(String.valueOf(event.get("fail")));
        }
        if (event.containsKey("sleep")) {
            try {
                Thread.sleep((long) (((Number) event.get("sleep")).doubleValue() * 1000));
            } catch (InterruptedException e) {
                throw new RuntimeException(e);
            }
        }
        if (event.containsKey("exit")) {
            System.exit(3);
        }
        Map<String, Object> out = new LinkedHashMap<>();
        if (event.containsKey("context")) {
            out.put("request_id", context.getAwsRequestId());
            out.put("function_name", context.getFunctionName());
            out.put("function_version", context.getFunctionVersion());
            out.put("arn", context.getInvokedFunctionArn());
            out.put("memory", context.getMemoryLimitInMB());
            out.put("log_group", context.getLogGroupName());
            out.put("log_stream", context.getLogStreamName());
            out.put("remaining", context.getRemainingTimeInMillis());
            return out;
        }
        count += 1;
        out.put("event", event);
        out.put("worker", System.getenv("AWS_LAMBDA_LOG_STREAM_NAME"));
        out.put("count", count);
        return out;
    }
}
"#;

const JAVA_ERROR: &str = r#"
package example;

public class InsufficientFunds extends RuntimeException {
    public InsufficientFunds(String message) {
        super(message);
    }
}
"#;

const JAVA: Fixture = Fixture {
    code: || {
        let code = tempfile::tempdir().expect("temp dir");
        crate::java::javac(
            &[
                ("example/Conformance.java", JAVA_APP),
                ("example/InsufficientFunds.java", JAVA_ERROR),
            ],
            code.path(),
            false,
        );
        code
    },
    spec: |dir, handler| Binding::java(handler, dir).timeout_ms(10_000).pool(1, 1),
    handler: "example.Conformance",
    error_type: "example.InsufficientFunds",
    trace_names: "Conformance.java",
    memory_256: "256",
    missing_code: (
        "example.Missing",
        "java.lang.ClassNotFoundException",
        "Class not found: example.Missing",
    ),
    missing_handler: (
        "example.Conformance::nope",
        "Runtime.HandlerNotFound",
        "No public method named nope with appropriate method signature found on class example.Conformance",
    ),
};

/// awslambdaric runs the handler `_HANDLER` names.
const RIC_BOOTSTRAP: &str = "#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n";

const PROVIDED: Fixture = Fixture {
    code: || {
        let code = code_dir(&[("bootstrap", RIC_BOOTSTRAP), ("app.py", PYTHON_APP)]);
        std::fs::set_permissions(
            code.path().join("bootstrap"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod bootstrap");
        code
    },
    spec: |dir, handler| {
        // The interpreter awslambdaric is installed for, first on the worker's PATH.
        let python = crate::provided::python3();
        let bin = python.parent().expect("python's directory");
        Binding::provided(dir)
            .handler(handler)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .pool(1, 1)
    },
    handler: "app.handler",
    // awslambdaric sends no error-type header: the body's errorType is the one.
    error_type: "InsufficientFunds",
    trace_names: "app.py",
    memory_256: r#""256""#,
    missing_code: (
        "missing.handler",
        "Runtime.ImportModuleError",
        "Unable to import module 'missing': No module named 'missing'",
    ),
    missing_handler: (
        "app.nope",
        "Runtime.HandlerNotFound",
        "Handler 'nope' missing on module 'app'",
    ),
};

/// Every case for one runtime's fixture: `conformance::<runtime>::<case>`.
macro_rules! cases {
    ($fixture:expr) => {
        #[tokio::test]
        async fn the_event_arrives_as_sent_and_the_result_returns_as_json() {
            super::the_event_arrives_as_sent_and_the_result_returns_as_json(&$fixture).await;
        }

        #[tokio::test]
        async fn the_context_carries_lambdas_fields() {
            super::the_context_carries_lambdas_fields(&$fixture).await;
        }

        #[tokio::test]
        async fn module_state_persists_across_warm_invocations() {
            super::module_state_persists_across_warm_invocations(&$fixture).await;
        }

        #[tokio::test]
        async fn a_thrown_error_is_a_500_with_lambdas_error_body() {
            super::a_thrown_error_is_a_500_with_lambdas_error_body(&$fixture).await;
        }

        #[tokio::test]
        async fn a_handler_past_its_timeout_is_a_504_and_a_new_worker_serves_the_next() {
            super::a_handler_past_its_timeout_is_a_504_and_a_new_worker_serves_the_next(&$fixture)
                .await;
        }

        #[tokio::test]
        async fn a_worker_that_exits_is_a_502_at_once_and_a_new_worker_serves_the_next() {
            super::a_worker_that_exits_is_a_502_at_once_and_a_new_worker_serves_the_next(&$fixture)
                .await;
        }

        #[tokio::test]
        async fn code_that_does_not_exist_is_a_503_and_the_status_says_why() {
            super::code_that_does_not_exist_is_a_503_and_the_status_says_why(&$fixture).await;
        }

        #[tokio::test]
        async fn a_handler_the_code_lacks_is_a_503_handler_not_found() {
            super::a_handler_the_code_lacks_is_a_503_handler_not_found(&$fixture).await;
        }
    };
}

mod python3 {
    cases!(super::PYTHON3);
}

mod nodejs {
    cases!(super::NODEJS);
}

mod java {
    cases!(super::JAVA);
}

mod provided {
    cases!(super::PROVIDED);
}

/// The fixture's function bound (and ready) as `name` with its handler, its binding
/// completed by `spec`: the code directory (to keep while the binding is used) and
/// the binding's revision.
async fn bind(
    env: &Env,
    fixture: &Fixture,
    name: &str,
    spec: impl FnOnce(Binding) -> Binding,
) -> (TempDir, u64) {
    let code = (fixture.code)();
    let revision = env
        .bind_ready(name, spec((fixture.spec)(code.path(), fixture.handler)))
        .await;
    (code, revision)
}

/// The worker that answered: its AWS_LAMBDA_LOG_STREAM_NAME (its pid is its
/// sandbox's own, the same in every worker).
fn worker_of(reply: &async_nats::Message) -> String {
    assert_eq!(error_code(reply), None, "{reply:?}");
    json(reply)["worker"]
        .as_str()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| panic!("no worker in {}", json(reply)))
        .to_owned()
}

async fn the_event_arrives_as_sent_and_the_result_returns_as_json(fixture: &Fixture) {
    let env = Env::start().await;
    let (_code, _) = bind(&env, fixture, "echo", |b| b).await;

    let event = json!({
        "name": "Zoë",
        "greeting": "こんにちは 👋",
        "nested": {"list": [1, 2.5, true, null, {"deep": "ü"}], "empty": {}}
    });
    let reply = env.invoke("echo", event.to_string()).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    // Embedded in the result as the same JSON: the handler got it parsed, as an object.
    let out = json(&reply);
    assert_eq!(out["event"], event, "{out}");
    assert!(
        out["worker"].as_str().is_some_and(|w| !w.is_empty()) && out["count"] == 1,
        "{out}"
    );
}

async fn the_context_carries_lambdas_fields(fixture: &Fixture) {
    let env = Env::start().await;
    let (_code, _revision) =
        bind(&env, fixture, "ctx", |b| b.memory_mb(256).timeout_ms(3000)).await;

    let reply = env.invoke("ctx", r#"{"context": true}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let ctx = json(&reply);
    assert_eq!(ctx["function_name"], "ctx", "{ctx}");
    assert_eq!(
        ctx["function_version"], "$LATEST",
        "the binding as edited: {ctx}"
    );
    let arn = ctx["arn"].as_str().unwrap_or_default();
    assert!(arn.ends_with(":function:ctx"), "{ctx}");
    let memory: Value = serde_json::from_str(fixture.memory_256).expect("memory_256 is JSON");
    assert_eq!(ctx["memory"], memory, "{ctx}");
    let request_id = header(&reply, "Natsfn-Request-Id").expect("Natsfn-Request-Id");
    assert_eq!(ctx["request_id"], request_id.as_str(), "{ctx}");
    assert_eq!(ctx["log_group"], "/aws/lambda/ctx", "{ctx}");
    let stream = ctx["log_stream"].as_str().unwrap_or_default();
    assert!(stream.contains("/[$LATEST]"), "{ctx}");
    let remaining = ctx["remaining"].as_u64().expect("remaining is a number");
    assert!(remaining > 0 && remaining <= 3000, "{ctx}");
}

async fn module_state_persists_across_warm_invocations(fixture: &Fixture) {
    let env = Env::start().await;
    let (_code, _) = bind(&env, fixture, "counter", |b| b).await;

    let mut workers = Vec::new();
    for expected in 1..=3 {
        let reply = env.invoke("counter", "{}").await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        assert_eq!(json(&reply)["count"], expected, "{:?}", json(&reply));
        workers.push(worker_of(&reply));
    }
    assert!(
        workers.windows(2).all(|w| w[0] == w[1]),
        "one worker: {workers:?}"
    );
}

async fn a_thrown_error_is_a_500_with_lambdas_error_body(fixture: &Fixture) {
    let env = Env::start().await;
    let (_code, _) = bind(&env, fixture, "raises", |b| b).await;

    let reply = env.invoke("raises", r#"{"fail": "balance is 0"}"#).await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(
        header(&reply, "Natsfn-Function-Error").as_deref(),
        Some("Unhandled")
    );
    assert!(
        header(&reply, "Natsfn-Request-Id").is_some_and(|id| !id.is_empty()),
        "{reply:?}"
    );
    assert!(header(&reply, "Nats-Service-Error").is_some(), "{reply:?}");
    let body = json(&reply);
    assert_eq!(body["errorType"], fixture.error_type, "{body}");
    assert_eq!(body["errorMessage"], "balance is 0", "{body}");
    let trace = body["stackTrace"]
        .as_array()
        .expect("stackTrace is an array");
    assert!(
        trace
            .iter()
            .any(|t| t.as_str().is_some_and(|t| t.contains(fixture.trace_names))),
        "the trace names {}: {body}",
        fixture.trace_names
    );
}

async fn a_handler_past_its_timeout_is_a_504_and_a_new_worker_serves_the_next(fixture: &Fixture) {
    let env = Env::start().await;
    let (_code, _) = bind(&env, fixture, "slow", |b| b.timeout_ms(1000)).await;
    let before = worker_of(&env.invoke("slow", "{}").await);

    let reply = env.invoke("slow", r#"{"sleep": 30}"#).await;
    assert_eq!(error_code(&reply), Some(504), "{reply:?}");
    assert!(header(&reply, "Natsfn-Request-Id").is_some(), "{reply:?}");
    let body = json(&reply);
    assert_eq!(body["errorType"], "Sandbox.Timedout", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("1.00 seconds"),
        "{body}"
    );

    let after = worker_of(&env.invoke("slow", "{}").await);
    assert_ne!(after, before, "a timed-out worker is replaced");
}

async fn a_worker_that_exits_is_a_502_at_once_and_a_new_worker_serves_the_next(fixture: &Fixture) {
    let env = Env::start().await;
    // Far beyond the harness's deadline: a 502 that waited for it would not arrive.
    let (_code, _) = bind(&env, fixture, "crashy", |b| b.timeout_ms(600_000)).await;
    let before = worker_of(&env.invoke("crashy", "{}").await);

    let started = Instant::now();
    let reply = env.invoke("crashy", r#"{"exit": true}"#).await;
    let took = started.elapsed();
    assert_eq!(error_code(&reply), Some(502), "{reply:?}");
    assert_eq!(json(&reply)["errorType"], "Runtime.ExitError");
    assert!(
        took < Duration::from_secs(1),
        "the exit was answered after {took:?}, not at once"
    );

    let after = worker_of(&env.invoke("crashy", "{}").await);
    assert_ne!(after, before, "a new process answers");
}

async fn code_that_does_not_exist_is_a_503_and_the_status_says_why(fixture: &Fixture) {
    let code = (fixture.code)();
    let (handler, error_type, message) = fixture.missing_code;
    assert_init_error((fixture.spec)(code.path(), handler), error_type, message).await;
}

async fn a_handler_the_code_lacks_is_a_503_handler_not_found(fixture: &Fixture) {
    let code = (fixture.code)();
    let (handler, error_type, message) = fixture.missing_handler;
    assert_eq!(error_type, "Runtime.HandlerNotFound");
    assert_init_error((fixture.spec)(code.path(), handler), error_type, message).await;
}
