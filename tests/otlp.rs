//! OpenTelemetry export (`--features otlp`): a request carrying a W3C `traceparent`
//! continues that trace through atgate to the upstream, and the span reaches a loopback
//! OTLP/HTTP collector.
#![cfg(feature = "otlp")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use atgate::app::Gateway;
use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

// The exporter's batch task needs a worker while the test thread waits on a flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_traces_continue_through_atgate_and_reach_the_collector() {
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let sink = received.clone();
    let collector = serve(move |req: http::Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            sink.lock().push((path, body));
            let mut res = Response::new(atgate::body::empty());
            res.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
            res
        }
    })
    .await;
    let up = echo_upstream().await;
    let text = format!(
        "listen: 127.0.0.1:0
log: {{ level: info, otlp: {{ endpoint: \"http://{collector}/v1/traces\", service_name: gw-test }} }}
upstreams:
  up: {{ url: \"http://{up}\" }}
routes:
  - {{ name: traced, match: {{ path: / }}, upstream: up, auth: none }}
"
    );
    let config = atgate::config::Config::parse(&text, "otlp.yaml").unwrap();
    let telemetry = atgate::telemetry::init(&config.log).unwrap();
    let gw = Gateway::start(config).await.unwrap();

    let parent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let (parts, body) = send(&client(), get(format!("http://{}/x", gw.addrs()[0]), &[("traceparent", &parent)])).await;
    assert_eq!(parts.status, StatusCode::OK);
    let upstream_saw = json(&body)["headers"]["traceparent"].as_str().unwrap().to_owned();
    let fields: Vec<&str> = upstream_saw.split('-').collect();
    assert_eq!(fields[1], TRACE_ID, "the upstream request is in the caller's trace");
    assert_ne!(fields[2], CALLER_SPAN, "the upstream's parent is atgate's span, not the caller's");
    assert_eq!(fields[3], "01");

    let telemetry = tokio::task::spawn_blocking(move || {
        telemetry.flush();
        telemetry
    })
    .await
    .unwrap();
    let trace_id = (0..16).map(|i| u8::from_str_radix(&TRACE_ID[2 * i..2 * i + 2], 16).unwrap()).collect::<Vec<_>>();
    let span_id = (0..8).map(|i| u8::from_str_radix(&fields[2][2 * i..2 * i + 2], 16).unwrap()).collect::<Vec<_>>();
    let mut exported = None;
    for _ in 0..200 {
        if let Some((path, body)) = received.lock().iter().find(|(_, b)| contains(b, &trace_id)).cloned() {
            exported = Some((path, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (path, body) = exported.expect("no span of the trace reached the collector");
    assert_eq!(path, "/v1/traces");
    assert!(contains(&body, &span_id), "the exported span is the one the upstream was told about");
    for text in ["gw-test", "http.route", "traced", "http.response.status_code"] {
        assert!(contains(&body, text.as_bytes()), "{text} missing from the export");
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
