//! `--http-auth FILE`: AWS SigV4 signatures (service `lambda`) checked as AWS checks
//! them. The canonical request is rebuilt from the client's own `SignedHeaders` (AWS's
//! signers pick their own header sets, so re-signing cannot verify); the signing key and
//! signature come from the `aws-sigv4` crate; signatures compare in constant time;
//! ±5 minutes of clock skew; no replay cache (AWS keeps none).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use axum::http::{request::Parts, HeaderMap};
use natsfn_protocol::names::is_valid_function_name;
use natsfn_protocol::LambdaError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Function URLs are signed for the same service as the Invoke API.
const SERVICE: &str = "lambda";
const SCOPE_END: &str = "aws4_request";
/// How far a request's `X-Amz-Date` may be from the gateway's clock, as in AWS.
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The keys of `--http-auth FILE`, by access key id.
pub(super) struct Keys(HashMap<String, Key>);

struct Key {
    secret: String,
    /// `None`: every function (`"*"`).
    functions: Option<HashSet<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    access_key_id: String,
    secret_access_key: String,
    functions: Vec<String>,
}

impl Keys {
    pub(super) fn load(path: &Path) -> anyhow::Result<Keys> {
        let text = std::fs::read(path)
            .with_context(|| format!("--http-auth: cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("--http-auth {}", path.display()))
    }

    pub(super) fn parse(json: &[u8]) -> anyhow::Result<Keys> {
        let file: KeysFile = serde_json::from_slice(json).context(
            r#"expected {"keys": [{"access_key_id": "AKID…", "secret_access_key": "…", "functions": ["*"]}]}"#,
        )?;
        anyhow::ensure!(
            !file.keys.is_empty(),
            "\"keys\" is empty: no request could pass"
        );
        let mut keys = HashMap::new();
        for (i, entry) in file.keys.into_iter().enumerate() {
            let id = entry.access_key_id;
            anyhow::ensure!(
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()),
                "keys[{i}].access_key_id: expected letters and digits, got {id:?}"
            );
            anyhow::ensure!(
                !entry.secret_access_key.is_empty(),
                "keys[{i}].secret_access_key: empty"
            );
            let functions = if entry.functions.iter().any(|f| f == "*") {
                None
            } else {
                if let Some(bad) = entry.functions.iter().find(|f| !is_valid_function_name(f)) {
                    anyhow::bail!(
                        "keys[{i}].functions: {bad:?} is neither a function name nor \"*\""
                    );
                }
                Some(entry.functions.into_iter().collect())
            };
            let key = Key {
                secret: entry.secret_access_key,
                functions,
            };
            anyhow::ensure!(
                keys.insert(id.clone(), key).is_none(),
                "keys[{i}].access_key_id: {id} is listed twice"
            );
        }
        Ok(Keys(keys))
    }

    /// What can be checked before the body is read: a well-formed `Authorization`
    /// header by a known key, scoped to `lambda`, dated within the allowed skew of `now`.
    pub(super) fn claim<'a>(
        &'a self,
        headers: &'a HeaderMap,
        now: SystemTime,
    ) -> Result<Claim<'a>, LambdaError> {
        let Some(auth) = headers.get("authorization") else {
            return Err(LambdaError::unrecognized_client(
                "The request has no AWS SigV4 signature (an Authorization: AWS4-HMAC-SHA256 header).",
            ));
        };
        let auth = auth.to_str().map_err(|_| {
            LambdaError::invalid_signature("The Authorization header is not ASCII.")
        })?;
        let fields = auth.strip_prefix(ALGORITHM).ok_or_else(|| {
            LambdaError::invalid_signature(format!("Only {ALGORITHM} signatures are accepted."))
        })?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for field in fields.split(',') {
            match field.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed_headers = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => {}
            }
        }
        let missing = |name: &str| {
            LambdaError::invalid_signature(format!(
                "Authorization header requires '{name}' parameter."
            ))
        };
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;
        // AKID/20150830/us-east-1/lambda/aws4_request
        let mut scope = credential.rsplitn(5, '/');
        let (Some(end), Some(service), Some(region), Some(date), Some(key_id)) = (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        ) else {
            return Err(LambdaError::invalid_signature(
                "Credential should be KEY/yyyyMMdd/region/lambda/aws4_request.",
            ));
        };
        let Some(key) = self.0.get(key_id) else {
            return Err(LambdaError::unrecognized_client(
                "The security token included in the request is invalid.",
            ));
        };
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                LambdaError::invalid_signature("The request must carry an X-Amz-Date header.")
            })?;
        let time = parse_amz_date(amz_date).ok_or_else(|| {
            LambdaError::invalid_signature(format!(
                "X-Amz-Date {amz_date:?} is not of the form yyyyMMdd'T'HHmmss'Z'."
            ))
        })?;
        check_skew(amz_date, time, now)?;
        let day = amz_date.get(..8).unwrap_or_default();
        if date != day {
            return Err(LambdaError::invalid_signature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{day}'."
            )));
        }
        if service != SERVICE || end != SCOPE_END || region.is_empty() {
            return Err(LambdaError::invalid_signature(format!(
                "Credential should be scoped to correct service: '{SERVICE}'."
            )));
        }
        let signed_headers: Vec<&str> = signed_headers.split(';').collect();
        if !signed_headers.contains(&"host") {
            return Err(LambdaError::invalid_signature(
                "'Host' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        Ok(Claim {
            key,
            key_id: key_id.to_owned(),
            service,
            amz_date: amz_date.to_owned(),
            time,
            region: region.to_owned(),
            signed_headers,
            signature,
        })
    }
}

