//! The node's Prometheus series. Families live in one [`Metrics`] (shared through
//! [`NodeContext`](crate::context::NodeContext)); each FunctionActor takes a
//! [`FunctionMetrics`] once, holding its own series, so that recording on the hot path
//! is an atomic add with no label lookup.

use std::time::Duration;

use natsfn_protocol::ErrorCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the duration histogram: from a warm echo (~0.2 ms) to
/// the longest `timeout_ms` (900 s).
const DURATION_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
];

/// How an invocation ended, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Timeout,
    Crashed,
    Throttled,
    Unavailable,
    BadRequest,
    TooLarge,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Crashed,
        Outcome::Throttled,
        Outcome::Unavailable,
        Outcome::BadRequest,
        Outcome::TooLarge,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Crashed => "crashed",
            Outcome::Throttled => "throttled",
            Outcome::Unavailable => "unavailable",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
        }
    }
}

impl From<ErrorCode> for Outcome {
    fn from(code: ErrorCode) -> Outcome {
        match code {
            ErrorCode::BadRequest => Outcome::BadRequest,
            ErrorCode::PayloadTooLarge => Outcome::TooLarge,
            ErrorCode::TooManyRequests => Outcome::Throttled,
            ErrorCode::FunctionError => Outcome::Error,
            ErrorCode::WorkerFailed => Outcome::Crashed,
            ErrorCode::Unavailable => Outcome::Unavailable,
            ErrorCode::TimedOut => Outcome::Timeout,
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WorkerState {
    Starting,
    Idle,
    Busy,
}

impl WorkerState {
    const ALL: [WorkerState; 3] = [WorkerState::Starting, WorkerState::Idle, WorkerState::Busy];
}

impl EncodeLabelValue for WorkerState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let name = match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
        };
        EncodeLabelValue::encode(&name, encoder)
    }
}

/// How an async event's delivery to this node was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Settled {
    Succeeded,
    Retried,
    DeadLettered,
    /// Put back untouched (the function's queue was full): not an attempt.
    Throttled,
}

impl Settled {
    const ALL: [Settled; 4] = [
        Settled::Succeeded,
        Settled::Retried,
        Settled::DeadLettered,
        Settled::Throttled,
    ];
}

