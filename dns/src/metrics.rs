//! Prometheus metrics of the DNS daemon.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    /// 1 while the event stream (or the Mesos master) is connected.
    pub connected: Gauge,
    pub serial: Gauge,
    pub records: Gauge,
    pub changes: Counter,
    pub apply_seconds: Histogram,
    pub queries: Family<Vec<(String, String)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("atoll_dns");
        let connected = Gauge::default();
        let serial = Gauge::default();
        let records = Gauge::default();
        let changes = Counter::default();
        let apply_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 18));
        let queries = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("connected", "Whether the event source is connected", connected.clone());
        registry.register("serial", "SOA serial: the index of the last event applied", serial.clone());
        registry.register("records", "Records served", records.clone());
        registry.register("record_changes", "Records added or removed", changes.clone());
        registry.register("apply_seconds", "Time to apply one event to the zone", apply_seconds.clone());
        registry.register("queries", "Queries answered, by rcode", queries.clone());
        Metrics { registry, connected, serial, records, changes, apply_seconds, queries }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
