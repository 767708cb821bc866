//! The edge's shared state, one owner per piece: the route table snapshot (replaced whole by
//! the follower, read by every request), and the request-level counters the proxy keeps
//! (round robin positions, requests in flight per backend, outlier ejections, metrics).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use atoll_lb_core::edge::RouteTable;
use atoll_lb_core::edge::outlier::{OutlierDetector, OutlierPolicy};

use crate::metrics::Metrics;
use crate::settings::EdgeOptions;

/// A route table and the event index it is current to.
#[derive(Default)]
pub struct Snapshot {
    pub table: RouteTable,
    pub index: u64,
    /// Round robin positions by route id (a new table starts them afresh).
    counters: HashMap<String, AtomicU64>,
}

impl Snapshot {
    pub fn new(table: RouteTable, index: u64) -> Snapshot {
        let counters = table.routes().iter().map(|r| (r.id.clone(), AtomicU64::new(0))).collect();
        Snapshot { table, index, counters }
    }
}

pub struct EdgeState {
    pub options: EdgeOptions,
    pub metrics: Metrics,
    snapshot: ArcSwap<Snapshot>,
    in_flight: Mutex<HashMap<SocketAddr, u64>>,
    outliers: Mutex<OutlierDetector>,
    requests_in_flight: AtomicU64,
    clock: Instant,
}

impl EdgeState {
    pub fn new(options: EdgeOptions) -> EdgeState {
        EdgeState {
            options,
            metrics: Metrics::new(),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            in_flight: Mutex::new(HashMap::new()),
            outliers: Mutex::new(OutlierDetector::new(OutlierPolicy::default())),
            requests_in_flight: AtomicU64::new(0),
            clock: Instant::now(),
        }
    }

    /// The table requests are routed by now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the table; requests in flight keep the one they started with. Round robin
    /// positions carry over for routes that stay, so frequent updates do not send every new
    /// table's first requests to the same backend.
    pub fn publish(&self, snapshot: Snapshot) {
        let previous = self.snapshot.load();
        for (route, counter) in &snapshot.counters {
            if let Some(old) = previous.counters.get(route) {
                counter.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let backends: std::collections::HashSet<SocketAddr> =
            snapshot.table.routes().iter().flat_map(|r| r.backends.iter().map(|b| b.address)).collect();
        self.outliers.lock().unwrap_or_else(|p| p.into_inner()).retain(|a| backends.contains(a));
        self.metrics.routes.set(snapshot.table.routes().len() as i64);
        self.metrics.event_index.set(snapshot.index as i64);
        self.metrics.route_updates.inc();
        self.snapshot.store(Arc::new(snapshot));
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub fn next_counter(&self, route: &str) -> u64 {
        self.snapshot.load().counters.get(route).map_or(0, |c| c.fetch_add(1, Ordering::Relaxed))
    }

    pub fn in_flight(&self, backend: SocketAddr) -> u64 {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).get(&backend).copied().unwrap_or(0)
    }

    pub fn in_flight_all(&self) -> HashMap<SocketAddr, u64> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn begin_backend_request(&self, backend: SocketAddr) {
        *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).entry(backend).or_default() += 1;
    }

    pub fn end_backend_request(&self, backend: SocketAddr) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(&backend) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&backend);
            }
        }
    }

    pub fn is_ejected(&self, backend: SocketAddr, now_ms: u64) -> bool {
        self.outliers.lock().unwrap_or_else(|p| p.into_inner()).is_ejected(backend, now_ms)
    }

    pub fn ejected(&self) -> Vec<SocketAddr> {
        self.outliers.lock().unwrap_or_else(|p| p.into_inner()).ejected(self.now_ms())
    }

    pub fn backend_failed(&self, route: &str, backend: SocketAddr) {
        self.metrics.backend_result(route, backend, false);
        let now = self.now_ms();
        if self.outliers.lock().unwrap_or_else(|p| p.into_inner()).failure(backend, now) {
            tracing::warn!(%backend, route, "backend ejected after consecutive failures");
            self.metrics.ejections.inc();
        }
    }

    pub fn backend_succeeded(&self, route: &str, backend: SocketAddr) {
        self.metrics.backend_result(route, backend, true);
        self.outliers.lock().unwrap_or_else(|p| p.into_inner()).success(backend);
    }

    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.metrics.request(route, status, elapsed);
    }

    pub fn begin_request(&self) {
        self.requests_in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn end_request(&self) {
        self.requests_in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Requests being served now (a graceful stop waits for them).
    pub fn requests_in_flight(&self) -> u64 {
        self.requests_in_flight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use atoll_lb_core::edge::{EdgeApp, EdgeApps, EdgePort, EdgeTask, RouteTable, TaskHealth};

    use super::*;

    fn table(hosts: &[&str]) -> RouteTable {
        let apps = hosts
            .iter()
            .map(|host| EdgeApp {
                id: format!("/{host}"),
                labels: [("ATOLL_EDGE_0_HOST".to_owned(), host.to_string())].into(),
                ports: vec![EdgePort::default()],
                tasks: vec![EdgeTask {
                    id: "t".into(),
                    health: TaskHealth::Ready,
                    endpoints: vec![Some(SocketAddr::from(([127, 0, 0, 1], 8000)))],
                }],
                instances: 1,
                has_health_checks: false,
            })
            .collect();
        RouteTable::build(&EdgeApps { apps }, "external")
    }

    #[test]
    fn round_robin_positions_survive_a_new_table() {
        let state = EdgeState::new(crate::EdgeSettings::default().resolve().unwrap());
        state.publish(Snapshot::new(table(&["a.example", "b.example"]), 1));
        for _ in 0..3 {
            state.next_counter("/a.example:0");
        }
        state.publish(Snapshot::new(table(&["a.example", "c.example"]), 2));
        assert_eq!(state.next_counter("/a.example:0"), 3, "the route stayed: its position too");
        assert_eq!(state.next_counter("/c.example:0"), 0, "a new route starts at 0");
    }
}
