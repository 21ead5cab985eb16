//! Prometheus metrics: one process-wide registry that the HTTP edge, the cache, the health checker,
//! the certificate loader and the garbage collector record into, and `GET /metrics` encodes in the
//! OpenMetrics text format (`prometheus-client`; Prometheus scrapes it natively).
//!
//! One registry for the process rather than one per component handed around: every part of the
//! daemon records into it, and the encoder sees everything at once. Label values are bounded sets
//! (method, route kind, status, upstream name, result), never repository names or digests, so the
//! number of series stays small however many images the registry holds.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    /// blob, manifest, upload, tags, catalog, referrers, base, token, probe, metrics, other.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub upstream: String,
    /// manifest or blob.
    pub kind: &'static str,
    /// hit (served from storage, current), miss (fetched from the upstream), stale (served from
    /// storage because the upstream could not confirm it).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    /// unreachable, unauthorized, failed.
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule's place in the config file, from 1.
    pub rule: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every metric the daemon records.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub uploads_in_progress: Gauge,
    pub connections_open: Gauge,
    pub cache: Family<CacheLabels, Counter>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub storage_checks: Family<ResultLabels, Counter>,
    pub storage_ready: Gauge,
    pub cert_expiry: Gauge<f64, AtomicU64>,
    pub gc_runs: Family<ResultLabels, Counter>,
    pub gc_freed_bytes: Counter,
    pub gc_last_run: Gauge<f64, AtomicU64>,
    pub gc_manifests_removed: Counter,
    pub retention_untagged: Family<RuleLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 33 s: a manifest HEAD from cache to a 1 GiB blob over a slow link.
    Histogram::new(exponential_buckets(0.0005, 3.0, 11))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("registryd");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            uploads_in_progress: Gauge::default(),
            connections_open: Gauge::default(),
            cache: Family::default(),
            upstream_errors: Family::default(),
            storage_checks: Family::default(),
            storage_ready: Gauge::default(),
            cert_expiry: Gauge::default(),
            gc_runs: Family::default(),
            gc_freed_bytes: Counter::default(),
            gc_last_run: Gauge::default(),
            gc_manifests_removed: Counter::default(),
            retention_untagged: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route kind and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers, by method and route kind",
            m.latency.clone(),
        );
        registry.register(
            "network_receive_bytes",
            "HTTP bytes received on the listeners (headers and bodies, after TLS)",
            m.bytes_received.clone(),
        );
        registry.register(
            "network_transmit_bytes",
            "HTTP bytes sent on the listeners (headers and bodies, before TLS)",
            m.bytes_sent.clone(),
        );
        registry.register(
            "uploads_in_progress",
            "Blob upload requests receiving a body now",
            m.uploads_in_progress.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "cache_requests",
            "Pull-through cache lookups per upstream: hit, miss (fetched) or stale",
            m.cache.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream requests that failed, per upstream and kind of failure",
            m.upstream_errors.clone(),
        );
        registry.register(
            "storage_checks",
            "Storage health checks (durable write and read-back), by result",
            m.storage_checks.clone(),
        );
        registry.register(
            "storage_ready",
            "1 while storage is healthy and requests are served, 0 while they get 503",
            m.storage_ready.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the served certificate expires (Unix time)",
            m.cert_expiry.clone(),
        );
        registry.register(
            "gc_runs",
            "Garbage collection passes, by result (done, skipped: another node held the lock, failed)",
            m.gc_runs.clone(),
        );
        registry.register(
            "gc_freed_bytes",
            "Bytes of blobs the garbage collector removed",
            m.gc_freed_bytes.clone(),
        );
        registry.register(
            "gc_last_run_timestamp_seconds",
            "When the last garbage collection pass finished (Unix time)",
            m.gc_last_run.clone(),
        );
        registry.register(
            "gc_manifests_removed",
            "Untagged manifests the garbage collector removed",
            m.gc_manifests_removed.clone(),
        );
        registry.register(
            "retention_tags_removed",
            "Tags a [[retention]] rule untagged, by the rule's place in the config file",
            m.retention_untagged.clone(),
        );
        let build: Family<Vec<(String, String)>, Gauge> = Family::default();
        build
            .get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())])
            .set(1);
        registry.register("build_info", "The registryd version running", build);
        Metrics { registry, ..m }
    }

    /// Records one answered request.
    pub fn request(&self, method: &http::Method, route: &'static str, status: u16, took: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method, route })
            .observe(took.as_secs_f64());
    }

    /// Records a pull-through cache lookup.
    pub fn cache(&self, upstream: &str, kind: &'static str, result: &'static str) {
        self.cache
            .get_or_create(&CacheLabels {
                upstream: upstream.to_string(),
                kind,
                result,
            })
            .inc();
    }

    pub fn upstream_error(&self, upstream: &str, error: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
                error,
            })
            .inc();
    }

    pub fn storage_check(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.storage_checks
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn gc_run(&self, result: &'static str, freed_bytes: u64, manifests_removed: u64) {
        self.gc_runs.get_or_create(&ResultLabels { result }).inc();
        self.gc_freed_bytes.inc_by(freed_bytes);
        self.gc_manifests_removed.inc_by(manifests_removed);
        self.gc_last_run.set(unix_now());
    }

    /// A tag untagged by retention rule `rule` (its place in the file).
    pub fn retention_untagged(&self, rule: usize) {
        self.retention_untagged
            .get_or_create(&RuleLabels { rule: rule as u64 })
            .inc();
    }

    /// The whole registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would only cut the output short.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Standard methods by name; anything else as one label, so a client inventing methods cannot
/// create series without bound. Static strings: no allocation per request.
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_openmetrics_with_prefix_and_labels() {
        let m = Metrics::new();
        m.request(
            &http::Method::GET,
            "manifest",
            200,
            Duration::from_millis(3),
        );
        m.cache("docker.io", "blob", "hit");
        let text = m.encode();
        assert!(text.contains(
            "registryd_http_requests_total{method=\"GET\",route=\"manifest\",status=\"200\"} 1"
        ));
        assert!(text.contains("registryd_http_request_duration_seconds_bucket{"));
        assert!(text.contains(
            "registryd_cache_requests_total{upstream=\"docker.io\",kind=\"blob\",result=\"hit\"} 1"
        ));
        assert!(text.contains("registryd_build_info{version=\""));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(method_label(&http::Method::CONNECT), "other");
    }
}
