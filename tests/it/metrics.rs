//! `natsfn node --metrics ADDR`: the node's Prometheus series on `/metrics`.

use std::collections::BTreeSet;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// `GET /metrics` by hand (HTTP/1.0: the server closes when done); the body.
pub async fn scrape(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the series `name` with exactly these labels, if it is exposed.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeSet<(&str, &str)> = labels.iter().copied().collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: BTreeSet<(&str, &str)> = label_text
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (series_name == name && found == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}

#[tokio::test]
async fn metrics_count_invocations_by_outcome_cold_starts_and_workers() {
    let port = free_port();
    let server = NatsServer::start();
    let addr = format!("127.0.0.1:{port}");
    let node = Node::start_with(&server, "node-a", &["--metrics", &addr]);
    let env = Env::with(server, node).await;
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    if event.get('fail'):\n        raise ValueError('asked to')\n    return 'ok'\n",
    )]);
    env.bind_ready("counted", Binding::python("app.handler", &code).pool(0, 1))
        .await;
    // pool.min 0: the first invocation starts the worker, the others find it warm.
    let first = env.invoke("counted", "{}").await;
    assert_eq!(error_code(&first), None, "{first:?}");
    assert_eq!(header(&first, "Natsfn-Cold-Start").as_deref(), Some("true"));
    let second = env.invoke("counted", "{}").await;
    assert_eq!(error_code(&second), None, "{second:?}");
    let failed = env.invoke("counted", r#"{"fail": true}"#).await;
    assert_eq!(error_code(&failed), Some(500), "{failed:?}");
    // Refused by the subscription, before the function sees it.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Natsfn-Deadline-Ms", "tomorrow");
    let request = async_nats::Request::new()
        .headers(headers)
        .payload("{}".into())
        .timeout(Some(DEADLINE));
    let refused = env
        .client
        .send_request("natsfn.invoke.counted", request)
        .await
        .expect("request");
    assert_eq!(error_code(&refused), Some(400), "{refused:?}");

    // An answer is counted just after it went out.
    let f = ("function", "counted");
    let text = eventually("all four answers to be counted", || async {
        let text = scrape(port).await;
        (value(&text, "natsfn_invocation_duration_seconds_count", &[f]) == Some(4.0))
            .then_some(text)
    })
    .await;
    let series = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);
    assert_eq!(
        series("natsfn_invocations_total", &[f, ("outcome", "ok")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series("natsfn_invocations_total", &[f, ("outcome", "error")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series("natsfn_invocations_total", &[f, ("outcome", "bad_request")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series("natsfn_invocations_total", &[f, ("outcome", "timeout")]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(
            "natsfn_invocation_duration_seconds_bucket",
            &[f, ("le", "+Inf")]
        ),
        Some(4.0),
        "{text}"
    );
    let sum = series("natsfn_invocation_duration_seconds_sum", &[f]).expect("duration sum");
    assert!(sum > 0.0, "{text}");
    assert_eq!(
        series("natsfn_cold_starts_total", &[f]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(series("natsfn_queue_depth", &[f]), Some(0.0), "{text}");
    for (state, n) in [("starting", 0.0), ("idle", 1.0), ("busy", 0.0)] {
        assert_eq!(
            series("natsfn_workers", &[f, ("state", state)]),
            Some(n),
            "{state}: {text}"
        );
    }
    assert_eq!(series("natsfn_node_workers", &[]), Some(1.0), "{text}");
    assert!(
        series("natsfn_node_max_workers", &[]).is_some_and(|n| n >= 4.0),
        "{text}"
    );
    assert_eq!(series("natsfn_nats_connected", &[]), Some(1.0), "{text}");
}

#[tokio::test]
async fn metrics_count_results_too_large_and_functions_that_cannot_start() {
    let port = free_port();
    let server = NatsServer::start();
    let addr = format!("127.0.0.1:{port}");
    let node = Node::start_with(&server, "node-a", &["--metrics", &addr]);
    let env = Env::with(server, node).await;
    let big = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    return 'x' * event\n",
    )]);
    env.bind_ready("big", Binding::python("app.handler", &big))
        .await;
    let max = env.client.server_info().max_payload;
    let reply = env.invoke("big", (max + 1).to_string()).await;
    assert_eq!(error_code(&reply), Some(413), "{reply:?}");

    let broken = code_dir(&[("app.py", "import no_such_module\n")]);
    let revision = env
        .put_binding("broken", Binding::python("app.handler", &broken))
        .await;
    env.wait_status("broken", |s| {
        s.revision >= revision
            && matches!(
                s.state,
                natsfn_protocol::FunctionState::Error | natsfn_protocol::FunctionState::Crashloop
            )
    })
    .await;
    let reply = env.invoke("broken", "{}").await;
    assert_eq!(error_code(&reply), Some(503), "{reply:?}");

    let text = eventually("the 413 and the 503 to be counted", || async {
        let text = scrape(port).await;
        let big = value(
            &text,
            "natsfn_invocations_total",
            &[("function", "big"), ("outcome", "too_large")],
        );
        let broken = value(
            &text,
            "natsfn_invocations_total",
            &[("function", "broken"), ("outcome", "unavailable")],
        );
        (big == Some(1.0) && broken == Some(1.0)).then_some(text)
    })
    .await;
    assert_eq!(
        value(
            &text,
            "natsfn_invocations_total",
            &[("function", "big"), ("outcome", "ok")]
        ),
        Some(0.0),
        "{text}"
    );
}
