//! Metric families and their typed, bounded label sets.
//!
//! Labels are route names, upstream names, method classes, status classes and outcome
//! reasons: all bounded by the config or by code. Never DIDs, paths, tokens or jtis.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// A label value backed by a shared string (route and upstream names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// Labels of `atgate_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name, or `none` when no route matched.
    pub route: Name,
    /// `GET`, `POST`, ... or `other`.
    pub method: &'static str,
    /// `1xx` ... `5xx`.
    pub status: &'static str,
    /// `ok` or the rejection reason.
    pub outcome: &'static str,
}

/// Labels keyed by route only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name, or `none`.
    pub route: Name,
}

/// Labels keyed by upstream only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream name.
    pub upstream: Name,
}

/// Labels of reload counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `config` or `tls`.
    pub kind: &'static str,
    /// `success` or `failure`.
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// All of atgate's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge<i64, AtomicI64>,
    reloads: Family<ReloadLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("atgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let upstream_duration =
            Family::<UpstreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method, status class and outcome",
            requests.clone(),
        );
        registry.register("request_duration_seconds", "Time from request to response head, by route", duration.clone());
        registry.register(
            "upstream_duration_seconds",
            "Time from sending upstream to its response head, by upstream",
            upstream_duration.clone(),
        );
        registry.register("requests_in_flight", "Requests being served now", in_flight.clone());
        registry.register("reloads", "Config and TLS certificate reloads, by kind and result", reloads.clone());
        registry.register("build", "Build information", Info::new(vec![("version", crate::VERSION)]));
        Metrics { registry, requests, duration, upstream_duration, in_flight, reloads }
    }

    /// Counts one answered request and its latency.
    pub fn observe_request(&self, labels: &RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(&RouteLabels { route: labels.route.clone() }).observe(elapsed.as_secs_f64());
    }

    /// Records one upstream exchange.
    pub fn observe_upstream(&self, labels: &UpstreamLabels, elapsed: Duration) {
        self.upstream_duration.get_or_create(labels).observe(elapsed.as_secs_f64());
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &Gauge<i64, AtomicI64> {
        &self.in_flight
    }

    /// Counts a reload.
    pub fn reload(&self, kind: &'static str, ok: bool) {
        self.reloads.get_or_create(&ReloadLabels { kind, result: if ok { "success" } else { "failure" } }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }
}

/// `GET`, `POST`, ... for the common methods, `other` for the rest (bounded).
pub fn method_class(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `2xx` and friends.
pub fn status_class(s: http::StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
