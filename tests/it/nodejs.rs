//! The nodejs runtime: async handlers, callback handlers and context.succeed/fail/done
//! behave as on AWS Lambda, errors come back in Lambda's shapes, and load failures are
//! 503s with a status that says why.

use serde_json::json;

use crate::harness::*;

fn spec(dir: &str, handler: &str) -> Binding {
    Binding::nodejs(handler, dir).pool(1, 1)
}

/// Binds `app.handler` over a directory holding `app.js` = `source`.
async fn bind_app(env: &Env, name: &str, source: &str) -> tempfile::TempDir {
    let code = code_dir(&[("app.js", source)]);
    env.bind_ready(name, spec(&dir_str(code.path()), "app.handler"))
        .await;
    code
}

#[tokio::test]
async fn an_async_handler_gets_lambdas_context() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.js",
        r#"
exports.handler = async (event, context) => ({
  functionName: context.functionName,
  functionVersion: context.functionVersion,
  invokedFunctionArn: context.invokedFunctionArn,
  memoryLimitInMB: context.memoryLimitInMB,
  awsRequestId: context.awsRequestId,
  logGroupName: context.logGroupName,
  logStreamName: context.logStreamName,
  remaining: context.getRemainingTimeInMillis(),
});
"#,
    )]);
    let spec = spec(&dir_str(code.path()), "app.handler")
        .memory_mb(256)
        .timeout_ms(3000);
    let revision = env.bind_ready("ctxjs", spec).await;

    let reply = env.invoke("ctxjs", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let ctx = json(&reply);
    assert_eq!(ctx["functionName"], "ctxjs");
    assert_eq!(ctx["functionVersion"], revision.to_string());
    let arn = ctx["invokedFunctionArn"].as_str().unwrap_or_default();
    assert!(arn.ends_with(":function:ctxjs"), "{ctx}");
    assert_eq!(ctx["memoryLimitInMB"], "256");
    let request_id = header(&reply, "Natsfn-Request-Id").expect("Natsfn-Request-Id");
    assert_eq!(ctx["awsRequestId"], request_id.as_str());
    assert_eq!(ctx["logGroupName"], "/aws/lambda/ctxjs");
    let stream = ctx["logStreamName"].as_str().unwrap_or_default();
    assert!(stream.contains(&format!("/[{revision}]")), "{ctx}");
    let remaining = ctx["remaining"].as_u64().expect("remaining is a number");
    assert!(remaining > 0 && remaining <= 3000, "{ctx}");
}

#[tokio::test]
async fn an_async_handlers_result_is_the_reply() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "asyncjs",
        "exports.handler = async (event) => ({ got: event, unicode: 'Zoë 👋' });",
    )
    .await;
    let reply = env.invoke("asyncjs", r#"{"a":{"b":[1,2,"ü"]}}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(
        json(&reply),
        json!({"got": {"a": {"b": [1, 2, "ü"]}}, "unicode": "Zoë 👋"})
    );
}

#[tokio::test]
async fn a_callback_handlers_result_is_the_reply() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "callbackjs",
        "exports.handler = (event, context, callback) => callback(null, { via: 'callback', event });",
    )
    .await;
    let reply = env.invoke("callbackjs", r#"{"n":1}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"via": "callback", "event": {"n": 1}}));
}

#[tokio::test]
async fn a_callback_error_is_a_500() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "cberrjs",
        "exports.handler = (event, context, callback) => callback(new Error('nope'));",
    )
    .await;
    let reply = env.invoke("cberrjs", "{}").await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(
        header(&reply, "Natsfn-Function-Error").as_deref(),
        Some("Unhandled")
    );
    assert!(header(&reply, "Natsfn-Request-Id").is_some(), "{reply:?}");
    let body = json(&reply);
    assert_eq!(body["errorType"], "Error", "{body}");
    assert_eq!(body["errorMessage"], "nope", "{body}");
    assert!(body["stackTrace"].is_array(), "{body}");
}

