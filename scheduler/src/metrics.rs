//! Prometheus metrics of the master, served as text on `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric the master exports; atomics, so any task may update them.
pub struct Metrics {
    registry: Registry,
    pub events: Counter,
    pub event_index: Gauge,
    pub agents: Family<Labels, Gauge>,
    pub frameworks: Family<Labels, Gauge>,
    pub tasks: Family<Labels, Gauge>,
    pub offers_outstanding: Gauge,
    pub event_subscribers: Gauge,
    /// Scheduler calls taken, by type: the ones that change nothing here (MESSAGE, REQUEST)
    /// are still seen.
    pub scheduler_calls: Family<Labels, Counter>,
    pub batch_seconds: Histogram,
    pub commit_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("atoll_master");
        let events = Counter::default();
        let event_index = Gauge::default();
        let agents = Family::<Labels, Gauge>::default();
        let frameworks = Family::<Labels, Gauge>::default();
        let tasks = Family::<Labels, Gauge>::default();
        let offers_outstanding = Gauge::default();
        let event_subscribers = Gauge::default();
        let scheduler_calls = Family::<Labels, Counter>::default();
        let batch_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register("events", "Events appended to the log", events.clone());
        registry.register("event_index", "Index of the last event", event_index.clone());
        registry.register("agents", "Agents by state", agents.clone());
        registry.register("frameworks", "Frameworks by connection", frameworks.clone());
        registry.register("tasks", "Known tasks by state", tasks.clone());
        registry.register("offers_outstanding", "Offers not yet answered", offers_outstanding.clone());
        registry.register("event_subscribers", "Open event-stream subscriptions", event_subscribers.clone());
        registry.register("scheduler_calls", "Scheduler calls accepted, by type", scheduler_calls.clone());
        registry.register(
            "batch_seconds",
            "Time to process one batch of inputs, commit included",
            batch_seconds.clone(),
        );
        registry.register("commit_seconds", "Time to commit one batch to the registry", commit_seconds.clone());
        Metrics {
            registry,
            events,
            event_index,
            agents,
            frameworks,
            tasks,
            offers_outstanding,
            event_subscribers,
            scheduler_calls,
            batch_seconds,
            commit_seconds,
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