impl EncodeLabelValue for Settled {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let name = match self {
            Settled::Succeeded => "succeeded",
            Settled::Retried => "retried",
            Settled::DeadLettered => "dead_lettered",
            Settled::Throttled => "throttled",
        };
        EncodeLabelValue::encode(&name, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SettledLabels {
    function: String,
    outcome: Settled,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InvocationLabels {
    function: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    function: String,
    state: WorkerState,
}

type DurationFamily = Family<FunctionLabels, Histogram, fn() -> Histogram>;

/// Every series of a node, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    invocations: Family<InvocationLabels, Counter>,
    duration: DurationFamily,
    cold_starts: Family<FunctionLabels, Counter>,
    queue_depth: Family<FunctionLabels, Gauge>,
    workers: Family<WorkerLabels, Gauge>,
    node_workers: Gauge,
    max_workers: Gauge,
    async_settled: Family<SettledLabels, Counter>,
    async_pending: Family<FunctionLabels, Gauge>,
    isolated: Gauge,
}

impl Metrics {
    /// The series of a node on `client`, whose connection state is read at each scrape.
    pub fn new(client: &async_nats::Client) -> Metrics {
        let mut registry = Registry::default();
        let invocations = Family::default();
        registry.register(
            "natsfn_invocations",
            "Invocations answered, by function and outcome",
            invocations.clone(),
        );
        let duration: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "natsfn_invocation_duration",
            "Time from a request's arrival at the node to its answer",
            Unit::Seconds,
            duration.clone(),
        );
        let cold_starts = Family::default();
        registry.register(
            "natsfn_cold_starts",
            "Invocations that waited for a worker to start",
            cold_starts.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "natsfn_queue_depth",
            "Invocations waiting for a worker",
            queue_depth.clone(),
        );
        let workers = Family::default();
        registry.register(
            "natsfn_workers",
            "Worker processes, by function and state",
            workers.clone(),
        );
        let node_workers = Gauge::default();
        registry.register(
            "natsfn_node_workers",
            "Worker processes of all functions on this node",
            node_workers.clone(),
        );
        let max_workers = Gauge::default();
        registry.register(
            "natsfn_node_max_workers",
            "Most worker processes this node may run at once (--max-workers)",
            max_workers.clone(),
        );
        let async_settled = Family::default();
        registry.register(
            "natsfn_async_events",
            "Async events this node settled, by function and outcome",
            async_settled.clone(),
        );
        let async_pending = Family::default();
        registry.register(
            "natsfn_async_pending",
            "Async events of the function waiting in NATSFN_ASYNC, as of its last pull here",
            async_pending.clone(),
        );
        let isolated = Gauge::default();
        registry.register(
            "natsfn_nats_isolated",
            "1 while the node has had no NATS connection for longer than --nats-grace and takes no work, else 0",
            isolated.clone(),
        );
        registry.register_collector(Box::new(NatsConnection(client.clone())));
        Metrics {
            async_settled,
            async_pending,
            registry,
            invocations,
            duration,
            cold_starts,
            queue_depth,
            workers,
            node_workers,
            max_workers,
            isolated,
        }
    }

    /// The series of one function, looked up once.
    pub(crate) fn function(&self, name: &str) -> FunctionMetrics {
        let function = FunctionLabels {
            function: name.to_owned(),
        };
        let outcomes = Outcome::ALL.map(|outcome| {
            self.invocations.get_or_create_owned(&InvocationLabels {
                function: name.to_owned(),
                outcome,
            })
        });
        let workers = WorkerState::ALL.map(|state| {
            Share::of(self.workers.get_or_create_owned(&WorkerLabels {
                function: name.to_owned(),
                state,
            }))
        });
        let duration = self.duration.get_or_create_owned(&function);
        FunctionMetrics {
            refused: Refused {
                bad_request: outcomes[Outcome::BadRequest as usize].clone(),
                duration: duration.clone(),
            },
            outcomes,
            duration,
            cold_starts: self.cold_starts.get_or_create_owned(&function),
            queue_depth: Share::of(self.queue_depth.get_or_create_owned(&function)),
            workers,
            node_workers: Share::of(self.node_workers.clone()),
        }
    }

    /// The series of one function's async events.
    pub(crate) fn events(&self, name: &str) -> EventMetrics {
        EventMetrics {
            settled: Settled::ALL.map(|outcome| {
                self.async_settled.get_or_create_owned(&SettledLabels {
                    function: name.to_owned(),
                    outcome,
                })
            }),
            pending: self.async_pending.get_or_create_owned(&FunctionLabels {
                function: name.to_owned(),
            }),
        }
    }

    /// The text exposition (OpenMetrics) of every series.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        text
    }

    pub(crate) fn set_max_workers(&self, n: usize) {
        self.max_workers.set(n as i64);
    }

    pub(crate) fn set_isolated(&self, isolated: bool) {
        self.isolated.set(i64::from(isolated));
    }

    /// Worker processes of all functions, as their FunctionActors last reported.
    pub(crate) fn node_workers(&self) -> usize {
        self.node_workers.get().max(0) as usize
    }
}

/// `natsfn_nats_connected`, read from the client when scraped: never stale.
#[derive(Debug)]
struct NatsConnection(async_nats::Client);

