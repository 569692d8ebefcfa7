//! `natsfn invoke`: one request on a function's canonical subject.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use async_nats::{HeaderMap, Request, RequestErrorKind};
use bytes::Bytes;
use natsfn_protocol::names::{
    invoke_subject, qualified_invoke_subject, HEADER_DEADLINE_MS, HEADER_EXECUTED_VERSION,
    HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE,
};
use natsfn_protocol::Qualifier;

use crate::cli::{parse_duration_ms, InvokeArgs};

/// `NAME`, `NAME:QUALIFIER` and `--qualifier Q`: the function and its qualifier, if any.
fn target(name: &str, flag: Option<&str>) -> anyhow::Result<(String, Option<Qualifier>)> {
    let (function, in_name) = match name.split_once(':') {
        Some((function, q)) => (function, Some(q)),
        None => (name, None),
    };
    let text = match (in_name, flag) {
        (Some(a), Some(b)) if a != b => {
            bail!("{name} names qualifier {a:?} and --qualifier {b:?}: give one")
        }
        (a, b) => a.or(b),
    };
    let qualifier = text
        .map(Qualifier::parse)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    Ok((function.to_owned(), qualifier))
}

pub async fn run(nats: &crate::connect::Nats, args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let (name, qualifier) = target(&args.name, args.qualifier.as_deref())?;
    let payload = match args.payload.as_deref() {
        None => Bytes::new(),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the event from stdin")?;
            buf.into()
        }
        Some(text) => Bytes::copy_from_slice(text.as_bytes()),
    };
    let timeout = Duration::from_millis(
        parse_duration_ms(&args.timeout).map_err(|e| anyhow!("--timeout {e}"))?,
    );
    let client = crate::connect::client(nats).await?;
    let max_payload = client.server_info().max_payload;
    if payload.len() > max_payload {
        bail!(
            "the event is {} bytes; the NATS server accepts at most {max_payload} (its max_payload)",
            payload.len()
        );
    }
    if args.asynchronous {
        return crate::events::enqueue(client, &name, qualifier.as_ref(), payload, args.event_id)
            .await;
    }
    let subject = match &qualifier {
        Some(q) => qualified_invoke_subject(&name, &q.to_string()),
        None => invoke_subject(&name),
    };
    // The node drops the invocation if it is still queued when we stop waiting.
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_DEADLINE_MS, deadline_after(timeout).as_str());
    let request = Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(timeout));
    let reply = match client.send_request(subject.clone(), request).await {
        Ok(reply) => reply,
        Err(e) if e.kind() == RequestErrorKind::NoResponders => {
            bail!("nobody answers on {subject}: is {name} bound, and is a node running?")
        }
        Err(e) if e.kind() == RequestErrorKind::TimedOut => {
            bail!("no reply from {name} within {timeout:?}")
        }
        Err(e) => return Err(e.into()),
    };
    let error = reply.headers.as_ref().and_then(|h| {
        let code = h.get(HEADER_SERVICE_ERROR_CODE)?;
        let text = h
            .get(HEADER_SERVICE_ERROR)
            .map(|v| v.as_str())
            .unwrap_or("");
        Some(format!("{} {}", code.as_str(), text))
    });
    match error {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&reply.payload)?;
            out.write_all(b"\n")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(summary) => {
            eprintln!("error {summary}");
            // Which version failed matters when an alias splits invocations.
            if let Some(version) = reply
                .headers
                .as_ref()
                .and_then(|h| h.get(HEADER_EXECUTED_VERSION))
                .filter(|_| qualifier.is_some())
            {
                eprintln!("executed version {}", version.as_str());
            }
            eprintln!("{}", String::from_utf8_lossy(&reply.payload));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The `Natsfn-Deadline-Ms` of a caller that waits `wait` from now: Unix time in
/// milliseconds.
pub(crate) fn deadline_after(wait: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now + wait).as_millis().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("f", None).unwrap(), ("f".into(), None));
        assert_eq!(
            target("f:live", None).unwrap(),
            ("f".into(), Some(Qualifier::Alias("live".into())))
        );
        assert_eq!(
            target("f", Some("3")).unwrap(),
            ("f".into(), Some(Qualifier::Version(3)))
        );
        assert_eq!(
            target("f:$LATEST", Some("$LATEST")).unwrap(),
            ("f".into(), Some(Qualifier::Latest))
        );
        assert!(target("f:live", Some("2")).is_err());
        assert!(target("f:a.b", None).is_err());
        assert!(target("f:0", None).is_err());
    }
}
