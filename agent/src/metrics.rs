//! Prometheus metrics of the agent, served as text on `/metrics`. Atomics: the agent's actor
//! updates them, the HTTP handler renders them.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    /// Live (not completed) tasks by their latest state.
    pub tasks: Family<Labels, Gauge>,
    pub launches: Counter,
    pub updates_sent: Counter,
    pub updates_acked: Counter,
    pub updates_pending: Gauge,
    pub connected: Gauge,
    pub registered: Gauge,
    pub sandboxes_collected: Counter,
    /// Health check probe results by `outcome` (healthy, unhealthy, timeout, error).
    pub health_checks: Family<Labels, Counter>,
    /// Tasks killed because their health check failed too often in a row.
    pub health_check_kills: Counter,
    /// Container task launches that failed because the agent's subnet of the pool was full.
    pub ipam_exhausted: Counter,
    /// Addresses leased to this agent's container tasks.
    pub ipam_leases: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("atoll_agent");
        let tasks = Family::<Labels, Gauge>::default();
        let launches = Counter::default();
        let updates_sent = Counter::default();
        let updates_acked = Counter::default();
        let updates_pending = Gauge::default();
        let connected = Gauge::default();
        let registered = Gauge::default();
        let sandboxes_collected = Counter::default();
        let health_checks = Family::<Labels, Counter>::default();
        let health_check_kills = Counter::default();
        let ipam_exhausted = Counter::default();
        let ipam_leases = Gauge::default();
        registry.register("tasks", "Tasks not yet completed, by latest state", tasks.clone());
        registry.register("launches", "Tasks launched", launches.clone());
        registry.register(
            "status_updates_sent",
            "Status updates sent to the master, resends included",
            updates_sent.clone(),
        );
        registry.register("status_updates_acked", "Status updates acknowledged", updates_acked.clone());
        registry.register("status_updates_pending", "Status updates awaiting acknowledgement", updates_pending.clone());
        registry.register("master_connected", "1 while a stream to the master is open", connected.clone());
        registry.register("registered", "1 while registered with the master", registered.clone());
        registry.register(
            "sandboxes_collected",
            "Sandboxes removed by garbage collection",
            sandboxes_collected.clone(),
        );
        registry.register(
            "health_checks",
            "Health check results by outcome (healthy, unhealthy, timeout, error)",
            health_checks.clone(),
        );
        registry.register(
            "health_check_kills",
            "Tasks killed because their health check failed too often in a row",
            health_check_kills.clone(),
        );
        registry.register(
            "ipam_exhausted",
            "Container task launches that failed because the agent's subnet of the pool was exhausted",
            ipam_exhausted.clone(),
        );
        registry.register("ipam_leases", "Addresses leased to container tasks on this agent", ipam_leases.clone());
        Metrics {
            registry,
            tasks,
            launches,
            updates_sent,
            updates_acked,
            updates_pending,
            connected,
            registered,
            sandboxes_collected,
            health_checks,
            health_check_kills,
            ipam_exhausted,
            ipam_leases,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// A label set of one pair.
pub fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}
