//! Passive outlier ejection: a backend that fails several requests in a row (connection
//! refused or reset, timeouts, 5xx) is left out for a while, longer each time it comes back
//! failing, as Envoy's outlier detection does. Time is passed in (milliseconds on any monotonic
//! clock); the shell owns one detector for all routes.

use std::collections::HashMap;
use std::net::SocketAddr;

/// When to eject and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive failures that eject a backend.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long, up to `max_ejection_ms`.
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl Default for OutlierPolicy {
    fn default() -> OutlierPolicy {
        OutlierPolicy { consecutive_failures: 5, base_ejection_ms: 10_000, max_ejection_ms: 300_000 }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Health {
    consecutive_failures: u32,
    ejections: u32,
    ejected_until_ms: Option<u64>,
}

/// Per-backend failure counts and ejections.
#[derive(Clone, Debug, Default)]
pub struct OutlierDetector {
    policy: OutlierPolicy,
    backends: HashMap<SocketAddr, Health>,
}

impl OutlierDetector {
    pub fn new(policy: OutlierPolicy) -> OutlierDetector {
        OutlierDetector { policy, backends: HashMap::new() }
    }

    /// A request to `backend` succeeded: its failure streak ends (its ejection count stays,
    /// so a flapping backend is ejected for longer next time).
    pub fn success(&mut self, backend: SocketAddr) {
        if let Some(health) = self.backends.get_mut(&backend) {
            health.consecutive_failures = 0;
        }
    }

    /// A request to `backend` failed at `now_ms`; true when this ejects it.
    pub fn failure(&mut self, backend: SocketAddr, now_ms: u64) -> bool {
        let policy = self.policy;
        let health = self.backends.entry(backend).or_default();
        if health.ejected_until_ms.is_some_and(|until| now_ms < until) {
            return false;
        }
        health.consecutive_failures += 1;
        if health.consecutive_failures < policy.consecutive_failures {
            return false;
        }
        health.ejections += 1;
        let length = policy.base_ejection_ms.saturating_mul(u64::from(health.ejections)).min(policy.max_ejection_ms);
        health.ejected_until_ms = Some(now_ms.saturating_add(length));
        health.consecutive_failures = 0;
        true
    }

    pub fn is_ejected(&self, backend: SocketAddr, now_ms: u64) -> bool {
        self.backends.get(&backend).and_then(|h| h.ejected_until_ms).is_some_and(|until| now_ms < until)
    }

    /// Backends ejected at `now_ms`.
    pub fn ejected(&self, now_ms: u64) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .backends
            .iter()
            .filter(|(_, h)| h.ejected_until_ms.is_some_and(|u| now_ms < u))
            .map(|(a, _)| *a)
            .collect();
        out.sort();
        out
    }

    /// Forgets backends no route has any more.
    pub fn retain(&mut self, keep: impl Fn(&SocketAddr) -> bool) {
        self.backends.retain(|address, _| keep(address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_eject_for_longer_each_time() {
        let policy = OutlierPolicy { consecutive_failures: 3, base_ejection_ms: 1000, max_ejection_ms: 2500 };
        let mut detector = OutlierDetector::new(policy);
        let b = SocketAddr::from(([10, 0, 0, 1], 80));
        assert!(!detector.failure(b, 0));
        assert!(!detector.failure(b, 1));
        detector.success(b);
        assert!(!detector.failure(b, 2) && !detector.failure(b, 3));
        assert!(detector.failure(b, 4), "third in a row");
        assert!(detector.is_ejected(b, 1003) && !detector.is_ejected(b, 1004));
        assert!(!detector.failure(b, 500), "failures while ejected do not count");
        for t in [2000, 2001] {
            assert!(!detector.failure(b, t));
        }
        assert!(detector.failure(b, 2002));
        assert_eq!(detector.ejected(2002), vec![b]);
        assert!(detector.is_ejected(b, 4001) && !detector.is_ejected(b, 4002), "twice as long");
        for t in [5000, 5001, 5002] {
            detector.failure(b, t);
        }
        assert!(detector.is_ejected(b, 7501) && !detector.is_ejected(b, 7502), "capped");
        detector.retain(|_| false);
        assert!(detector.ejected(5003).is_empty());
    }
}