/// A request's signature, parsed and by a known key, not yet checked against the
/// request it signs.
pub(super) struct Claim<'a> {
    key: &'a Key,
    key_id: String,
    /// Always `lambda` once claimed (AWS's test vectors sign for `service`).
    service: &'a str,
    amz_date: String,
    time: SystemTime,
    region: String,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

impl Claim<'_> {
    /// Checks the signature against the request as received, its body hashed (as Lambda
    /// does, whatever `X-Amz-Content-Sha256` says), then that the key may call `function`
    /// (`action` names the permission in the refusal, as IAM would).
    pub(super) fn verify(
        &self,
        parts: &Parts,
        body: &[u8],
        function: &str,
        action: &str,
    ) -> Result<(), LambdaError> {
        let canonical = canonical_request(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query().unwrap_or_default(),
            &parts.headers,
            &self.signed_headers,
            &hex(&Sha256::digest(body)),
        );
        let expected = self.expected_signature(&canonical);
        if !bool::from(expected.as_bytes().ct_eq(self.signature.as_bytes())) {
            return Err(LambdaError::invalid_signature(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
            ));
        }
        match &self.key.functions {
            Some(allowed) if !allowed.contains(function) => {
                Err(LambdaError::access_denied(format!(
                    "User: {} is not authorized to perform: {action} on resource: {function}",
                    self.key_id
                )))
            }
            _ => Ok(()),
        }
    }

    fn expected_signature(&self, canonical_request: &str) -> String {
        let scope = format!(
            "{}/{}/{}/{SCOPE_END}",
            self.amz_date.get(..8).unwrap_or_default(),
            self.region,
            self.service
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{scope}\n{}",
            self.amz_date,
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let key = generate_signing_key(&self.key.secret, self.time, &self.region, self.service);
        calculate_signature(key, string_to_sign.as_bytes())
    }
}

/// `X-Amz-Date`'s form: `20150830T123600Z`.
const AMZ_DATE: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let parsed = time::PrimitiveDateTime::parse(text, AMZ_DATE).ok()?;
    Some(parsed.assume_utc().into())
}

fn check_skew(amz_date: &str, time: SystemTime, now: SystemTime) -> Result<(), LambdaError> {
    let format = |t: SystemTime| {
        time::OffsetDateTime::from(t)
            .format(AMZ_DATE)
            .unwrap_or_default()
    };
    if time + MAX_SKEW < now {
        return Err(LambdaError::invalid_signature(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
            format(now - MAX_SKEW),
            format(now)
        )));
    }
    if time > now + MAX_SKEW {
        return Err(LambdaError::invalid_signature(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            format(now + MAX_SKEW),
            format(now)
        )));
    }
    Ok(())
}

/// SigV4's canonical request of a request as it arrived: `path` and `query` as sent
/// (already percent-encoded, so encoded once more, as every SigV4 signer but S3's does),
/// the signed headers' values trimmed and joined, and the payload's hash.
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    signed_headers: &[&str],
    payload_hash: &str,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(method);
    out.push('\n');
    uri_encode(&normalize_path(path), true, &mut out);
    out.push('\n');
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let encode = |part: &str| {
                let mut encoded = String::new();
                let decoded: Vec<u8> = percent_decode(part);
                uri_encode_bytes(&decoded, false, &mut encoded);
                encoded
            };
            (encode(k), encode(v))
        })
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        for (i, value) in headers.get_all(*name).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Trimmed, inner runs of spaces made one.
            let value = String::from_utf8_lossy(value.as_bytes());
            for (j, word) in value.split_whitespace().enumerate() {
                if j > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// RFC 3986's dot segments removed and empty segments dropped, as AWS's signers
/// normalise a path (botocore's `remove_dot_segments`).
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

fn uri_encode(text: &str, keep_slash: bool, out: &mut String) {
    uri_encode_bytes(text.as_bytes(), keep_slash, out)
}

/// Every byte but `A-Za-z0-9-_.~` (and `/` if kept) as `%XX`.
fn uri_encode_bytes(bytes: &[u8], keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

// A path of its own, so that the benchmark can include this file too.
#[cfg(test)]
#[path = "sigv4/tests.rs"]
mod tests;
