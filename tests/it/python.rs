//! The python3 runtime: handlers are called as AWS Lambda calls them (event, context),
//! results and errors come back in Lambda's shapes, and load failures are 503s with a
//! status that says why.

use serde_json::json;

use crate::harness::*;

fn spec(dir: &str, handler: &str) -> Binding {
    Binding::python(handler, dir).pool(1, 1)
}

#[tokio::test]
async fn the_context_carries_lambdas_fields() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        r#"
def handler(event, context):
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
    }
"#,
    )]);
    let spec = spec(&dir_str(code.path()), "app.handler")
        .memory_mb(256)
        .timeout_ms(3000);
    let revision = env.bind_ready("ctxpy", spec).await;

    let reply = env.invoke("ctxpy", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let ctx = json(&reply);
    assert_eq!(ctx["function_name"], "ctxpy");
    assert_eq!(ctx["function_version"], revision.to_string());
    let arn = ctx["invoked_function_arn"].as_str().unwrap_or_default();
    assert!(arn.ends_with(":function:ctxpy"), "{ctx}");
    // awslambdaric hands on the environment variable's string.
    assert_eq!(ctx["memory_limit_in_mb"], "256", "{ctx}");
    let request_id = header(&reply, "Natsfn-Request-Id").expect("Natsfn-Request-Id");
    assert_eq!(ctx["aws_request_id"], request_id.as_str());
    assert_eq!(ctx["log_group_name"], "/aws/lambda/ctxpy");
    let stream = ctx["log_stream_name"].as_str().unwrap_or_default();
    assert!(stream.contains(&format!("/[{revision}]")), "{ctx}");
    let remaining = ctx["remaining"].as_u64().expect("remaining is a number");
    assert!(remaining > 0 && remaining <= 3000, "{ctx}");
}

#[tokio::test]
async fn the_event_is_parsed_json_and_the_result_is_json() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        r#"
def echo(event, context):
    return {"type": type(event).__name__, "event": event}

def nothing(event, context):
    return None
"#,
    )]);
    let dir = dir_str(code.path());
    env.bind_ready("echopy", spec(&dir, "app.echo")).await;
    env.bind_ready("nonepy", spec(&dir, "app.nothing")).await;

    let event = json!({
        "name": "Zoë",
        "greeting": "こんにちは 👋",
        "nested": {"list": [1, 2.5, true, null, {"deep": "ü"}], "empty": {}}
    });
    let reply = env.invoke("echopy", event.to_string()).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"type": "dict", "event": event}));

    let reply = env.invoke("nonepy", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(&reply.payload[..], b"null");

    let reply = env.invoke("echopy", "").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"type": "dict", "event": {}}));
}

#[tokio::test]
async fn a_raised_exception_is_a_500_with_lambdas_error_body() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        r#"
def handler(event, context):
    raise ValueError("bad input")
"#,
    )]);
    env.bind_ready("raisespy", spec(&dir_str(code.path()), "app.handler"))
        .await;

    let reply = env.invoke("raisespy", "{}").await;
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
    assert_eq!(body["errorType"], "ValueError", "{body}");
    assert_eq!(body["errorMessage"], "bad input", "{body}");
    let trace = body["stackTrace"]
        .as_array()
        .expect("stackTrace is an array");
    assert!(!trace.is_empty(), "{body}");
    assert!(
        trace
            .iter()
            .any(|t| t.as_str().is_some_and(|t| t.contains("app.py"))),
        "{body}"
    );
}

#[tokio::test]
async fn a_custom_exception_class_is_the_error_type() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        r#"
class InsufficientFunds(Exception):
    pass

def handler(event, context):
    raise InsufficientFunds("balance is 0")
"#,
    )]);
    env.bind_ready("custompy", spec(&dir_str(code.path()), "app.handler"))
        .await;

    let reply = env.invoke("custompy", "{}").await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(
        header(&reply, "Natsfn-Function-Error").as_deref(),
        Some("Unhandled")
    );
    let body = json(&reply);
    assert_eq!(body["errorType"], "InsufficientFunds", "{body}");
    assert_eq!(body["errorMessage"], "balance is 0", "{body}");
}

#[tokio::test]
async fn a_nested_handler_path_names_a_module_in_a_package() {
    let env = Env::start().await;
    let code = code_dir(&[
        (
            "app.py",
            "def handler(event, context):\n    return 'top level'\n",
        ),
        (
            "pkg/mod.py",
            "def handler(event, context):\n    return {'from': __name__}\n",
        ),
    ]);
    env.bind_ready("nestedpy", spec(&dir_str(code.path()), "pkg/mod.handler"))
        .await;

    let reply = env.invoke("nestedpy", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"from": "pkg.mod"}));
}

#[tokio::test]
async fn module_state_persists_across_warm_invocations() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        r#"
counter = 0

def handler(event, context):
    global counter
    counter += 1
    return counter
"#,
    )]);
    env.bind_ready("counterpy", spec(&dir_str(code.path()), "app.handler"))
        .await;

    for expected in 1..=3 {
        let reply = env.invoke("counterpy", "{}").await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        assert_eq!(json(&reply), json!(expected));
    }
}

#[tokio::test]
async fn a_missing_module_is_an_import_module_error() {
    let code = code_dir(&[("app.py", "def handler(event, context):\n    return 1\n")]);
    assert_init_error(
        spec(&dir_str(code.path()), "missing.handler"),
        "Runtime.ImportModuleError",
        "Unable to import module 'missing': No module named 'missing'",
    )
    .await;
}

#[tokio::test]
async fn a_syntax_error_is_a_user_code_syntax_error() {
    let code = code_dir(&[("app.py", "def handler(event, context:\n    return 1\n")]);
    assert_init_error(
        spec(&dir_str(code.path()), "app.handler"),
        "Runtime.UserCodeSyntaxError",
        "Syntax error in module 'app': ",
    )
    .await;
}

#[tokio::test]
async fn a_missing_handler_function_is_handler_not_found() {
    let code = code_dir(&[("app.py", "def other(event, context):\n    return 1\n")]);
    assert_init_error(
        spec(&dir_str(code.path()), "app.handler"),
        "Runtime.HandlerNotFound",
        "Handler 'handler' missing on module 'app'",
    )
    .await;
}

#[tokio::test]
async fn a_payload_that_is_not_json_is_a_400_unmarshal_error() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", "def handler(event, context):\n    return event\n")]);
    env.bind_ready("rawpy", spec(&dir_str(code.path()), "app.handler"))
        .await;

    let reply = env.invoke("rawpy", "this is {not json").await;
    assert_eq!(error_code(&reply), Some(400), "{reply:?}");
    assert!(header(&reply, "Natsfn-Request-Id").is_some(), "{reply:?}");
    assert_eq!(json(&reply)["errorType"], "Runtime.UnmarshalError");

    // The worker is still good for the next event.
    let reply = env.invoke("rawpy", r#"{"ok":1}"#).await;
    assert_eq!(json(&reply), json!({"ok": 1}));
}

#[tokio::test]
async fn a_result_that_is_not_json_is_a_500_marshal_error() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    return {'tags': {'a', 'b'}}\n",
    )]);
    env.bind_ready("setpy", spec(&dir_str(code.path()), "app.handler"))
        .await;

    let reply = env.invoke("setpy", "{}").await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    let body = json(&reply);
    assert_eq!(body["errorType"], "Runtime.MarshalError", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("Unable to marshal response")),
        "{body}"
    );
}
