//! Function URLs: `ANY /{function}[/{*path}]` → a Lambda function URL event (payload
//! format 2.0), and the function's result → the HTTP response, as Lambda maps them.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{request::Parts, StatusCode, Version};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use natsfn_protocol::names::is_valid_function_name;
use natsfn_protocol::{LambdaError, Qualifier, UrlAuth, UrlSpec};
use serde_json::{json, Map, Value};

use super::{cors, new_request_id, plain, read_body, request, BodyError, Gateway, Outcome, Peer};

/// `x-amzn-RequestId`, as function URLs answer it: the invocation's request id.
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// The permission a key needs to call a function URL, as IAM names it.
const INVOKE_URL_ACTION: &str = "lambda:InvokeFunctionUrl";

pub(super) async fn invoke(State(gateway): State<Gateway>, request_in: Request) -> Response {
    let (parts, body) = request_in.into_parts();
    // `/{function}` then the function's own path (the part a function URL's host
    // would be followed by), kept as sent, percent-encoding and all.
    let Some((function, qualifier, rest)) = route(parts.uri.path()) else {
        return plain(StatusCode::NOT_FOUND, "Not Found\n");
    };
    // A binding the gateway has not read is not served: it may ask for AWS_IAM. An
    // alias' URL is its function's (auth, CORS).
    let Some(url) = gateway.urls.get(function) else {
        return plain(StatusCode::NOT_FOUND, "Not Found\n");
    };
    // Refused before anything is sent: a qualifier is one subject token.
    let qualifier = match qualifier.map(Qualifier::parse).transpose() {
        Ok(qualifier) => qualifier.map(|q| q.to_string()),
        Err(why) => return plain(StatusCode::BAD_REQUEST, format!("Bad Request: {why}\n")),
    };
    let target = Target {
        function,
        qualifier: qualifier.as_deref(),
    };
    let Some(cors) = &url.cors else {
        return call(&gateway, &url, target, rest, &parts, body).await;
    };
    if let Some(preflight) = cors::preflight(cors, &parts.method, &parts.headers) {
        return preflight;
    }
    let mut response = call(&gateway, &url, target, rest, &parts, body).await;
    cors::decorate(cors, parts.headers.get(header::ORIGIN), &mut response);
    response
}

/// What a function URL calls: the function, and the qualifier of `/{fn}:{alias}/…`.
#[derive(Clone, Copy)]
struct Target<'a> {
    function: &'a str,
    qualifier: Option<&'a str>,
}

/// A function URL's path: the function, if the first segment names one (before a `:`
/// or `%3A` and its qualifier, unchecked), and the rest (without its leading `/`).
fn route(path: &str) -> Option<(&str, Option<&str>, &str)> {
    let full = path.strip_prefix('/').unwrap_or_default();
    let (first, rest) = full.split_once('/').unwrap_or((full, ""));
    // `:` as sent, or percent-encoded as some clients encode it in a path.
    let colon = first.find(':').map(|at| (at, 1)).or_else(|| {
        let lower = first.to_ascii_lowercase();
        lower.find("%3a").map(|at| (at, 3))
    });
    let (function, qualifier) = match colon {
        Some((at, len)) => (&first[..at], Some(&first[at + len..])),
        None => (first, None),
    };
    is_valid_function_name(function).then_some((function, qualifier, rest))
}

