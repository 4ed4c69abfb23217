//! Prometheus metrics of the gateway, served as text on `/metrics`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    /// Requests by route and HTTP status.
    pub requests: IntCounterVec,
    /// Time until the HTTP response head (streaming: until the stream starts), by route.
    pub request_duration: HistogramVec,
    /// Time from request to the model's first output, by model (streaming only).
    pub time_to_first_token: HistogramVec,
    /// Tokens by model and kind (`input`, `output`).
    pub tokens: IntCounterVec,
    /// Backend failures by backend and kind (`timeout`, `rate_limited`, `rejected`, `failed`).
    pub backend_errors: IntCounterVec,
    /// Server-side tool calls by tool and result (`ok` or the failure's code).
    pub tool_calls: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("antwort_gateway".into()), None)
            .expect("a static prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "HTTP requests by route and status."),
            &["route", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time to the response head, by route.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "time_to_first_token_seconds",
                "Time to the model's first output, by model.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )
        .expect("valid metric");
        let tokens = IntCounterVec::new(
            Opts::new("tokens_total", "Tokens by model and kind."),
            &["model", "kind"],
        )
        .expect("valid metric");
        let backend_errors = IntCounterVec::new(
            Opts::new("backend_errors_total", "Backend failures by backend and kind."),
            &["backend", "kind"],
        )
        .expect("valid metric");
        let tool_calls = IntCounterVec::new(
            Opts::new("tool_calls_total", "Server-side tool calls by tool and result."),
            &["tool", "result"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(time_to_first_token.clone()),
            Box::new(tokens.clone()),
            Box::new(backend_errors.clone()),
            Box::new(tool_calls.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            request_duration,
            time_to_first_token,
            tokens,
            backend_errors,
            tool_calls,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("encoding to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
