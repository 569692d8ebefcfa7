//! The java runtime: handlers written for AWS Lambda's Java runtime (RequestHandler,
//! RequestStreamHandler, `Class::method`), compiled here with the JDK's javac against
//! natsfn's own aws-lambda-java-core interfaces, run over NATS unchanged. What every
//! runtime does alike (a Map handler's event, result and context, a thrown exception,
//! timeouts, System.exit, a missing class or method, ...) is in conformance; here what
//! is Java's own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::harness::*;

/// A tool of the JDK the node uses (`NATSFN_JAVA`'s directory, else the one of `java`
/// on PATH); a missing JDK fails the test.
pub(crate) fn jdk_tool(name: &str) -> PathBuf {
    let java = std::env::var("NATSFN_JAVA").unwrap_or_else(|_| "java".into());
    let java = if java.contains('/') {
        PathBuf::from(java)
    } else {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(&java))
            .find(|p| p.is_file())
            .expect("a JDK 17+ (java on PATH) is needed by the java tests")
    };
    let real = std::fs::canonicalize(&java).expect("java resolves");
    let tool = real.parent().expect("java's bin dir").join(name);
    assert!(
        tool.is_file(),
        "{} not found: a JDK is needed",
        tool.display()
    );
    tool
}

/// natsfn's interfaces (runtimes/java), the class path handlers compile against.
fn interfaces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/java")
}

pub(crate) fn run(command: &mut Command) {
    let out = command.output().expect("run a JDK tool");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `sources` (path, text) into `out`. `bundle`: the aws-lambda-java-core
/// classes they use are compiled into `out` too, as a shaded jar would carry them.
pub(crate) fn javac(sources: &[(&str, &str)], out: &Path, bundle: bool) {
    let src = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(jdk_tool("javac"));
    command
        .args(["--release", "17", "-encoding", "UTF-8", "-sourcepath"])
        .arg(interfaces())
        .arg("-d")
        .arg(out);
    if !bundle {
        command.arg("-implicit:none");
    }
    for (path, text) in sources {
        let file = src.path().join(path);
        std::fs::create_dir_all(file.parent().expect("dir")).expect("src dir");
        std::fs::write(&file, text).expect("write source");
        command.arg(file);
    }
    run(&mut command);
}

/// A code directory holding the compiled classes of `sources`.
fn classes(sources: &[(&str, &str)]) -> TempDir {
    let code = tempfile::tempdir().expect("temp dir");
    javac(sources, code.path(), false);
    code
}

fn spec(code: &Path, handler: &str) -> Binding {
    Binding::java(handler, code).timeout_ms(10000).pool(1, 1)
}

const MAP_HANDLER: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

public class Echo implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("event", event);
        out.put("identity", context.getIdentity());
        out.put("env", System.getenv("AWS_EXECUTION_ENV"));
        return out;
    }
}
"#;

#[tokio::test]
async fn null_properties_are_left_out_and_the_execution_env_names_the_jdk() {
    let env = Env::start().await;
    let code = classes(&[("example/Echo.java", MAP_HANDLER)]);
    env.bind_ready("echojava", spec(code.path(), "example.Echo"))
        .await;

    let reply = env.invoke("echojava", r#"{"a":{"b":[1,null]}}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let out = json(&reply);
    assert_eq!(out["event"], json!({"a": {"b": [1, null]}}));
    // Null properties are left out, as Lambda's serializer leaves them.
    assert!(out.get("identity").is_none(), "{out}");
    assert_eq!(out["env"], "AWS_Lambda_java17".replace("17", &java_major()));
}

/// The major version of the JDK the tests (and so the node) use.
fn java_major() -> String {
    let release = jdk_tool("java")
        .parent()
        .and_then(Path::parent)
        .map(|home| home.join("release"))
        .expect("JDK home");
    let text = std::fs::read_to_string(release).expect("the JDK's release file");
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("JAVA_VERSION="))
        .expect("JAVA_VERSION")
        .trim_matches('"');
    version.split('.').next().unwrap_or(version).to_owned()
}

const POJO_HANDLER: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.List;

