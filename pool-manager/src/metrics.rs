//! Prometheus metrics of one manager, in its own registry (several managers in one test process
//! do not collide), rendered as text at `/metrics` on the admin listener.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::state::Counts;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Sandboxes by pool and state, as of the last reconcile pass (or `/v1/pools`).
    pool_sandboxes: IntGaugeVec,
    /// Claim requests by outcome and how long they took.
    claim_seconds: HistogramVec,
    /// From a sandbox's creation (or reset) to its passed warm-up.
    start_to_ready_seconds: Histogram,
    /// Failures by reason (warm-up, reset, crash, expiry, kubernetes, ...).
    failures: IntCounterVec,
    /// Claims ended, by pool and why: `released`, or reclaimed as `expired` or `idle`.
    claims_ended: IntCounterVec,
    /// 1 while this replica holds the leader Lease (always, on the local runtime).
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let pool_sandboxes = IntGaugeVec::new(
            Opts::new("antwort_pool_sandboxes", "Sandboxes per pool by state."),
            &["pool", "state"],
        )
        .expect("valid metric");
        let claim_seconds = HistogramVec::new(
            HistogramOpts::new("antwort_pool_claim_duration_seconds", "Claim request latency.")
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
                ]),
            &["outcome"],
        )
        .expect("valid metric");
        let start_to_ready_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "antwort_pool_sandbox_start_to_ready_seconds",
                "From a sandbox's creation (or release for reset) to its passed warm-up.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0]),
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new("antwort_pool_failures_total", "Failures by reason."),
            &["reason"],
        )
        .expect("valid metric");
        let claims_ended = IntCounterVec::new(
            Opts::new(
                "antwort_pool_claims_ended_total",
                "Claims ended: released by the caller, or reclaimed when expired or idle.",
            ),
            &["pool", "reason"],
        )
        .expect("valid metric");
        let leader = IntGauge::new("antwort_pool_leader", "1 while this replica is the leader.")
            .expect("valid metric");
        for collector in [
            Box::new(pool_sandboxes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(claim_seconds.clone()),
            Box::new(start_to_ready_seconds.clone()),
            Box::new(failures.clone()),
            Box::new(claims_ended.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(collector).expect("registered once");
        }
        Metrics {
            registry,
            pool_sandboxes,
            claim_seconds,
            start_to_ready_seconds,
            failures,
            claims_ended,
            leader,
        }
    }

    pub fn set_pool(&self, pool: &str, counts: Counts) {
        for (state, value) in [
            ("ready", counts.ready),
            ("claimed", counts.claimed),
            ("starting", counts.starting),
            ("failed", counts.failed),
            ("terminating", counts.terminating),
        ] {
            self.pool_sandboxes.with_label_values(&[pool, state]).set(i64::from(value));
        }
    }

    pub fn observe_claim(&self, outcome: &str, seconds: f64) {
        self.claim_seconds.with_label_values(&[outcome]).observe(seconds);
    }

    pub fn observe_start_to_ready(&self, seconds: f64) {
        self.start_to_ready_seconds.observe(seconds);
    }

    pub fn failure(&self, reason: &str) {
        self.failures.with_label_values(&[reason]).inc();
    }

    pub fn claim_ended(&self, pool: &str, reason: &str) {
        self.claims_ended.with_label_values(&[pool, reason]).inc();
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
        Metrics::new()
    }
}
