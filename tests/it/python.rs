//! The python3 runtime: handlers are called as AWS Lambda calls them (event, context),
//! results and errors come back in Lambda's shapes, and load failures are 503s with a
//! status that says why. What every runtime does alike (the context, errors, timeouts,
//! a missing module or handler, ...) is in conformance; here what is python's own.

use serde_json::json;

use crate::harness::*;

fn spec(dir: &str, handler: &str) -> Binding {
    Binding::python(handler, dir).pool(1, 1)
}

#[tokio::test]
async fn the_event_is_a_dict_none_is_null_and_no_payload_is_an_empty_event() {
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

    let event = json!({"list": [1, 2.5, true, null], "text": "ü"});
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
