//! NATS micro services (ADR-32): every function is a service named after it, and each
//! node's instance of it answers the discovery verbs `$SRV.PING|INFO|STATS` (plain,
//! `.<function>` and `.<function>.<id>`). These are the replies' JSON shapes and the
//! naming rules natsfn applies; the actors fill them in, the CLI reads them back.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The prefix of every discovery subject.
pub const SERVICE_PREFIX: &str = "$SRV";
pub const PING_RESPONSE_TYPE: &str = "io.nats.micro.v1.ping_response";
pub const INFO_RESPONSE_TYPE: &str = "io.nats.micro.v1.info_response";
pub const STATS_RESPONSE_TYPE: &str = "io.nats.micro.v1.stats_response";
/// Service metadata key naming the node an instance runs on: it tells natsfn's own
/// instances apart from other services answering `$SRV.STATS` on the same account.
pub const METADATA_NODE: &str = "natsfn.node";
/// Metadata of a service instance: the version it runs (`$LATEST` or a number).
pub const METADATA_VERSION: &str = "natsfn.version";
/// Endpoint name of a function's canonical subject `natsfn.invoke.<function>`.
pub const CANONICAL_ENDPOINT: &str = "invoke";

pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ping,
    Info,
    Stats,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Ping => "PING",
            Verb::Info => "INFO",
            Verb::Stats => "STATS",
        }
    }

    /// The verb of a `$SRV.<VERB>[.<name>[.<id>]]` subject; `None` for anything else,
    /// including verbs ADR-32 may add later (they are ignored, not answered).
    pub fn of_subject(subject: &str) -> Option<Verb> {
        let mut tokens = subject.split('.');
        if tokens.next() != Some(SERVICE_PREFIX) {
            return None;
        }
        let verb = match tokens.next()? {
            "PING" => Verb::Ping,
            "INFO" => Verb::Info,
            "STATS" => Verb::Stats,
            _ => return None,
        };
        (tokens.count() <= 2).then_some(verb)
    }
}

/// The subject asking `verb` of every service (`name: None`) or of all instances of one.
pub fn verb_subject(verb: Verb, name: Option<&str>) -> String {
    match name {
        None => format!("{SERVICE_PREFIX}.{}", verb.as_str()),
        Some(name) => format!("{SERVICE_PREFIX}.{}.{name}", verb.as_str()),
    }
}

/// What one instance subscribes to (without a queue group: every instance answers),
/// all three verbs at once: `$SRV.*`, `$SRV.*.<name>`, `$SRV.*.<name>.<id>`.
pub fn discovery_subjects(name: &str, id: &str) -> [String; 3] {
    [
        format!("{SERVICE_PREFIX}.*"),
        format!("{SERVICE_PREFIX}.*.{name}"),
        format!("{SERVICE_PREFIX}.*.{name}.{id}"),
    ]
}

/// A function's service version: `0.0.<binding revision>`. Any binding change may
/// change behaviour (semver's `0.y.z`), and the revision reads as the patch number.
pub fn service_version(revision: u64) -> String {
    format!("0.0.{revision}")
}

/// The endpoint name of a bound subject: ADR-32 names allow only `A-Za-z0-9_-`, so
/// every other character (`.`, `*`, `>`) becomes `_` (`orders.*` → `orders__`).
pub fn endpoint_name(subject: &str) -> String {
    subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The fields every discovery reply starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The service name: the function's name.
    pub name: String,
    /// This instance (one function on one node).
    pub id: String,
    pub version: String,
    /// Other implementations send `null` for none.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResponse {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub identity: Identity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub identity: Identity,
    pub description: String,
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub name: String,
    pub subject: String,
    #[serde(default)]
    pub queue_group: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub identity: Identity,
    /// When the instance started, RFC 3339.
    pub started: String,
    pub endpoints: Vec<EndpointStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub name: String,
    pub subject: String,
    #[serde(default)]
    pub queue_group: String,
    pub num_requests: u64,
    pub num_errors: u64,
    /// Nanoseconds, in total.
    pub processing_time: u64,
    /// Nanoseconds: `processing_time / num_requests`, truncated; 0 without requests.
    pub average_processing_time: u64,
    /// `"<code>:<message>"` of the last error, `""` when there was none.
    pub last_error: String,
    /// natsfn's own counts (ADR-32's free-form `data`; another service's, whatever
    /// its shape, reads as none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "natsfn_data"
    )]
    pub data: Option<EndpointData>,
}

