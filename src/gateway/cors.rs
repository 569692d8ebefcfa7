//! `url.cors`: CORS as Lambda's function URLs answer it. Preflights are answered by the
//! gateway without invoking the function (and before `AWS_IAM` auth: browsers do not
//! sign them); actual responses to an allowed origin get the CORS headers, which replace
//! any the function set itself.

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use natsfn_protocol::spec::Cors;

/// The answer to a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`); `None` for any other request. A refused one (its
/// origin, method or a requested header not allowed) is a 200 without CORS headers,
/// which the browser takes as a refusal.
pub(super) fn preflight(cors: &Cors, method: &Method, headers: &HeaderMap) -> Option<Response> {
    if method != Method::OPTIONS {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let wanted = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::OK;
    let out = response.headers_mut();
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    let wanted_headers: Vec<&str> = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let method_allowed = wanted
        .to_str()
        .is_ok_and(|m| listed(&cors.allow_methods, m));
    let headers_allowed = wanted_headers
        .iter()
        .all(|h| listed(&cors.allow_headers, h));
    let Some(allow_origin) = allowed_origin(cors, origin) else {
        return Some(response);
    };
    if !method_allowed || !headers_allowed {
        return Some(response);
    }
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    // A wildcard is answered with what was asked: browsers refuse `*` with credentials.
    let methods = if cors.allow_methods.iter().any(|m| m == "*") {
        Some(wanted.clone())
    } else {
        joined(&cors.allow_methods)
    };
    if let Some(methods) = methods {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    let allow_headers = if cors.allow_headers.iter().any(|h| h == "*") {
        HeaderValue::from_str(&wanted_headers.join(",")).ok()
    } else {
        joined(&cors.allow_headers)
    };
    if let Some(allow_headers) = allow_headers.filter(|v| !v.is_empty()) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    }
    if cors.max_age > 0 {
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(cors.max_age),
        );
    }
    credentials(cors, out);
    Some(response)
}

/// The CORS headers of an actual response, when the request came from an allowed origin.
pub(super) fn decorate(cors: &Cors, origin: Option<&HeaderValue>, response: &mut Response) {
    let out = response.headers_mut();
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allow_origin) = origin.and_then(|origin| allowed_origin(cors, origin)) else {
        return;
    };
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ] {
        out.remove(name);
    }
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if let Some(expose) = joined(&cors.expose_headers) {
        out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose);
    }
    credentials(cors, out);
}

/// `Access-Control-Allow-Origin` for `origin`: `*` if every origin is allowed and
/// credentials are not, else the origin itself; `None` if it is not allowed.
fn allowed_origin(cors: &Cors, origin: &HeaderValue) -> Option<HeaderValue> {
    let any = cors.allow_origins.iter().any(|o| o == "*");
    let text = origin.to_str().ok()?;
    if any && !cors.allow_credentials {
        return Some(HeaderValue::from_static("*"));
    }
    (any || listed(&cors.allow_origins, text)).then(|| origin.clone())
}

fn credentials(cors: &Cors, out: &mut HeaderMap) {
    if cors.allow_credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// Whether `item` is in `list` (ASCII case aside), or `list` has `*`.
fn listed(list: &[String], item: &str) -> bool {
    list.iter()
        .any(|l| l == "*" || l.eq_ignore_ascii_case(item))
}

/// The entries as one header value (`a,b`); `None` if there are none.
fn joined(list: &[String]) -> Option<HeaderValue> {
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(",")).ok()
}
