//! Logs, and with the `otlp` feature OpenTelemetry traces.
//!
//! [`init`] installs the `tracing` subscriber: JSON or text lines on stderr, plus, when
//! `log.otlp` is set, a `tracing-opentelemetry` layer whose spans a batch processor sends
//! to the collector over OTLP/HTTP on atgate's tokio runtime. Each request's span takes
//! its parent from an incoming W3C `traceparent`, and the request sent upstream carries
//! the span's own `traceparent`, so a trace runs client -> atgate -> upstream. Without the
//! feature the hooks below compile to nothing.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogConfig;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued (on shutdown). Blocks until the collector answers:
    /// call it off the runtime's worker threads (the export runs on them).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("atgate: trace export shutdown: {e}");
        }
    }

    /// Sends the spans queued so far and waits for the collector's answer; blocks like
    /// [`Telemetry::shutdown`].
    pub fn flush(&self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

/// Installs the global subscriber. With `log.otlp` it must run inside the tokio runtime
/// (the exporter's batch task lives there).
pub fn init(log: &LogConfig) -> Result<Telemetry, String> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&log.level)).unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if log.json {
        fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
    } else {
        fmt.compact().boxed()
    };
    #[cfg(feature = "otlp")]
    if let Some(otlp) = &log.otlp {
        let (layer, provider) = otlp::layer(otlp)?;
        tracing_subscriber::registry()
            .with(fmt.and_then(layer).with_filter(filter))
            .try_init()
            .map_err(|e| e.to_string())?;
        return Ok(Telemetry { provider: Some(provider) });
    }
    tracing_subscriber::registry().with(fmt.with_filter(filter)).try_init().map_err(|e| e.to_string())?;
    Ok(Telemetry::default())
}

/// Makes the request span a child of the caller's trace (`traceparent`), and notes the
/// method and path on it.
#[allow(unused_variables)]
pub fn start_request(span: &tracing::Span, req: &http::Request<crate::body::Body>) {
    #[cfg(feature = "otlp")]
    otlp::start_request(span, req);
}

/// Notes the outcome on the request span.
#[allow(unused_variables)]
pub fn end_request(span: &tracing::Span, status: http::StatusCode, route: Option<&str>) {
    #[cfg(feature = "otlp")]
    otlp::end_request(span, status, route);
}

/// Sets `traceparent` (and `tracestate`) on an upstream request to the current span.
#[allow(unused_variables)]
pub fn inject(headers: &mut http::HeaderMap) {
    #[cfg(feature = "otlp")]
    otlp::inject(headers);
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_http::{HeaderExtractor, HeaderInjector};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor};
    use opentelemetry_sdk::{Resource, runtime};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::registry::LookupSpan;

    use crate::config::OtlpConfig;

    pub(super) fn layer<S>(
        config: &OtlpConfig,
    ) -> Result<(impl tracing_subscriber::Layer<S>, SdkTracerProvider), String>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(config.endpoint.as_str())
            .with_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("log.otlp: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        let tracer = provider.tracer("atgate");
        Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
    }

    pub(super) fn start_request(span: &tracing::Span, req: &http::Request<crate::body::Body>) {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
        let _ = span.set_parent(parent);
        span.set_attribute("http.request.method", req.method().as_str().to_owned());
        span.set_attribute("url.path", req.uri().path().to_owned());
    }

    pub(super) fn end_request(span: &tracing::Span, status: http::StatusCode, route: Option<&str>) {
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if let Some(r) = route {
            span.set_attribute("http.route", r.to_owned());
        }
    }

    pub(super) fn inject(headers: &mut http::HeaderMap) {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}