/// The function URL request itself: its auth, its body, the invocation, the response.
async fn call(
    gateway: &Gateway,
    url: &UrlSpec,
    target: Target<'_>,
    rest: &str,
    parts: &Parts,
    body: Body,
) -> Response {
    let function = target.function;
    let claim = match (url.auth, &gateway.auth) {
        (UrlAuth::None, _) => None,
        (UrlAuth::AwsIam, None) => {
            return refused(&LambdaError::access_denied(
                "The function URL's auth is AWS_IAM and this gateway checks no signatures: it was started without --http-auth.",
            ))
        }
        (UrlAuth::AwsIam, Some(keys)) => match keys.claim(&parts.headers, SystemTime::now()) {
            Ok(claim) => Some(claim),
            Err(refusal) => return refused(&refusal),
        },
    };
    let raw_path = format!("/{rest}");
    let body = match read_body(&parts.headers, body, gateway.max_event).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large\n")
        }
        Err(BodyError::TimedOut) => return plain(StatusCode::REQUEST_TIMEOUT, "Request Timeout\n"),
        Err(BodyError::Broken) => return plain(StatusCode::BAD_REQUEST, "Bad Request\n"),
    };
    if let Some(claim) = claim {
        if let Err(refusal) = claim.verify(parts, &body, function, INVOKE_URL_ACTION) {
            return refused(&refusal);
        }
    }
    let request_id = new_request_id();
    let peer = parts.extensions.get::<Peer>();
    let source_ip = peer.map(|p| p.addr.ip().to_string());
    let proto = if peer.is_some_and(|p| p.tls) {
        "https"
    } else {
        "http"
    };
    let event = event(
        parts,
        &raw_path,
        &body,
        source_ip.as_deref(),
        proto,
        &request_id,
    );
    let event = match serde_json::to_vec(&event) {
        Ok(bytes) if bytes.len() <= gateway.max_event => bytes,
        // The body fitted, its event (headers, base64) does not.
        _ => return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large\n"),
    };
    let outcome = request(
        gateway,
        function,
        target.qualifier,
        &request_id,
        event.into(),
    )
    .await;
    let mut executed = None;
    let (mut response, request_id) = match outcome {
        Outcome::Success {
            payload,
            request_id,
            executed_version,
        } => {
            executed = executed_version;
            (result_response(&payload), request_id)
        }
        Outcome::QualifierNotFound { message } => (
            not_found(&LambdaError::resource_not_found(message)),
            request_id,
        ),
        Outcome::Error {
            code,
            message,
            request_id,
            executed_version,
            ..
        } => {
            executed = executed_version;
            tracing::debug!(function, %request_id, code, %message, "function URL invocation failed");
            let status = match code {
                400 => StatusCode::BAD_REQUEST,
                413 => StatusCode::PAYLOAD_TOO_LARGE,
                429 => StatusCode::TOO_MANY_REQUESTS,
                503 => StatusCode::SERVICE_UNAVAILABLE,
                504 => StatusCode::GATEWAY_TIMEOUT,
                // A handler's error, a crashed worker: what function URLs answer.
                _ => StatusCode::BAD_GATEWAY,
            };
            (error_response(status), request_id)
        }
        Outcome::NoResponders => (plain(StatusCode::NOT_FOUND, "Not Found\n"), request_id),
        Outcome::TimedOut => (error_response(StatusCode::GATEWAY_TIMEOUT), request_id),
        Outcome::Unavailable(why) => {
            tracing::warn!(function, error = %why, "function URL request failed on NATS");
            (error_response(StatusCode::SERVICE_UNAVAILABLE), request_id)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Some(value) = executed.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response
            .headers_mut()
            .insert("x-amz-executed-version", value);
    }
    response
}

