//! The CLI's side of async invocations: enqueue one (`invoke --async`), the backlog
//! of a function (`get`), and its dead letters (`dlq ls`, `dlq redrive`).

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use natsfn_protocol::names::{
    async_consumer, async_subject, dlq_subject, ASYNC_STREAM, DLQ_STREAM, HEADER_ATTEMPT,
    HEADER_CONDITION, HEADER_ERROR, HEADER_MSG_ID, HEADER_NOT_BEFORE, HEADER_REQUEST_ID,
};
use serde_json::{json, Value};

/// Enqueues `payload` for `function`; prints the event id once JetStream has stored it.
pub async fn enqueue(
    client: async_nats::Client,
    function: &str,
    qualifier: Option<&natsfn_protocol::Qualifier>,
    payload: Bytes,
    event_id: Option<String>,
) -> anyhow::Result<ExitCode> {
    let js = jetstream::new(client);
    let id = event_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if !natsfn_protocol::names::is_valid_request_id(&id) {
        bail!("--event-id {id:?}: expected 1 to 64 characters of A-Za-z0-9-");
    }
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, id.as_str());
    if let Some(qualifier) = qualifier {
        headers.insert(
            natsfn_protocol::names::HEADER_QUALIFIER,
            qualifier.to_string().as_str(),
        );
    }
    let ack = js
        .publish_with_headers(async_subject(function), headers, payload)
        .await
        .context("cannot publish the event")?
        .await
        .with_context(|| {
            format!("the event was not stored: does {ASYNC_STREAM} exist (a node creates it)?")
        })?;
    if ack.duplicate {
        eprintln!("an event with id {id} was already enqueued; it runs once");
    }
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// Events waiting and running (the function's consumer), and its dead letters.
pub async fn backlog(js: &Context, function: &str) -> Value {
    let queue = match js.get_stream(ASYNC_STREAM).await {
        Ok(stream) => match stream.consumer_info(async_consumer(function)).await {
            Ok(info) => json!({"pending": info.num_pending, "in_progress": info.num_ack_pending}),
            // No node has pulled for it yet: everything published waits.
            Err(_) => {
                json!({"pending": subject_count(&stream, &async_subject(function)).await, "in_progress": 0})
            }
        },
        Err(_) => Value::Null,
    };
    let dead = match js.get_stream(DLQ_STREAM).await {
        Ok(stream) => json!(subject_count(&stream, &dlq_subject(function)).await),
        Err(_) => Value::Null,
    };
    json!({"pending": queue["pending"], "in_progress": queue["in_progress"], "dead_letters": dead})
}

async fn subject_count(stream: &Stream, subject: &str) -> u64 {
    let Ok(mut info) = stream.info_with_subjects(subject).await else {
        return 0;
    };
    let mut count = 0;
    while let Some(Ok((_, n))) = info.next().await {
        count += n as u64;
    }
    count
}

/// One dead letter as `dlq ls` shows it.
struct DeadLetter {
    sequence: u64,
    headers: HeaderMap,
    payload: Bytes,
    time: String,
}

impl DeadLetter {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    }
}

/// Every dead letter of `function`, oldest first.
async fn dead_letters(js: &Context, function: &str) -> anyhow::Result<(Stream, Vec<DeadLetter>)> {
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .with_context(|| format!("no {DLQ_STREAM} stream (a node creates it)"))?;
    let subject = dlq_subject(function);
    let mut letters = Vec::new();
    let mut next = 0u64;
    loop {
        let message = match stream
            .direct_get_next_for_subject(subject.as_str(), Some(next))
            .await
        {
            Ok(message) => message,
            // No further message on the subject.
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot read {DLQ_STREAM}")))
            }
        };
        next = message.sequence + 1;
        let time = message
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        letters.push(DeadLetter {
            sequence: message.sequence,
            headers: message.headers,
            payload: message.payload,
            time,
        });
    }
    Ok((stream, letters))
}

pub async fn dlq_ls(nats: &crate::connect::Nats, function: &str) -> anyhow::Result<ExitCode> {
    let js = crate::patience::jetstream(crate::connect::client(nats).await?);
    let (_, letters) = crate::patience::read(|| dead_letters(&js, function)).await?;
    if letters.is_empty() {
        println!("no dead letters for {function}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<36} {:<25} {:>8}  {:<17} ERROR",
        "SEQ", "EVENT", "DEAD SINCE", "ATTEMPTS", "CONDITION"
    );
    for letter in &letters {
        println!(
            "{:<8} {:<36} {:<25} {:>8}  {:<17} {}",
            letter.sequence,
            letter.header(HEADER_REQUEST_ID),
            letter.time,
            letter.header(HEADER_ATTEMPT),
            letter.header(HEADER_CONDITION),
            letter.header(HEADER_ERROR)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts each dead letter back in the queue as a first attempt, then deletes it: run
/// twice, a redrive enqueues nothing the second time.
pub async fn dlq_redrive(nats: &crate::connect::Nats, function: &str) -> anyhow::Result<ExitCode> {
    let js = jetstream::new(crate::connect::client(nats).await?);
    let (stream, letters) = dead_letters(&js, function).await?;
    let mut redriven = 0;
    for letter in letters {
        let mut headers = HeaderMap::new();
        for (name, values) in letter.headers.iter() {
            let name_str: &str = name.as_ref();
            let ours = [
                HEADER_ATTEMPT,
                HEADER_NOT_BEFORE,
                HEADER_CONDITION,
                HEADER_ERROR,
                HEADER_MSG_ID,
            ];
            if ours.iter().any(|h| name_str.eq_ignore_ascii_case(h)) {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        // A redrive interrupted and run again stores each letter once.
        let id = letter.header(HEADER_REQUEST_ID);
        headers.insert(
            HEADER_MSG_ID,
            format!("{id}.redrive.{}", letter.sequence).as_str(),
        );
        js.publish_with_headers(async_subject(function), headers, letter.payload.clone())
            .await
            .context("cannot publish a redriven event")?
            .await
            .context("a redriven event was not stored")?;
        stream
            .delete_message(letter.sequence)
            .await
            .with_context(|| format!("cannot delete dead letter {}", letter.sequence))?;
        redriven += 1;
    }
    println!("redrove {redriven} dead letter(s) of {function}");
    Ok(ExitCode::SUCCESS)
}
