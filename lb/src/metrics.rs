//! Prometheus metrics of `atoll lb`: the daemon's own (a registry that lives as long as it
//! does) and the per-VIP counters, read from the kernel's maps at every scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    /// 1 while the event stream is connected.
    pub connected: Gauge,
    /// The index of the last event applied.
    pub event_index: Gauge,
    pub services: Gauge,
    pub backends: Gauge,
    pub tables: Gauge,
    /// Map operations applied.
    pub map_operations: Counter,
    /// Map operations the kernel refused (each is logged).
    pub map_errors: Counter,
    /// Service updates the plan refused (maps full, table too small; each is logged).
    pub refused_updates: Counter,
    /// Time from an event's arrival to its map operations being applied.
    pub apply_seconds: Histogram,
    pub kernel_memory: Family<MapLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabel {
    pub map: String,
}

/// One service's identity in the per-VIP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabels {
    /// `name.framework`, comma-separated if several names share the address; empty for a
    /// fixed (`ip:port`) VIP.
    pub vip: String,
    pub address: String,
    pub port: String,
    pub protocol: String,
}

/// A service's counters, as read from the kernel.
pub struct VipSample {
    pub labels: VipLabels,
    pub connections: u64,
    pub packets: u64,
    pub active_backends: u64,
    pub draining_backends: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("atoll_lb");
        let metrics = Metrics {
            connected: Gauge::default(),
            event_index: Gauge::default(),
            services: Gauge::default(),
            backends: Gauge::default(),
            tables: Gauge::default(),
            map_operations: Counter::default(),
            map_errors: Counter::default(),
            refused_updates: Counter::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            kernel_memory: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connected", "Whether the event stream is connected", metrics.connected.clone());
        registry.register("event_index", "Index of the last event applied", metrics.event_index.clone());
        registry.register("services", "Services (VIP, port, protocol) programmed", metrics.services.clone());
        registry.register("backends", "Backends programmed", metrics.backends.clone());
        registry.register("tables", "Maglev tables in use", metrics.tables.clone());
        registry.register("map_operations", "Map operations applied", metrics.map_operations.clone());
        registry.register("map_errors", "Map operations the kernel refused", metrics.map_errors.clone());
        registry.register(
            "refused_updates",
            "Service updates refused for lack of room in the maps",
            metrics.refused_updates.clone(),
        );
        registry.register(
            "apply_seconds",
            "Time to apply one event's changes to the maps",
            metrics.apply_seconds.clone(),
        );
        registry.register("kernel_memory_bytes", "Kernel memory of each BPF map", metrics.kernel_memory.clone());
        Metrics { registry, ..metrics }
    }

    /// The daemon's metrics, then the per-VIP ones.
    pub fn render(&self, vips: &[VipSample]) -> String {
        let mut per_vip = Registry::with_prefix("atoll_lb_vip");
        let connections = Family::<VipLabels, Counter>::default();
        let packets = Family::<VipLabels, Counter>::default();
        let active = Family::<VipLabels, Gauge>::default();
        let draining = Family::<VipLabels, Gauge>::default();
        for sample in vips {
            connections.get_or_create(&sample.labels).inc_by(sample.connections);
            packets.get_or_create(&sample.labels).inc_by(sample.packets);
            active.get_or_create(&sample.labels).set(sample.active_backends as i64);
            draining.get_or_create(&sample.labels).set(sample.draining_backends as i64);
        }
        per_vip.register(
            "connections",
            "Connections to the VIP (connect() on this node, and new north-south flows)",
            connections,
        );
        per_vip.register("packets", "UDP datagrams sent to the VIP and north-south packets", packets);
        per_vip.register("backends_active", "Backends taking new connections", active);
        per_vip.register("backends_draining", "Backends keeping only their connections", draining);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        let _ = encode_registry(&mut text, &per_vip);
        let _ = encode_eof(&mut text);
        text
    }
}