fn natsfn_data<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<EndpointData>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// What natsfn adds to an endpoint's stats: its 5xx outcomes (a canary judges a
/// version by them; `num_errors` also counts 4xx refusals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointData {
    #[serde(default)]
    pub server_errors: u64,
    /// Workers of the instance ready to take an invocation now (an alias'
    /// provisioned workers are counted by them).
    #[serde(default)]
    pub ready_workers: u64,
}

impl PingResponse {
    pub fn new(identity: Identity) -> PingResponse {
        PingResponse {
            kind: PING_RESPONSE_TYPE.into(),
            identity,
        }
    }
}

impl InfoResponse {
    pub fn new(
        identity: Identity,
        description: String,
        endpoints: Vec<EndpointInfo>,
    ) -> InfoResponse {
        InfoResponse {
            kind: INFO_RESPONSE_TYPE.into(),
            identity,
            description,
            endpoints,
        }
    }
}

impl StatsResponse {
    pub fn new(
        identity: Identity,
        started: String,
        endpoints: Vec<EndpointStats>,
    ) -> StatsResponse {
        StatsResponse {
            kind: STATS_RESPONSE_TYPE.into(),
            identity,
            started,
            endpoints,
        }
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn schema(name: &str) -> jsonschema::Validator {
        let text = match name {
            "ping" => include_str!("../tests/schemas/ping_response.json"),
            "info" => include_str!("../tests/schemas/info_response.json"),
            "stats" => include_str!("../tests/schemas/stats_response.json"),
            _ => unreachable!("no schema {name}"),
        };
        let schema: Value = serde_json::from_str(text).expect("schema JSON");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("valid schema")
    }

    fn assert_valid(schema_name: &str, value: &Value) {
        let validator = schema(schema_name);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{value} is not a valid {schema_name} reply: {errors:?}"
        );
    }

    fn identity(revision: u64) -> Identity {
        Identity {
            name: "hello-world_2".into(),
            id: "3f2c9a7e0b5d4c1f8e6a2b9d7c4e1f0a".into(),
            version: service_version(revision),
            metadata: Metadata::from([(METADATA_NODE.into(), "node-a".into())]),
        }
    }

    fn endpoints() -> Vec<(String, String)> {
        let canonical = (
            CANONICAL_ENDPOINT.into(),
            "natsfn.invoke.hello-world_2".into(),
        );
        let bound = ["orders.*.created", "greet.>"]
            .iter()
            .map(|s| (endpoint_name(s), s.to_string()));
        std::iter::once(canonical).chain(bound).collect()
    }

    #[test]
    fn ping_reply_matches_the_adr_schema() {
        let value = serde_json::to_value(PingResponse::new(identity(7))).unwrap();
        assert_valid("ping", &value);
        assert_eq!(value["type"], "io.nats.micro.v1.ping_response");
        assert_eq!(value["version"], "0.0.7");
        assert_eq!(value["metadata"], json!({"natsfn.node": "node-a"}));
    }

    #[test]
    fn info_reply_matches_the_adr_schema() {
        let endpoints = endpoints()
            .into_iter()
            .map(|(name, subject)| EndpointInfo {
                name,
                subject,
                queue_group: "natsfn.hello-world_2".into(),
                metadata: Metadata::new(),
            })
            .collect();
        let reply = InfoResponse::new(identity(1), "a function".into(), endpoints);
        let value = serde_json::to_value(&reply).unwrap();
        assert_valid("info", &value);
        assert_eq!(value["type"], "io.nats.micro.v1.info_response");
        assert_eq!(value["description"], "a function");
        let first = &value["endpoints"][0];
        assert_eq!(
            first,
            &json!({"name": "invoke", "subject": "natsfn.invoke.hello-world_2",
                    "queue_group": "natsfn.hello-world_2", "metadata": {}})
        );
    }

    #[test]
    fn stats_reply_matches_the_adr_schema() {
        let endpoints = endpoints()
            .into_iter()
            .map(|(name, subject)| EndpointStats {
                name,
                subject,
                queue_group: "natsfn.hello-world_2".into(),
                num_requests: 3,
                num_errors: 1,
                processing_time: 3_000_000,
                average_processing_time: 1_000_000,
                last_error: "500:ValueError: bad input".into(),
                data: Some(EndpointData {
                    server_errors: 1,
                    ready_workers: 2,
                }),
            })
            .collect();
        let reply = StatsResponse::new(identity(2), "2026-12-02T02:40:00.123Z".into(), endpoints);
        let value = serde_json::to_value(&reply).unwrap();
        assert_valid("stats", &value);
        assert_eq!(value["type"], "io.nats.micro.v1.stats_response");
        assert_eq!(value["endpoints"][1]["num_errors"], 1);
        assert_eq!(
            value["endpoints"][1]["last_error"],
            "500:ValueError: bad input"
        );
    }