/// A 404 for a version or alias the function does not have, typed as Lambda types it.
fn not_found(error: &LambdaError) -> Response {
    let mut response = refused(error);
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// A 403 as function URLs send it (and the 404 of an unknown alias): the exception in
/// `x-amzn-ErrorType`, the reason in a JSON `Message`.
fn refused(refusal: &LambdaError) -> Response {
    let body = json!({"Message": refusal.error_message}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(kind) = HeaderValue::from_str(&refusal.error_type) {
        headers.insert("x-amzn-errortype", kind);
    }
    response
}

fn error_response(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    plain(status, format!("{reason}\n"))
}

/// The function URL event (payload format 2.0) of one request.
fn event(
    parts: &Parts,
    raw_path: &str,
    body: &[u8],
    source_ip: Option<&str>,
    proto: &str,
    request_id: &str,
) -> Value {
    // Lower-case names (the http crate's own), repeated headers comma-joined, cookies
    // apart; bytes that are not UTF-8 are replaced, never refused.
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        if name == header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
            continue;
        }
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    if let Some(ip) = source_ip {
        headers
            .entry("x-forwarded-for".into())
            .or_insert_with(|| ip.to_owned());
    }
    headers
        .entry("x-forwarded-proto".into())
        .or_insert_with(|| proto.into());
    let host = headers
        .get("host")
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    let prefix = host.split(['.', ':']).next().unwrap_or_default().to_owned();
    let user_agent = headers.get("user-agent").cloned().unwrap_or_default();
    let raw_query = parts.uri.query().unwrap_or_default();
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        query
            .entry(name.into_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": prefix,
            "domainName": host,
            "domainPrefix": prefix,
            "http": {
                "method": parts.method.as_str(),
                "path": raw_path,
                "protocol": protocol(parts.version),
                "sourceIp": source_ip.unwrap_or_default(),
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": clf_time(now.as_secs()),
            "timeEpoch": now.as_millis() as u64,
        },
        "isBase64Encoded": false,
    });
    // Absent rather than empty, as Lambda sends them.
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !body.is_empty() {
        match std::str::from_utf8(body) {
            Ok(text) => event["body"] = json!(text),
            Err(_) => {
                event["body"] = json!(BASE64.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    event
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// `12/Mar/2020:19:03:58 +0000`, the time format of function URL events.
fn clf_time(unix_secs: u64) -> String {
    let format = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::from_unix_timestamp(unix_secs as i64)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// The function's result as the HTTP response: `{statusCode, headers, cookies, body,
/// isBase64Encoded}` as given, anything else (any JSON without `statusCode`) as a 200
/// `application/json` whose body is the result.
fn result_response(payload: &[u8]) -> Response {
    let result: Option<Map<String, Value>> = serde_json::from_slice(payload).ok();
    let Some(result) = result.filter(|r| r.contains_key("statusCode")) else {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(payload.to_vec()))
            .unwrap_or_else(|_| error_response(StatusCode::BAD_GATEWAY));
    };
    structured(&result).unwrap_or_else(|why| {
        tracing::debug!(%why, "a function URL result could not be mapped");
        error_response(StatusCode::BAD_GATEWAY)
    })
}

fn structured(result: &Map<String, Value>) -> Result<Response, String> {
    let status = result["statusCode"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("statusCode: expected an HTTP status")?;
    let body = match result.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if result.get("isBase64Encoded") == Some(&json!(true)) => BASE64
            .decode(text)
            .map_err(|e| format!("body: not base64 ({e})"))?,
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(Value::Object(given)) = result.get("headers") {
        for (name, value) in given {
            let value = match value {
                Value::String(text) => text.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                _ => continue,
            };
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a header name"))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("headers: the value of {name} is not a header value"))?;
            headers.insert(name, value);
        }
    }
    if let Some(Value::Array(cookies)) = result.get("cookies") {
        for cookie in cookies.iter().filter_map(Value::as_str) {
            let value = HeaderValue::from_str(cookie)
                .map_err(|_| format!("cookies: {cookie:?} is not a header value"))?;
            headers.append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
#[path = "url_event/hostile.rs"]
mod hostile;

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes_name_a_function_and_maybe_its_qualifier() {
        assert_eq!(route("/hello"), Some(("hello", None, "")));
        assert_eq!(route("/hello/a/b"), Some(("hello", None, "a/b")));
        assert_eq!(route("/hello:live/a"), Some(("hello", Some("live"), "a")));
        assert_eq!(route("/hello:3"), Some(("hello", Some("3"), "")));
        assert_eq!(route("/hello%3Alive/a"), Some(("hello", Some("live"), "a")));
        assert_eq!(route("/hello%3alive"), Some(("hello", Some("live"), "")));
        assert_eq!(route("/hello:a.b/x"), Some(("hello", Some("a.b"), "x")));
        assert_eq!(route("/:live"), None);
        assert_eq!(route("/he.llo:live"), None);
    }
}
