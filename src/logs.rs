//! `natsfn logs NAME [-f] [--since D]`: a function's log history from the NATSFN_LOGS
//! stream, read with an ordered consumer from a start time; `-f` keeps following it.
//! Lines are printed as Lambda's console shows them: the time the server stored the
//! record, the request id (platform lines name it themselves), the line.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::{Consumer, DeliverPolicy};
use futures::StreamExt;
use natsfn_protocol::names::{
    is_valid_function_name, logs_subject, HEADER_LOG_STREAM, HEADER_REQUEST_ID, LOGS_STREAM,
    LOG_STREAM_PLATFORM,
};
use time::OffsetDateTime;

use crate::cli::LogsArgs;

pub async fn run(nats: &crate::connect::Nats, args: LogsArgs) -> anyhow::Result<ExitCode> {
    if !is_valid_function_name(&args.name) {
        bail!(
            "{:?} is not a function name (letters, digits, - and _)",
            args.name
        );
    }
    let client = crate::connect::client(nats).await?;
    let start_time = OffsetDateTime::now_utc() - args.since;
    let consumer =
        crate::patience::read(|| history(client.clone(), &args.name, start_time)).await?;
    if consumer.cached_info().num_pending == 0 && !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut records = consumer
        .messages()
        .await
        .context("cannot read the log stream")?;
    let mut out = std::io::stdout();
    while let Some(record) = records.next().await {
        let record = record.context("reading the log stream failed")?;
        let info = record
            .info()
            .map_err(|e| anyhow!("a log record without stream metadata: {e}"))?;
        let header = |name| {
            record
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
        };
        let text = render(
            info.published,
            header(HEADER_REQUEST_ID).unwrap_or(""),
            header(HEADER_LOG_STREAM) == Some(LOG_STREAM_PLATFORM),
            &record.payload,
        );
        // A closed stdout (`natsfn logs f | head`) ends the command quietly.
        if out.write_all(text.as_bytes()).is_err() || out.flush().is_err() {
            break;
        }
        if !args.follow && info.pending == 0 {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An ordered consumer of `function`'s records from `start_time` on.
async fn history(
    client: async_nats::Client,
    function: &str,
    start_time: OffsetDateTime,
) -> anyhow::Result<Consumer<OrderedConfig>> {
    let js = crate::patience::jetstream(client);
    let stream = js.get_stream(LOGS_STREAM).await.with_context(|| {
        format!(
            "no log history: cannot open the stream {LOGS_STREAM} (nodes create it at start-up)"
        )
    })?;
    stream
        .create_consumer(OrderedConfig {
            filter_subject: logs_subject(function),
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .context("cannot read the log stream")
}

/// One record as printed lines: each line (a platform record holds several) after the
/// time and, for the function's own output, its request id.
fn render(at: OffsetDateTime, request_id: &str, platform: bool, payload: &[u8]) -> String {
    let at = timestamp(at);
    let text = String::from_utf8_lossy(payload);
    let mut out = String::with_capacity(text.len() + 64);
    let lines: Box<dyn Iterator<Item = &str>> = if platform {
        Box::new(text.lines())
    } else {
        // An output record is one line, whatever it holds.
        Box::new(std::iter::once(text.as_ref()))
    };
    for line in lines {
        out.push_str(&at);
        out.push('\t');
        if !platform && !request_id.is_empty() {
            out.push_str(request_id);
            out.push('\t');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// RFC 3339 in UTC with milliseconds, as CloudWatch shows times.
fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_print_as_lambdas_console_shows_them() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_646_512_345_678_000)
            .expect("a valid time");
        assert_eq!(timestamp(at), "2025-12-02T03:35:12.345Z");
        assert_eq!(
            render(at, "req-1", false, b"hello\tworld"),
            "2025-12-02T03:35:12.345Z\treq-1\thello\tworld\n"
        );
        assert_eq!(
            render(at, "", false, b"printed at import"),
            "2025-12-02T03:35:12.345Z\tprinted at import\n"
        );
        assert_eq!(
            render(
                at,
                "req-1",
                true,
                b"END RequestId: req-1\nREPORT RequestId: req-1\tDuration: 1.00 ms"
            ),
            "2025-12-02T03:35:12.345Z\tEND RequestId: req-1\n\
             2025-12-02T03:35:12.345Z\tREPORT RequestId: req-1\tDuration: 1.00 ms\n"
        );
    }
}