    #[test]
    fn the_schemas_catch_what_they_should() {
        // The checks above mean something only if the validator rejects bad replies.
        let mut value = serde_json::to_value(PingResponse::new(identity(1))).unwrap();
        value.as_object_mut().unwrap().remove("id");
        assert!(!schema("ping").is_valid(&value));
        let mut value = serde_json::to_value(PingResponse::new(identity(1))).unwrap();
        value["version"] = json!("7");
        assert!(!schema("ping").is_valid(&value));
        let reply = StatsResponse::new(identity(1), "yesterday".into(), Vec::new());
        assert!(!schema("stats").is_valid(&serde_json::to_value(reply).unwrap()));
        let mut value = serde_json::to_value(PingResponse::new(identity(1))).unwrap();
        value["type"] = json!("io.nats.micro.v1.info_response");
        assert!(!schema("ping").is_valid(&value));
    }

    #[test]
    fn versions_are_semver_for_every_revision() {
        for revision in [1, 9, 10, 12345, u64::MAX] {
            let value = serde_json::to_value(PingResponse::new(identity(revision))).unwrap();
            assert_valid("ping", &value);
        }
    }

    #[test]
    fn endpoint_names_keep_only_what_adr_32_allows() {
        assert_eq!(endpoint_name("myfunction.lambda"), "myfunction_lambda");
        assert_eq!(endpoint_name("orders.*"), "orders__");
        assert_eq!(endpoint_name("a-b_c.>"), "a-b_c__");
        assert_eq!(endpoint_name("Grüße.x"), "Gr__e_x");
    }

    #[test]
    fn verbs_are_read_from_discovery_subjects() {
        assert_eq!(Verb::of_subject("$SRV.PING"), Some(Verb::Ping));
        assert_eq!(Verb::of_subject("$SRV.INFO.hello"), Some(Verb::Info));
        assert_eq!(Verb::of_subject("$SRV.STATS.hello.abc"), Some(Verb::Stats));
        assert_eq!(Verb::of_subject("$SRV.SCHEMA.hello"), None);
        assert_eq!(Verb::of_subject("$SRV.PING.hello.abc.extra"), None);
        assert_eq!(Verb::of_subject("$SRV.ping"), None);
        assert_eq!(Verb::of_subject("SRV.PING"), None);
        assert_eq!(verb_subject(Verb::Stats, None), "$SRV.STATS");
        assert_eq!(verb_subject(Verb::Stats, Some("hello")), "$SRV.STATS.hello");
        assert_eq!(
            discovery_subjects("hello", "x1"),
            ["$SRV.*", "$SRV.*.hello", "$SRV.*.hello.x1"]
        );
    }

    #[test]
    fn another_services_endpoint_data_reads_as_none() {
        let endpoint = |data: &str| {
            format!(
                r#"{{"name":"e","subject":"s","num_requests":1,"num_errors":0,
                    "processing_time":0,"average_processing_time":0,"last_error":"","data":{data}}}"#
            )
        };
        let theirs: EndpointStats = serde_json::from_str(&endpoint(r#""free text""#)).unwrap();
        assert_eq!(theirs.data, None);
        let ours: EndpointStats =
            serde_json::from_str(&endpoint(r#"{"server_errors":3,"ready_workers":2}"#)).unwrap();
        assert_eq!(
            ours.data,
            Some(EndpointData {
                server_errors: 3,
                ready_workers: 2
            })
        );
    }

    #[test]
    fn replies_of_other_implementations_parse() {
        // nats.go sends `null` metadata; queue_group is optional in the schema.
        let text = r#"{"type":"io.nats.micro.v1.stats_response","name":"svc","id":"x",
            "version":"1.0.0","metadata":null,"started":"2026-12-02T02:40:00Z",
            "endpoints":[{"name":"e","subject":"s","num_requests":2,"num_errors":0,
            "processing_time":10,"average_processing_time":5,"last_error":"","data":{"a":1}}]}"#;
        let reply: StatsResponse = serde_json::from_str(text).unwrap();
        assert!(reply.identity.metadata.is_empty());
        assert_eq!(reply.endpoints[0].num_requests, 2);
        assert_eq!(reply.endpoints[0].queue_group, "");
        let ours = StatsResponse::new(identity(3), "2026-12-02T02:40:00Z".into(), Vec::new());
        let back: StatsResponse =
            serde_json::from_slice(&serde_json::to_vec(&ours).unwrap()).unwrap();
        assert_eq!(back, ours);
    }
}
