//! A function's NATS micro service (ADR-32) as its FunctionActor keeps it: this
//! instance's id and start time, the endpoints (the canonical subject and the bound
//! ones) and what each has served. Plain data; the actor subscribes and replies.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use natsfn_protocol::names::queue_group;
use natsfn_protocol::service::{
    endpoint_name, service_version, EndpointData, EndpointInfo, EndpointStats, Identity,
    InfoResponse, Metadata, PingResponse, StatsResponse, Verb, CANONICAL_ENDPOINT, METADATA_NODE,
    METADATA_VERSION,
};
use natsfn_protocol::version::LATEST;
use natsfn_protocol::{BindingSpec, ErrorCode};

use crate::invocation::EndpointId;

pub(crate) struct ServiceStats {
    id: String,
    /// RFC 3339.
    started: String,
    metadata: Metadata,
    queue_group: String,
    /// Every subject served since the start, in the order they were first bound; a
    /// subject unbound and bound again keeps its slot and its counts.
    endpoints: Vec<Endpoint>,
}

struct Endpoint {
    name: String,
    subject: String,
    /// Still bound (reported) or left (kept only so that its id stays valid).
    active: bool,
    requests: u64,
    errors: u64,
    /// 5xx outcomes among `errors`.
    server_errors: u64,
    processing_ns: u64,
    last_error: String,
}

