//! A version's invocations as its service instances count them: one scatter-gather
//! `$SRV.STATS.<fn>` request, answered by every node's FunctionActor of every version
//! of the function, of which those whose metadata `natsfn.version` names the version
//! are kept.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use natsfn_protocol::service::{
    verb_subject, StatsResponse, Verb, METADATA_VERSION, STATS_RESPONSE_TYPE,
};
use natsfn_protocol::version::Outcomes;
use tokio::time::Instant;

/// The longest a gather waits for replies. Instances that answer later are counted on
/// a later turn (the policy remembers what each had served), so a slow one costs
/// nothing but time.
const GATHER_WITHIN: Duration = Duration::from_secs(1);
/// After a reply, how long to wait for the next before calling it complete: replies
/// cross a cluster in milliseconds, so this mostly bounds the wait after the last one.
const QUIET_AFTER_REPLY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("cannot subscribe to a reply inbox: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("cannot ask for the function's stats: {0}")]
    Publish(#[from] async_nats::PublishError),
}

/// `version`'s invocations and 5xx outcomes per service instance (its id), summed over
/// the instance's endpoints. Replies that do not parse, or are of another service or
/// version, are skipped; an instance answering twice counts once (its last reply).
pub(crate) async fn gather(
    client: &async_nats::Client,
    function: &str,
    version: u64,
) -> Result<BTreeMap<String, Outcomes>, GatherError> {
    let version = version.to_string();
    let mut found = BTreeMap::new();
    for reply in function_stats(client, function).await? {
        if let Some((instance, outcomes)) = outcomes_of(reply, &version) {
            found.insert(instance, outcomes);
        }
    }
    Ok(found)
}

/// The `$SRV.STATS` replies of `function`'s service instances (on every node, one per
/// version and one for `$LATEST`), gathered for up to [`GATHER_WITHIN`]. Replies that do
/// not parse or are of another service are skipped.
pub async fn function_stats(
    client: &async_nats::Client,
    function: &str,
) -> Result<Vec<StatsResponse>, GatherError> {
    let inbox = client.new_inbox();
    // Subscribed before the request goes out, on the same connection: no reply is lost.
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(
            verb_subject(Verb::Stats, Some(function)),
            inbox,
            Bytes::new(),
        )
        .await?;
    let give_up = Instant::now() + GATHER_WITHIN;
    let mut until = give_up;
    let mut found = Vec::new();
    while let Ok(Some(reply)) = tokio::time::timeout_at(until, replies.next()).await {
        if let Ok(stats) = serde_json::from_slice::<StatsResponse>(&reply.payload) {
            if stats.kind == STATS_RESPONSE_TYPE && stats.identity.name == function {
                found.push(stats);
            }
        }
        until = give_up.min(Instant::now() + QUIET_AFTER_REPLY);
    }
    Ok(found)
}

/// The instance's id and what it counted, if it runs `version`: its endpoints'
/// requests and 5xx outcomes summed.
fn outcomes_of(reply: StatsResponse, version: &str) -> Option<(String, Outcomes)> {
    let ours = reply
        .identity
        .metadata
        .get(METADATA_VERSION)
        .map(String::as_str)
        == Some(version);
    if !ours {
        return None;
    }
    let mut outcomes = Outcomes::default();
    for endpoint in &reply.endpoints {
        outcomes.requests = outcomes.requests.saturating_add(endpoint.num_requests);
        let server_errors = endpoint.data.map_or(0, |d| d.server_errors);
        outcomes.errors = outcomes.errors.saturating_add(server_errors);
    }
    Some((reply.identity.id, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as `function_stats` reads it, then as `gather` counts it.
    fn instance_outcomes(
        payload: &[u8],
        function: &str,
        version: &str,
    ) -> Option<(String, Outcomes)> {
        let reply: StatsResponse = serde_json::from_slice(payload).ok()?;
        if reply.kind != STATS_RESPONSE_TYPE || reply.identity.name != function {
            return None;
        }
        outcomes_of(reply, version)
    }
    use serde_json::json;

    fn reply(name: &str, version: Option<&str>, endpoints: serde_json::Value) -> Vec<u8> {
        let mut metadata = json!({"natsfn.node": "n1"});
        if let Some(version) = version {
            metadata["natsfn.version"] = json!(version);
        }
        serde_json::to_vec(&json!({
            "type": "io.nats.micro.v1.stats_response", "name": name, "id": "i1",
            "version": "0.0.3", "metadata": metadata, "started": "2026-12-06T10:00:00Z",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn endpoint(requests: u64, server_errors: Option<u64>) -> serde_json::Value {
        let mut e = json!({"name": "invoke", "subject": "natsfn.invoke.f.5",
            "num_requests": requests, "num_errors": 0, "processing_time": 0,
            "average_processing_time": 0, "last_error": ""});
        if let Some(n) = server_errors {
            e["data"] = json!({"server_errors": n});
        }
        e
    }

    #[test]
    fn an_instance_of_the_version_sums_its_endpoints() {
        let payload = reply(
            "f",
            Some("5"),
            json!([
                endpoint(10, Some(2)),
                endpoint(5, Some(1)),
                endpoint(1, None)
            ]),
        );
        assert_eq!(
            instance_outcomes(&payload, "f", "5"),
            Some((
                "i1".to_string(),
                Outcomes {
                    requests: 16,
                    errors: 3
                }
            ))
        );
    }

    #[test]
    fn other_versions_services_and_garbage_are_skipped() {
        let endpoints = json!([endpoint(1, Some(0))]);
        assert_eq!(
            instance_outcomes(&reply("f", Some("4"), endpoints.clone()), "f", "5"),
            None
        );
        assert_eq!(
            instance_outcomes(&reply("f", Some("$LATEST"), endpoints.clone()), "f", "5"),
            None
        );
        assert_eq!(
            instance_outcomes(&reply("f", None, endpoints.clone()), "f", "5"),
            None
        );
        assert_eq!(
            instance_outcomes(&reply("g", Some("5"), endpoints), "f", "5"),
            None
        );
        assert_eq!(instance_outcomes(b"not json", "f", "5"), None);
        assert_eq!(instance_outcomes(b"{\"type\": 1}", "f", "5"), None);
        let negative = String::from_utf8(reply("f", Some("5"), json!([endpoint(1, Some(0))])))
            .unwrap()
            .replace("\"num_requests\":1", "\"num_requests\":-1");
        assert!(negative.contains("-1"));
        assert_eq!(instance_outcomes(negative.as_bytes(), "f", "5"), None);
    }
}