public class Orders implements RequestHandler<Orders.Order, Orders.Receipt> {
    public static class Order {
        private String customer;
        private int quantity;
        private List<String> items;
        public String getCustomer() { return customer; }
        public void setCustomer(String customer) { this.customer = customer; }
        public int getQuantity() { return quantity; }
        public void setQuantity(int quantity) { this.quantity = quantity; }
        public List<String> getItems() { return items; }
        public void setItems(List<String> items) { this.items = items; }
    }

    public static class Receipt {
        private final String message;
        private final int count;
        private final String note;
        Receipt(String message, int count, String note) {
            this.message = message;
            this.count = count;
            this.note = note;
        }
        public String getMessage() { return message; }
        public int getCount() { return count; }
        public String getNote() { return note; }
        public boolean isBig() { return count > 2; }
    }

    @Override
    public Receipt handleRequest(Order order, Context context) {
        return new Receipt(order.getCustomer() + " x" + order.getQuantity(), order.getItems().size(), null);
    }
}
"#;

#[tokio::test]
async fn a_pojo_handler_gets_a_bean_and_answers_one() {
    let env = Env::start().await;
    let code = classes(&[("example/Orders.java", POJO_HANDLER)]);
    env.bind_ready("pojojava", spec(code.path(), "example.Orders"))
        .await;
    // An unknown property is ignored, as by Lambda's serializer.
    let reply = env
        .invoke(
            "pojojava",
            r#"{"customer":"Ada","quantity":3,"items":["a","b","c"],"unknown":1}"#,
        )
        .await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(
        json(&reply),
        json!({"message": "Ada x3", "count": 3, "big": true})
    );
    let wrong = env.invoke("pojojava", r#"{"quantity":"many"}"#).await;
    assert_eq!(error_code(&wrong), Some(500), "{wrong:?}");
    let body = json(&wrong);
    assert_eq!(body["errorType"], "java.lang.RuntimeException", "{body}");
    assert_eq!(
        body["errorMessage"],
        "An error occurred during JSON parsing"
    );
}

const STREAM_HANDLER: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

public class Upper implements RequestStreamHandler {
    @Override
    public void handleRequest(InputStream in, OutputStream out, Context context) throws IOException {
        byte[] raw = in.readAllBytes();
        String text = new String(raw, StandardCharsets.UTF_8).toUpperCase();
        out.write((text + " " + raw.length + " " + context.getFunctionName()).getBytes(StandardCharsets.UTF_8));
    }
}
"#;

#[tokio::test]
async fn a_stream_handler_gets_the_raw_bytes_and_its_output_is_the_reply() {
    let env = Env::start().await;
    let code = classes(&[("example/Upper.java", STREAM_HANDLER)]);
    env.bind_ready("streamjava", spec(code.path(), "example.Upper"))
        .await;
    // Not JSON: a stream handler reads bytes, nothing parses them.
    let reply = env.invoke("streamjava", "plain text, not json").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(&reply.payload[..], b"PLAIN TEXT, NOT JSON 20 streamjava");
}

const METHOD_HANDLERS: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import java.util.Map;

public class Methods {
    private final String greeting = "Hello";

    public String greet(String name, Context context) {
        return greeting + ", " + name + " (" + context.getFunctionName() + " " + context.getAwsRequestId() + ")";
    }

    public static int count(Map<String, Object> event) {
        return event.size();
    }
}
"#;

#[tokio::test]
async fn a_class_and_method_handler_is_called_with_the_event_and_context() {
    let env = Env::start().await;
    let code = classes(&[("example/Methods.java", METHOD_HANDLERS)]);
    env.bind_ready("greetjava", spec(code.path(), "example.Methods::greet"))
        .await;
    env.bind_ready("countjava", spec(code.path(), "example.Methods::count"))
        .await;
    let reply = env.invoke("greetjava", r#""Ada""#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let id = header(&reply, "Natsfn-Request-Id").expect("request id");
    assert_eq!(json(&reply), json!(format!("Hello, Ada (greetjava {id})")));
    let reply = env.invoke("countjava", r#"{"a":1,"b":2,"c":3}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!(3));
}

const THROWS: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.Map;

public class Throws implements RequestHandler<Map<String, Object>, String> {
    public static class OrderRejected extends RuntimeException {
        public OrderRejected(String message) { super(message); }
    }

    @Override
    public String handleRequest(Map<String, Object> event, Context context) {
        System.out.println("to stdout " + context.getAwsRequestId());
        System.err.println("to stderr");
        context.getLogger().log("through LambdaLogger");
        check(event);
        return "fine";
    }

    private static void check(Map<String, Object> event) {
        throw new OrderRejected("no stock for " + event.get("item"));
    }
}
"#;

#[tokio::test]
async fn an_exception_is_a_500_named_by_its_class_and_its_output_reaches_the_logs() {
    let env = Env::start().await;
    let code = classes(&[("example/Throws.java", THROWS)]);
    env.bind_ready("throwsjava", spec(code.path(), "example.Throws"))
        .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.throwsjava")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");

    let reply = env.invoke("throwsjava", r#"{"item":"tea"}"#).await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(
        header(&reply, "Natsfn-Function-Error").as_deref(),
        Some("Unhandled")
    );
    let id = header(&reply, "Natsfn-Request-Id").expect("request id");
    let body = json(&reply);
    assert_eq!(body["errorType"], "example.Throws$OrderRejected", "{body}");
    assert_eq!(body["errorMessage"], "no stock for tea", "{body}");
    let trace: Vec<&str> = body["stackTrace"]
        .as_array()
        .expect("stackTrace")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Lambda's form: the user's frames, `Class.method(File.java:line)`, none of the runtime's.
    assert!(
        trace[0].starts_with("example.Throws.check(Throws.java:"),
        "{trace:?}"
    );
    assert!(
        trace[1].starts_with("example.Throws.handleRequest(Throws.java:"),
        "{trace:?}"
    );
    assert!(
        !trace.iter().any(|t| t.contains("natsfn.runtime")),
        "{trace:?}"
    );

    let mut seen = Vec::new();
    let wanted = [
        ("stdout".to_owned(), format!("to stdout {id}")),
        ("stderr".to_owned(), "to stderr".to_owned()),
        ("stdout".to_owned(), "through LambdaLogger".to_owned()),
    ];
    while !wanted.iter().all(|w| seen.contains(w)) {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .unwrap_or_else(|_| panic!("log lines so far: {seen:?}"))
            .expect("log stream");
        assert_eq!(
            header(&msg, "Natsfn-Request-Id").as_deref(),
            Some(id.as_str())
        );
        let stream = header(&msg, "Natsfn-Log-Stream").unwrap_or_default();
        seen.push((stream, String::from_utf8_lossy(&msg.payload).into_owned()));
    }
}

#[tokio::test]
async fn a_constructor_that_throws_is_a_503_named_by_the_exception() {
    let code = classes(&[(
        "example/Broken.java",
        r#"
package example;
public class Broken implements com.amazonaws.services.lambda.runtime.RequestHandler<String, String> {
    public Broken() { throw new IllegalStateException("no config"); }
    public String handleRequest(String in, com.amazonaws.services.lambda.runtime.Context c) { return in; }
}
"#,
    )]);
    assert_init_error(
        spec(code.path(), "example.Broken"),
        "java.lang.IllegalStateException",
        "no config",
    )
    .await;
}

const HANGS: &str = r#"
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.Map;

public class Moody implements RequestHandler<Map<String, Object>, Long> {
    @Override
    public Long handleRequest(Map<String, Object> event, Context context) {
        if (event.containsKey("hang")) {
            try {
                // Marked with a variable of its own: the JVM's pids are its sandbox's.
                String family = java.util.UUID.randomUUID().toString();
                ProcessBuilder sleep = new ProcessBuilder("sleep", "100");
                sleep.environment().put("FAMILY", family);
                Process child = sleep.start();
                String stat = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/self/stat"));
                String started = stat.substring(stat.lastIndexOf(')') + 2).split(" ")[19];
                System.out.println("family " + family + " worker " + System.getenv("AWS_LAMBDA_LOG_STREAM_NAME") + " started " + started);
                Thread.sleep(100_000);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }
        return ProcessHandle.current().pid();
    }
}
"#;

#[tokio::test]
async fn a_timeout_is_a_504_and_kills_the_jvm_with_its_children() {
    let env = Env::start().await;
    let code = classes(&[("example/Moody.java", HANGS)]);
    let spec = spec(code.path(), "example.Moody").timeout_ms(1000);
    env.bind_ready("hangjava", spec).await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.hangjava")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");

    let started = Instant::now();
    let reply = env.invoke("hangjava", r#"{"hang":true}"#).await;
    assert_eq!(error_code(&reply), Some(504), "{reply:?}");
    assert_eq!(json(&reply)["errorType"], "Sandbox.Timedout");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The JVM's pids are its sandbox's: it is known by its log stream and start time,
    // its child by its FAMILY.
    let line: String = loop {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .expect("the family's log line")
            .expect("log stream");
        let text = String::from_utf8_lossy(&msg.payload).into_owned();
        if text.starts_with("family ") {
            break text;
        }
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, family, _, worker, _, started] = words[..] else {
        panic!("not a family line: {line}");
    };
    let started = Some(started.parse().expect("start time"));
    let child = format!("FAMILY={family}");
    eventually("the JVM and its child gone", || async {
        (env.node.worker_pid_of(worker, started).is_none() && processes_with_env(&child).is_empty())
            .then_some(())
    })
    .await;
}

const FROM_A_JAR: &str = r#"
package com.example.orders;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.Map;

public class Handler implements RequestHandler<Map<String, String>, String> {
    @Override
    public String handleRequest(Map<String, String> event, Context context) {
        return "from a jar: " + event.get("x") + " in " + context.getMemoryLimitInMB() + " MB";
    }
}
"#;

#[tokio::test]
async fn a_jar_in_lib_is_on_the_class_path_even_when_it_bundles_the_interfaces() {
    let env = Env::start().await;
    // A shaded jar as Maven builds one: the handler and the aws-lambda-java-core classes.
    let build = tempfile::tempdir().expect("temp dir");
    javac(
        &[("com/example/orders/Handler.java", FROM_A_JAR)],
        build.path(),
        true,
    );
    assert!(build
        .path()
        .join("com/amazonaws/services/lambda/runtime/Context.class")
        .is_file());
    let code = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(code.path().join("lib")).expect("lib");
    run(Command::new(jdk_tool("jar"))
        .arg("--create")
        .arg("--file")
        .arg(code.path().join("lib/orders.jar"))
        .arg("-C")
        .arg(build.path())
        .arg("."));
    let spec = spec(code.path(), "com.example.orders.Handler").memory_mb(128);
    env.bind_ready("jarjava", spec).await;
    let reply = env.invoke("jarjava", r#"{"x":"y"}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!("from a jar: y in 128 MB"));
}

#[tokio::test]
async fn a_java_function_runs_in_128_mb_and_past_its_memory_is_stopped() {
    let env = Env::start().await;
    let code = classes(&[(
        "example/Hog.java",
        r#"
package example;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
public class Hog implements com.amazonaws.services.lambda.runtime.RequestHandler<Map<String, Integer>, Integer> {
    private static final List<byte[]> kept = new ArrayList<>();
    public Integer handleRequest(Map<String, Integer> event, com.amazonaws.services.lambda.runtime.Context c) {
        for (int i = 0; i < event.getOrDefault("mb", 0); i++) {
            byte[] mb = new byte[1024 * 1024];
            java.util.Arrays.fill(mb, (byte) 1);
            kept.add(mb);
        }
        return kept.size();
    }
}
"#,
    )]);
    let spec = spec(code.path(), "example.Hog").memory_mb(128);
    env.bind_ready("hogjava", spec).await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.hogjava")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");

    let reply = env.invoke("hogjava", r#"{"mb":0}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let used = loop {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .expect("REPORT line")
            .expect("log stream");
        let text = String::from_utf8_lossy(&msg.payload).into_owned();
        if let Some((_, used)) = text.split_once("Max Memory Used: ") {
            break used
                .trim_end_matches(" MB")
                .trim()
                .parse::<u64>()
                .expect("MB");
        }
    };
    assert!(used < 128, "the JVM uses {used} MB of its 128");

    // Past what 128 MB holds: the heap limit (85 %) or the resident limit stops it.
    let reply = env.invoke("hogjava", r#"{"mb":400}"#).await;
    let code_and_type = (error_code(&reply), json(&reply)["errorType"].clone());
    assert!(
        code_and_type == (Some(502), json!("Runtime.OutOfMemory"))
            || code_and_type == (Some(500), json!("java.lang.OutOfMemoryError")),
        "{code_and_type:?}"
    );
}