impl ServiceStats {
    /// A new instance of `function`'s service on `node`, serving its canonical subject.
    pub(crate) fn new(
        function: &str,
        canonical_subject: String,
        node: &str,
        version: Option<u64>,
    ) -> ServiceStats {
        let started = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        ServiceStats {
            id: uuid::Uuid::new_v4().simple().to_string(),
            started,
            metadata: Metadata::from([
                (METADATA_NODE.to_owned(), node.to_owned()),
                (
                    METADATA_VERSION.to_owned(),
                    version.map_or_else(|| LATEST.to_owned(), |n| n.to_string()),
                ),
            ]),
            queue_group: queue_group(function),
            endpoints: vec![Endpoint::new(
                CANONICAL_ENDPOINT.to_owned(),
                canonical_subject,
            )],
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The subjects served from now on: those in `subjects` are reported (new ones
    /// added), the others leave INFO and STATS.
    pub(crate) fn serve(&mut self, subjects: &BTreeSet<String>) {
        for e in &mut self.endpoints {
            e.active = subjects.contains(&e.subject);
        }
        for subject in subjects {
            if !self.endpoints.iter().any(|e| &e.subject == subject) {
                let name = endpoint_name(subject);
                self.endpoints.push(Endpoint::new(name, subject.clone()));
            }
        }
    }

    /// The endpoint of a served subject (the canonical one for a subject never served,
    /// which `serve` rules out).
    pub(crate) fn endpoint(&self, subject: &str) -> EndpointId {
        EndpointId(
            self.endpoints
                .iter()
                .position(|e| e.subject == subject)
                .unwrap_or(0),
        )
    }

    /// One finished invocation, `took` since its request arrived, and its error reply's
    /// code and `errorType: errorMessage`, if it failed. Integer adds; an error's text
    /// (its first line) is copied into the buffer of the previous one.
    pub(crate) fn record(
        &mut self,
        endpoint: EndpointId,
        took: Duration,
        error: Option<(ErrorCode, &str)>,
    ) {
        let Some(e) = self.endpoints.get_mut(endpoint.0) else {
            return;
        };
        e.requests += 1;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        e.processing_ns = e.processing_ns.saturating_add(nanos);
        if let Some((code, message)) = error {
            e.errors += 1;
            if code.code() >= 500 {
                e.server_errors += 1;
            }
            e.last_error.clear();
            let first_line = message.lines().next().unwrap_or_default();
            let _ = write!(e.last_error, "{}:{first_line}", code.code());
        }
    }

    /// The reply to a discovery request.
    pub(crate) fn reply(
        &self,
        verb: Verb,
        function: &str,
        revision: u64,
        spec: &BindingSpec,
        ready_workers: u64,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let identity = self.identity(function, revision);
        match verb {
            Verb::Ping => serde_json::to_vec(&PingResponse::new(identity)),
            Verb::Info => serde_json::to_vec(&self.info(identity, spec)),
            Verb::Stats => serde_json::to_vec(&self.stats(identity, ready_workers)),
        }
    }

    fn identity(&self, function: &str, revision: u64) -> Identity {
        Identity {
            name: function.to_owned(),
            id: self.id.clone(),
            version: service_version(revision),
            metadata: self.metadata.clone(),
        }
    }

    fn info(&self, identity: Identity, spec: &BindingSpec) -> InfoResponse {
        let description = match &spec.handler {
            Some(handler) => format!("natsfn function: {} {handler}", spec.runtime.as_str()),
            None => format!("natsfn function: {}", spec.runtime.as_str()),
        };
        let endpoints = self
            .active()
            .map(|e| EndpointInfo {
                name: e.name.clone(),
                subject: e.subject.clone(),
                queue_group: self.queue_group.clone(),
                metadata: Metadata::new(),
            })
            .collect();
        InfoResponse::new(identity, description, endpoints)
    }

    fn stats(&self, identity: Identity, ready_workers: u64) -> StatsResponse {
        let endpoints = self
            .active()
            .map(|e| EndpointStats {
                name: e.name.clone(),
                subject: e.subject.clone(),
                queue_group: self.queue_group.clone(),
                num_requests: e.requests,
                num_errors: e.errors,
                processing_time: e.processing_ns,
                average_processing_time: e.processing_ns.checked_div(e.requests).unwrap_or(0),
                last_error: e.last_error.clone(),
                data: Some(EndpointData {
                    server_errors: e.server_errors,
                    ready_workers,
                }),
            })
            .collect();
        StatsResponse::new(identity, self.started.clone(), endpoints)
    }

    fn active(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.active)
    }
}

impl Endpoint {
    fn new(name: String, subject: String) -> Endpoint {
        Endpoint {
            name,
            subject,
            active: true,
            requests: 0,
            errors: 0,
            server_errors: 0,
            processing_ns: 0,
            last_error: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natsfn_protocol::service::{INFO_RESPONSE_TYPE, PING_RESPONSE_TYPE, STATS_RESPONSE_TYPE};
    use serde_json::{json, Value};

    fn spec() -> BindingSpec {
        BindingSpec::parse(
            "hello",
            br#"{"runtime": "python3", "handler": "app.handler", "code": {"dir": "/code"},
                 "subjects": ["greet.hello"]}"#,
        )
        .expect("valid spec")
    }

    fn service() -> ServiceStats {
        ServiceStats::new("hello", "natsfn.invoke.hello".into(), "node-a", None)
    }

    fn serve(service: &mut ServiceStats, subjects: &[&str]) {
        let subjects = subjects.iter().map(|s| s.to_string()).collect();
        service.serve(&subjects);
    }

    fn reply(service: &ServiceStats, verb: Verb, revision: u64) -> Value {
        serde_json::from_slice(&service.reply(verb, "hello", revision, &spec(), 0).unwrap())
            .unwrap()
    }

    #[test]
    fn ping_names_the_function_its_instance_and_revision() {
        let service = service();
        let ping = reply(&service, Verb::Ping, 12);
        assert_eq!(
            ping,
            json!({"type": PING_RESPONSE_TYPE, "name": "hello", "id": service.id(),
                   "version": "0.0.12", "metadata": {"natsfn.node": "node-a", "natsfn.version": "$LATEST"}})
        );
        assert_eq!(service.id().len(), 32);
        assert_ne!(
            service.id(),
            self::service().id(),
            "each instance its own id"
        );
    }

    #[test]
    fn info_lists_the_canonical_and_bound_subjects_with_the_queue_group() {
        let mut service = service();
        serve(
            &mut service,
            &["natsfn.invoke.hello", "greet.hello", "orders.*"],
        );
        serve(&mut service, &["natsfn.invoke.hello", "greet.hello"]);
        let info = reply(&service, Verb::Info, 3);
        assert_eq!(info["type"], INFO_RESPONSE_TYPE);
        assert_eq!(info["description"], "natsfn function: python3 app.handler");
        assert_eq!(
            info["endpoints"],
            json!([
                {"name": "invoke", "subject": "natsfn.invoke.hello", "queue_group": "natsfn.hello", "metadata": {}},
                {"name": "greet_hello", "subject": "greet.hello", "queue_group": "natsfn.hello", "metadata": {}},
            ])
        );
    }

    #[test]
    fn stats_count_requests_errors_and_time_per_endpoint() {
        let mut service = service();
        serve(&mut service, &["natsfn.invoke.hello", "greet.hello"]);
        let canonical = service.endpoint("natsfn.invoke.hello");
        let bound = service.endpoint("greet.hello");
        service.record(canonical, Duration::from_micros(100), None);
        service.record(canonical, Duration::from_micros(200), None);
        service.record(
            canonical,
            Duration::from_micros(301),
            Some((ErrorCode::FunctionError, "ValueError: bad input\nmore")),
        );
        service.record(
            bound,
            Duration::from_millis(1),
            Some((
                ErrorCode::TooManyRequests,
                "TooManyRequestsException: queue full",
            )),
        );
        let stats = reply(&service, Verb::Stats, 4);
        assert_eq!(stats["type"], STATS_RESPONSE_TYPE);
        assert_eq!(stats["version"], "0.0.4");
        assert!(time::OffsetDateTime::parse(
            stats["started"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
        assert_eq!(
            stats["endpoints"][0],
            json!({"name": "invoke", "subject": "natsfn.invoke.hello", "queue_group": "natsfn.hello",
                   "num_requests": 3, "num_errors": 1, "processing_time": 601_000,
                   "average_processing_time": 200_333, "last_error": "500:ValueError: bad input",
                   "data": {"server_errors": 1, "ready_workers": 0}})
        );
        assert_eq!(stats["endpoints"][1]["num_requests"], 1);
        assert_eq!(
            stats["endpoints"][1]["data"]["server_errors"], 0,
            "a 429 is no server error"
        );
        assert_eq!(
            stats["endpoints"][1]["last_error"],
            "429:TooManyRequestsException: queue full"
        );
    }

    #[test]
    fn an_endpoint_without_requests_averages_zero() {
        let stats = reply(&service(), Verb::Stats, 1);
        let endpoint = &stats["endpoints"][0];
        assert_eq!(endpoint["num_requests"], 0);
        assert_eq!(endpoint["average_processing_time"], 0);
        assert_eq!(endpoint["last_error"], "");
    }

    #[test]
    fn a_subject_bound_again_keeps_its_counts_and_id() {
        let mut service = service();
        serve(&mut service, &["natsfn.invoke.hello", "greet.hello"]);
        let first = service.endpoint("greet.hello");
        service.record(first, Duration::from_millis(1), None);
        serve(&mut service, &["natsfn.invoke.hello"]);
        // A request still draining from the left subject is counted where it belongs.
        service.record(first, Duration::from_millis(1), None);
        assert_eq!(
            reply(&service, Verb::Stats, 1)["endpoints"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        serve(&mut service, &["natsfn.invoke.hello", "greet.hello"]);
        assert_eq!(service.endpoint("greet.hello"), first);
        assert_eq!(
            reply(&service, Verb::Stats, 2)["endpoints"][1]["num_requests"],
            2
        );
    }
}
