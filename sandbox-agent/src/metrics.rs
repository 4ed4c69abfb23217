//! Prometheus metrics of one agent, in its own registry (so several agents in one test process do
//! not collide), rendered as text at `/metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use antwort_common::agent_api::ExecStatus;

/// The agent's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    executions: IntCounterVec,
    duration: HistogramVec,
    pub live_sessions: IntGauge,
    /// 1 while a spare session waits to be handed out (`python.spare_session`).
    pub spare_sessions: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let executions = IntCounterVec::new(
            Opts::new("antwort_agent_executions_total", "Executions by final status."),
            &["status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "antwort_agent_execution_duration_seconds",
                "Wall-clock time of executions.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0]),
            &["status"],
        )
        .expect("valid metric");
        let live_sessions =
            IntGauge::new("antwort_agent_live_sessions", "Sessions that exist now.")
                .expect("valid metric");
        let spare_sessions = IntGauge::new(
            "antwort_agent_spare_sessions",
            "Sessions started ahead, waiting to be handed out.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(executions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(live_sessions.clone()),
            Box::new(spare_sessions.clone()),
        ] {
            registry.register(collector).expect("registered once");
        }
        Self { registry, executions, duration, live_sessions, spare_sessions }
    }

    pub fn record_execution(&self, status: ExecStatus, seconds: f64) {
        self.executions.with_label_values(&[status.as_str()]).inc();
        self.duration.with_label_values(&[status.as_str()]).observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