#[tokio::test]
async fn context_succeed_answers_with_its_result() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "succeedjs",
        "exports.handler = (event, context) => { context.succeed({ how: 'succeed' }); };",
    )
    .await;
    let reply = env.invoke("succeedjs", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"how": "succeed"}));
}

#[tokio::test]
async fn context_fail_answers_with_a_500() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "failjs",
        "exports.handler = (event, context) => { context.fail(new TypeError('t')); };",
    )
    .await;
    let reply = env.invoke("failjs", "{}").await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(
        header(&reply, "Natsfn-Function-Error").as_deref(),
        Some("Unhandled")
    );
    let body = json(&reply);
    assert_eq!(body["errorType"], "TypeError", "{body}");
    assert_eq!(body["errorMessage"], "t", "{body}");
}

#[tokio::test]
async fn context_done_answers_with_its_result() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "donejs",
        "exports.handler = (event, context) => { context.done(null, { how: 'done' }); };",
    )
    .await;
    let reply = env.invoke("donejs", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"how": "done"}));
}

#[tokio::test]
async fn an_async_handler_throwing_a_custom_error_class_names_it() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "myerrorjs",
        r#"
class MyError extends Error {
  constructor(m) {
    super(m);
    this.name = 'MyError';
  }
}
exports.handler = async () => {
  throw new MyError('mine');
};
"#,
    )
    .await;
    let reply = env.invoke("myerrorjs", "{}").await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(
        header(&reply, "Natsfn-Function-Error").as_deref(),
        Some("Unhandled")
    );
    let body = json(&reply);
    assert_eq!(body["errorType"], "MyError", "{body}");
    assert_eq!(body["errorMessage"], "mine", "{body}");
    let trace = body["stackTrace"]
        .as_array()
        .expect("stackTrace is an array");
    assert!(
        trace
            .iter()
            .any(|t| t.as_str().is_some_and(|t| t.contains("app.js"))),
        "{body}"
    );
}

#[tokio::test]
async fn a_callback_waits_for_the_event_loop_to_empty_by_default() {
    let env = Env::start().await;
    let _code = bind_app(
        &env,
        "waitjs",
        r#"
exports.handler = (event, context, callback) => {
  if (event.check) return callback(null, globalThis.ran === true);
  callback(null, 'first');
  setTimeout(() => { globalThis.ran = true; }, 100);
};
"#,
    )
    .await;
    let reply = env.invoke("waitjs", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!("first"));
    // One worker (pool max 1): the second invocation runs in the same process.
    let reply = env.invoke("waitjs", r#"{"check":true}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(
        json(&reply),
        json!(true),
        "the timer had not run before the first reply"
    );
}

#[tokio::test]
async fn an_mjs_module_handler_works() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.mjs",
        "export const handler = async (event) => ({ esm: typeof require === 'undefined', event });\n",
    )]);
    env.bind_ready("esmjs", spec(&dir_str(code.path()), "app.handler"))
        .await;
    let reply = env.invoke("esmjs", r#"{"x":1}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"esm": true, "event": {"x": 1}}));
}

#[tokio::test]
async fn a_missing_module_is_an_import_module_error() {
    let code = code_dir(&[("app.js", "exports.handler = async () => 1;\n")]);
    assert_init_error(
        spec(&dir_str(code.path()), "missing.handler"),
        "Runtime.ImportModuleError",
        "Unable to import module 'missing': ",
    )
    .await;
}

#[tokio::test]
async fn a_syntax_error_is_a_user_code_syntax_error() {
    let code = code_dir(&[("app.js", "exports.handler = async (event => 1;\n")]);
    assert_init_error(
        spec(&dir_str(code.path()), "app.handler"),
        "Runtime.UserCodeSyntaxError",
        "Syntax error in module 'app': ",
    )
    .await;
}

#[tokio::test]
async fn a_missing_handler_function_is_handler_not_found() {
    let code = code_dir(&[("app.js", "exports.other = async () => 1;\n")]);
    assert_init_error(
        spec(&dir_str(code.path()), "app.handler"),
        "Runtime.HandlerNotFound",
        "app.handler is undefined or not exported",
    )
    .await;
}
