//! Prometheus metrics of `atoll edge`: per route (requests by status, latency) and per
//! backend (results, requests in flight), and the route table's own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    /// `app:port index`, or `-` for requests no route matched.
    pub route: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendResult {
    pub route: String,
    pub backend: String,
    /// `ok`, or `failed` (connection failure, timeout, 5xx).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

pub struct Metrics {
    registry: Registry,
    pub connected: Gauge,
    pub event_index: Gauge,
    pub routes: Gauge,
    pub route_updates: Counter,
    /// Fetches of a followed Marathon's apps that its event bus asked for.
    pub marathon_events: Counter,
    pub ejections: Counter,
    requests: Family<RouteCode, Counter>,
    durations: Family<RouteLabel, Histogram, fn() -> Histogram>,
    backend_results: Family<BackendResult, Counter>,
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("atoll_edge");
        let metrics = Metrics {
            connected: Gauge::default(),
            event_index: Gauge::default(),
            routes: Gauge::default(),
            route_updates: Counter::default(),
            marathon_events: Counter::default(),
            ejections: Counter::default(),
            requests: Family::default(),
            durations: Family::new_with_constructor(request_histogram),
            backend_results: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connected", "Whether the event stream is connected", metrics.connected.clone());
        registry.register(
            "event_index",
            "Index of the event the route table is current to",
            metrics.event_index.clone(),
        );
        registry.register("routes", "HTTP routes served", metrics.routes.clone());
        registry.register("route_updates", "Route tables published", metrics.route_updates.clone());
        registry.register("ejections", "Backends ejected as outliers", metrics.ejections.clone());
        registry.register(
            "marathon_events",
            "Fetches of Marathon's apps its event bus asked for",
            metrics.marathon_events.clone(),
        );
        registry.register("requests", "Requests by route and status code", metrics.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time to the end of the response, by route",
            metrics.durations.clone(),
        );
        registry.register("backend_requests", "Requests sent to a backend, by result", metrics.backend_results.clone());
        Metrics { registry, ..metrics }
    }

    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let code = if status == 0 { "none".to_owned() } else { status.to_string() };
        self.requests.get_or_create(&RouteCode { route: route.to_owned(), code }).inc();
        self.durations.get_or_create(&RouteLabel { route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }

    pub fn backend_result(&self, route: &str, backend: SocketAddr, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.backend_results
            .get_or_create(&BackendResult {
                route: route.to_owned(),
                backend: backend.to_string(),
                result: result.into(),
            })
            .inc();
    }

    /// The registry, then requests in flight per backend (a snapshot at scrape time).
    pub fn render(&self, in_flight: &HashMap<SocketAddr, u64>) -> String {
        let mut per_backend = Registry::with_prefix("atoll_edge");
        let gauges = Family::<BackendLabel, Gauge>::default();
        for (backend, n) in in_flight {
            gauges.get_or_create(&BackendLabel { backend: backend.to_string() }).set(*n as i64);
        }
        per_backend.register("backend_in_flight", "Requests in flight to a backend", gauges);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        let _ = encode_registry(&mut text, &per_backend);
        let _ = encode_eof(&mut text);
        text
    }
}
