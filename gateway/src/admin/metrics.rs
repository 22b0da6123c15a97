//! Metrics in Prometheus' text format.
//!
//! Events are recorded through the `metrics` facade, whose recorder is global
//! to the process: it is installed once, on the first admin listener, and
//! several gateways in one process (tests) add to the same series. Figures the
//! gateway already counts per instance (coalesced waits, index entries, cached
//! identities, readiness) are read from that instance at scrape time instead,
//! so they are never counted twice.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::{AuthFailure, Resolved};
use crate::server::shared::Shared;
use crate::upstream::UpstreamError;

pub const REQUESTS: &str = "gateway_requests_total";
pub const REQUEST_SECONDS: &str = "gateway_request_duration_seconds";
pub const ENTITLEMENT_LOOKUPS: &str = "gateway_entitlement_lookups_total";
pub const UPSTREAM_SECONDS: &str = "gateway_upstream_duration_seconds";
pub const UPSTREAM_ERRORS: &str = "gateway_upstream_errors_total";
pub const STREAM_IDLE_TIMEOUTS: &str = "gateway_upstream_stream_idle_timeouts_total";
pub const PLUGIN_SECONDS: &str = "gateway_plugin_call_duration_seconds";
pub const PLUGIN_ERRORS: &str = "gateway_plugin_errors_total";
pub const RELOADS: &str = "gateway_reloads_total";
pub const PLUGIN_RELOADS: &str = "gateway_plugin_reloads_total";

/// Upper bounds of the latency buckets, in seconds: sub-millisecond cache hits
/// up to Pulp's 30 s default timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Histogram samples are folded into buckets on scrape; without scrapes they
/// would pile up, so they are also folded this often.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process' recorder, installed on first use. `None` when another
/// recorder was installed first (then `/metrics` answers 503).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder);
    let handle = match handle {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the metrics recorder; /metrics is disabled");
            return None;
        }
    };
    describe();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no metrics upkeep thread; histograms are folded on scrape only");
    }
    Some(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        REQUESTS,
        "Client requests answered, by route template and status."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer a client request (response head), by route template."
    );
    describe_counter!(
        ENTITLEMENT_LOOKUPS,
        "Entitlement lookups: hit = answered from the cache or the pushed mapping, miss = central was asked (or a recent failure reused)."
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        Unit::Seconds,
        "Time until Pulp or central answered (response head)."
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Pulp or central calls that failed: timeout, connect, response, or a 5xx status."
    );
    describe_counter!(
        STREAM_IDLE_TIMEOUTS,
        "Manifest, blob or tags bodies cut because Pulp sent nothing for pulp.stream_idle_secs after the response head, by route template."
    );
    describe_histogram!(
        PLUGIN_SECONDS,
        Unit::Seconds,
        "Time spent in the authentication plugin chain per request."
    );
    describe_counter!(
        PLUGIN_ERRORS,
        "Plugin chain calls that could not decide (failing the request closed), by backend."
    );
    describe_counter!(RELOADS, "Configuration reloads (SIGHUP), by result.");
    describe_counter!(
        PLUGIN_RELOADS,
        "Auth plugin reloads (SIGHUP), by plugin and result: ok, failed (kept its previous state) or unsupported."
    );
}

/// One answered client request.
pub fn request(route: &str, status: u16, elapsed: Duration) {
    metrics::counter!(REQUESTS, "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(REQUEST_SECONDS, "route" => route.to_owned()).record(elapsed);
}

/// An entitlement lookup answered without central (`hit`) or not.
pub fn entitlement_lookup(hit: bool) {
    metrics::counter!(ENTITLEMENT_LOOKUPS, "result" => if hit { "hit" } else { "miss" })
        .increment(1);
}

/// One call to Pulp or central, from send to response head.
pub fn upstream(
    upstream: &'static str,
    started: Instant,
    outcome: Result<awc::http::StatusCode, &UpstreamError>,
) {
    metrics::histogram!(UPSTREAM_SECONDS, "upstream" => upstream).record(started.elapsed());
    let kind = match outcome {
        Ok(status) if status.is_server_error() => "status_5xx",
        Ok(_) => return,
        Err(UpstreamError::Timeout) => "timeout",
        Err(UpstreamError::Connect(_)) => "connect",
        Err(UpstreamError::Response(_)) => "response",
        Err(UpstreamError::TooLarge(_)) => "too_large",
    };
    metrics::counter!(UPSTREAM_ERRORS, "upstream" => upstream, "kind" => kind).increment(1);
}

/// A streamed Pulp body cut for silence (`route` is a template, never a name).
pub fn stream_idle_timeout(route: &'static str) {
    metrics::counter!(STREAM_IDLE_TIMEOUTS, "route" => route).increment(1);
}

/// One run of the plugin chain. A rejection is a client's outcome, not an error.
pub fn plugin_call(started: Instant, result: &Result<Resolved, AuthFailure>) {
    metrics::histogram!(PLUGIN_SECONDS).record(started.elapsed());
    if let Err(AuthFailure::Unavailable(e)) = result {
        metrics::counter!(PLUGIN_ERRORS, "backend" => e.backend.clone()).increment(1);
    }
}

/// One SIGHUP reload: `ok`, `rejected` (nothing applied) or `partial` (the
/// configuration applied, a plugin kept its previous state).
pub fn reload(result: &'static str) {
    metrics::counter!(RELOADS, "result" => result).increment(1);
}

/// One plugin's part of a reload: `ok`, `failed` or `unsupported`.
pub fn plugin_reload(plugin: &str, result: &'static str) {
    metrics::counter!(PLUGIN_RELOADS, "plugin" => plugin.to_owned(), "result" => result)
        .increment(1);
}

/// The series kept by one gateway instance, in the text format.
pub fn render_instance(shared: &Shared) -> String {
    let mut out = String::new();
    let mut series = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    series(
        "gateway_entitlement_coalesced_waits_total",
        "counter",
        "Entitlement lookups that waited for another request's central call instead of making their own.",
        shared.entitlements.coalesced_waits(),
    );
    series(
        "gateway_entitlement_cached_identities",
        "gauge",
        "Identities whose central answer is cached.",
        shared.entitlements.cached_identities() as u64,
    );
    series(
        "gateway_index_entries_kept_total",
        "counter",
        "Flatpak index entries kept by per-client filtering (counted once per distinct filtered body).",
        shared.index.kept_entries.load(Ordering::Relaxed),
    );
    series(
        "gateway_index_entries_dropped_total",
        "counter",
        "Flatpak index entries dropped by per-client filtering (counted once per distinct filtered body).",
        shared.index.dropped_entries.load(Ordering::Relaxed),
    );
    series(
        "gateway_state_loaded",
        "gauge",
        "1 once Katello's pushed state is loaded (from disk at start, or pushed since).",
        u64::from(shared.state.is_loaded()),
    );
    series(
        "gateway_pulp_answered",
        "gauge",
        "1 once Pulp has answered since start.",
        u64::from(shared.pulp_answered.load(Ordering::Acquire)),
    );
    let _ = write!(
        out,
        "# HELP gateway_build_info The running version.\n# TYPE gateway_build_info gauge\ngateway_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    out
}
