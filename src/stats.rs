//! `natsfn stats [NAME]`: asks `$SRV.STATS[.NAME]` of every node at once and prints
//! what each node's instance of each function has served, with totals.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use async_nats::StatusCode;
use futures::StreamExt;
use natsfn_protocol::service::{verb_subject, StatsResponse, Verb, METADATA_NODE};

/// Replies come from every node; once this long passes without another, all are in.
const QUIET: Duration = Duration::from_millis(300);
/// The most a slow or absent node can hold the command up.
const DEADLINE: Duration = Duration::from_secs(3);

/// One node's instance of one function, its endpoints summed.
#[derive(Default)]
struct Row {
    requests: u64,
    errors: u64,
    processing_ns: u64,
    last_error: String,
}

impl Row {
    fn add(&mut self, other: &Row) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.processing_ns += other.processing_ns;
        if self.last_error.is_empty() {
            self.last_error.clone_from(&other.last_error);
        }
    }
}

pub async fn run(nats: &crate::connect::Nats, name: Option<String>) -> anyhow::Result<ExitCode> {
    let client = crate::connect::client(nats).await?;
    let replies = collect(&client, &verb_subject(Verb::Stats, name.as_deref())).await?;
    // function → node → row; other services on the account are not natsfn's to show.
    let mut functions: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    for reply in replies {
        let Some(node) = reply.identity.metadata.get(METADATA_NODE) else {
            continue;
        };
        let mut row = Row::default();
        for e in &reply.endpoints {
            row.add(&Row {
                requests: e.num_requests,
                errors: e.num_errors,
                processing_ns: e.processing_time,
                last_error: e.last_error.clone(),
            });
        }
        let label = format!("{node} ({})", reply.identity.id);
        functions
            .entry(reply.identity.name)
            .or_default()
            .insert(label, row);
    }
    if functions.is_empty() {
        match name {
            Some(name) => eprintln!(
                "no node answers for function {name}: is it bound, and is a node running?"
            ),
            None => eprintln!("no node answers: is a node running (natsfn node, or natsfn dev)?"),
        }
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{:<24} {:<44} {:>9} {:>7} {:>10}  LAST ERROR",
        "FUNCTION", "NODE (INSTANCE)", "REQUESTS", "ERRORS", "AVERAGE"
    );
    let mut all = Row::default();
    for (function, nodes) in &functions {
        let mut total = Row::default();
        for (node, row) in nodes {
            print_row(function, node, row);
            total.add(row);
        }
        print_row(function, "total", &total);
        all.add(&total);
    }
    if functions.len() > 1 {
        print_row("all functions", "total", &all);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one request to `subject` and gathers every reply until a quiet period.
async fn collect(client: &async_nats::Client, subject: &str) -> anyhow::Result<Vec<StatsResponse>> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(subject.to_owned(), inbox, Default::default())
        .await?;
    client
        .flush()
        .await
        .context("cannot reach the NATS server")?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut found = Vec::new();
    loop {
        let wait = if found.is_empty() { DEADLINE } else { QUIET };
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + wait),
            replies.next(),
        );
        let Ok(Some(msg)) = next.await else { break };
        if msg.status == Some(StatusCode::NO_RESPONDERS) {
            break;
        }
        // Services of other kinds answer too; only well-formed replies count.
        if let Ok(reply) = serde_json::from_slice::<StatsResponse>(&msg.payload) {
            found.push(reply);
        }
    }
    Ok(found)
}

fn print_row(function: &str, node: &str, row: &Row) {
    let average = row.processing_ns.checked_div(row.requests).unwrap_or(0);
    println!(
        "{function:<24} {node:<44} {:>9} {:>7} {:>10}  {}",
        row.requests,
        row.errors,
        nanos(average),
        if row.last_error.is_empty() {
            "-"
        } else {
            &row.last_error
        }
    );
}

/// `850µs`, `1.25ms`, `2.50s`: readable at a glance.
fn nanos(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::nanos;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(nanos(0), "0ns");
        assert_eq!(nanos(850_400), "850µs");
        assert_eq!(nanos(1_250_000), "1.25ms");
        assert_eq!(nanos(2_500_000_000), "2.50s");
    }
}
