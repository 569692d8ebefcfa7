//! The nodejs runtime: async handlers, callback handlers and context.succeed/fail/done
//! behave as on AWS Lambda, errors come back in Lambda's shapes, and load failures are
//! 503s with a status that says why. What every runtime does alike (an async handler's
//! context, result and thrown error, timeouts, a missing module or handler, ...) is in
//! conformance; here what is Node's own.

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
async fn a_syntax_error_is_a_user_code_syntax_error() {
    let code = code_dir(&[("app.js", "exports.handler = async (event => 1;\n")]);
    assert_init_error(
        spec(&dir_str(code.path()), "app.handler"),
        "Runtime.UserCodeSyntaxError",
        "Syntax error in module 'app': ",
    )
    .await;
}
