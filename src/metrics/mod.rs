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

/// Labels of the replay-store counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReplayLabels {
    /// `fresh` (first use), `replayed`, or `error` (store unreachable).
    pub result: &'static str,
}

/// Hit, miss and error counts of one cache, kept by its owner and read at scrape time
/// (see `state::RuntimeCollector`).
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl CacheStats {
    /// Counts one lookup.
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a miss whose fetch failed (also counted as a miss).
    pub fn error(&self) {
        self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// `(result, count)` for `hit`, `miss` and `error`.
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        use std::sync::atomic::Ordering::Relaxed;
        [("hit", self.hits.load(Relaxed)), ("miss", self.misses.load(Relaxed)), ("error", self.errors.load(Relaxed))]
    }
}

/// The replay store's latency and results; shared with `auth::dpop::replay::Measured`.
#[derive(Debug, Clone)]
pub struct ReplayMetrics {
    /// Time per insert-if-absent.
    pub latency: Histogram,
    /// Inserts by result.
    pub results: Family<ReplayLabels, Counter>,
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
    config_ok: Gauge<i64, AtomicI64>,
    config_ok_at: Gauge<i64, AtomicI64>,
    /// The replay store's metrics.
    pub replay: ReplayMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(None)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Metrics {
    /// Creates and registers every family, and `collector` for the values read at
    /// scrape time.
    pub fn new(collector: Option<Box<dyn prometheus_client::collector::Collector>>) -> Metrics {
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
        let config_ok = Gauge::<i64, AtomicI64>::default();
        let config_ok_at = Gauge::<i64, AtomicI64>::default();
        config_ok.set(1);
        config_ok_at.set(unix_now());
        registry.register(
            "config_last_reload_successful",
            "1 if the last config reload succeeded (or none was tried), else 0",
            config_ok.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running config was loaded",
            config_ok_at.clone(),
        );
        // 50 µs to ~400 ms: a memory insert is far below, a Redis round trip in the middle.
        let replay = ReplayMetrics {
            latency: Histogram::new(exponential_buckets(0.00005, 2.0, 14)),
            results: Family::default(),
        };
        registry.register("replay_duration_seconds", "Time per replay-store check", replay.latency.clone());
        registry.register("replay_checks", "Replay-store checks, by result", replay.results.clone());
        if let Some(c) = collector {
            registry.register_collector(c);
        }
        Metrics { registry, requests, duration, upstream_duration, in_flight, reloads, config_ok, config_ok_at, replay }
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
        if kind == "config" {
            self.config_ok.set(i64::from(ok));
            if ok {
                self.config_ok_at.set(unix_now());
            }
        }
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
