//! An HTTP service whose handler depends on a slow computation, memoized in Redis: copy
//! it as a starting point.
//!
//! - `GET /report/{day}`: the day's report. The first request computes it (200 ms, the
//!   stand-in for a slow dependency); concurrent requests for the same day, in this
//!   process or in any other on the same Redis, wait for that one computation and read
//!   its result; later ones are hits.
//! - `GET /metrics`: Prometheus text, through the `metrics` facade and
//!   `metrics-exporter-prometheus`: cache-memoize's own counters and histograms (its
//!   `metrics` feature: `cache_memoize_calls_total{function, outcome}`,
//!   `cache_memoize_compute_seconds`, `cache_memoize_lock_wait_seconds`) beside the
//!   service's (`report_computations_total`), all through one global recorder.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use cache_memoize::cache_memoize;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

/// One day's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The day it is for.
    pub day: u32,
    /// What the slow dependency computed.
    pub total: u64,
}

/// The day's report: computed once per day and kept 10 minutes, in whichever backend
/// the process registered (Redis, in `examples/service/service.rs`).
#[cache_memoize(
    key = "service:report:{day}",
    expire = "10m",
    lock(timeout = "5s", expire = "30s")
)]
pub async fn daily_report(day: u32) -> Report {
    metrics::counter!("report_computations_total").increment(1);
    // The slow dependency (a database, a remote service).
    tokio::time::sleep(Duration::from_millis(200)).await;
    Report {
        day,
        total: u64::from(day) * 1000,
    }
}

/// The service's routes; `/metrics` renders what `metrics` holds.
pub fn app(metrics: PrometheusHandle) -> Router {
    Router::new().route("/report/{day}", get(report)).route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    )
}

/// `GET /report/{day}`, as JSON-like text (no JSON dependency for one line).
async fn report(Path(day): Path<u32>) -> String {
    let report = daily_report(day).await;
    format!("{{\"day\":{},\"total\":{}}}", report.day, report.total)
}