impl Collector for NatsConnection {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let connected = self.0.connection_state() == async_nats::connection::State::Connected;
        let gauge = ConstGauge::new(i64::from(connected));
        let metric = encoder.encode_descriptor(
            "natsfn_nats_connected",
            "1 while the node is connected to NATS, else 0.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// One function's series, owned by its FunctionActor. Gauges hold this handle's share
/// and give it back when dropped: an actor still finishing beside its successor of
/// the same name never overwrites the other's counts, and a stopped one counts zero.
pub(crate) struct FunctionMetrics {
    /// Indexed by `Outcome as usize`.
    outcomes: [Counter; Outcome::ALL.len()],
    duration: Histogram,
    refused: Refused,
    cold_starts: Counter,
    queue_depth: Share,
    workers: [Share; WorkerState::ALL.len()],
    node_workers: Share,
}

impl FunctionMetrics {
    /// An invocation was answered, `took` after its request arrived.
    pub(crate) fn finished(&self, outcome: impl Into<Outcome>, took: Duration) {
        self.outcomes[outcome.into() as usize].inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// For the subscriptions, which answer a malformed request themselves.
    pub(crate) fn refused(&self) -> &Refused {
        &self.refused
    }

    pub(crate) fn cold_start(&self) {
        self.cold_starts.inc();
    }

    pub(crate) fn queue_depth(&mut self, n: usize) {
        self.queue_depth.set(n);
    }

    pub(crate) fn workers(&mut self, starting: usize, idle: usize, busy: usize) {
        let [s, i, b] = &mut self.workers;
        s.set(starting);
        i.set(idle);
        b.set(busy);
        self.node_workers.set(starting + idle + busy);
    }
}

/// One function's async event series, shared by its events as they settle.
#[derive(Clone)]
pub(crate) struct EventMetrics {
    /// Indexed by `Settled as usize`.
    settled: [Counter; Settled::ALL.len()],
    pending: Gauge,
}

impl EventMetrics {
    pub(crate) fn settled(&self, how: Settled) {
        self.settled[how as usize].inc();
    }

    pub(crate) fn pending(&self, n: u64) {
        self.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// The series of requests a subscription answers 400 before they become invocations.
#[derive(Clone)]
pub(crate) struct Refused {
    bad_request: Counter,
    duration: Histogram,
}

impl Refused {
    pub(crate) fn bad_request(&self, took: Duration) {
        self.bad_request.inc();
        self.duration.observe(took.as_secs_f64());
    }
}

/// This handle's part of a gauge others may add to as well.
struct Share {
    gauge: Gauge,
    mine: i64,
}

impl Share {
    fn of(gauge: Gauge) -> Share {
        Share { gauge, mine: 0 }
    }

    fn set(&mut self, n: usize) {
        let n = n as i64;
        if n != self.mine {
            self.gauge.inc_by(n - self.mine);
            self.mine = n;
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.gauge.dec_by(self.mine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_one_gauge_add_up_and_are_given_back_when_dropped() {
        let gauge = Gauge::default();
        let mut old = Share::of(gauge.clone());
        let mut new = Share::of(gauge.clone());
        old.set(3);
        new.set(2);
        assert_eq!(gauge.get(), 5);
        old.set(1);
        assert_eq!(gauge.get(), 3);
        drop(new);
        assert_eq!(gauge.get(), 1);
        drop(old);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn outcomes_follow_the_error_codes() {
        assert_eq!(Outcome::from(ErrorCode::FunctionError), Outcome::Error);
        assert_eq!(Outcome::from(ErrorCode::TimedOut), Outcome::Timeout);
        assert_eq!(Outcome::from(ErrorCode::WorkerFailed), Outcome::Crashed);
        assert_eq!(
            Outcome::from(ErrorCode::TooManyRequests),
            Outcome::Throttled
        );
        assert_eq!(Outcome::from(ErrorCode::Unavailable), Outcome::Unavailable);
        assert_eq!(Outcome::from(ErrorCode::BadRequest), Outcome::BadRequest);
        assert_eq!(Outcome::from(ErrorCode::PayloadTooLarge), Outcome::TooLarge);
        // Every outcome has its own counter.
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i);
        }
    }
}
