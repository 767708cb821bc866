//! Launch backoff of a crash-looping app, as Marathon does it.
//!
//! Each failure of a task of the app (it ended without being killed by us) pushes the next
//! launch out: the n-th consecutive failure delays launches by
//! `backoffSeconds × backoffFactor^(n-1)`, at most `maxLaunchDelaySeconds`, counted from the
//! failure. A task that reaches running (or healthy, with a health check) resets it, and so
//! should a new config version: the new definition may well have fixed the crash.
//!
//! The shell keeps one `Backoff` per app and holds back the launches of a [`super::reconcile::Plan`]
//! until [`Backoff::launch_allowed_at`]. Backoff is not persisted: after a master restart an
//! app gets one early retry, which is harmless.

use std::time::Duration;

use atoll_proto::model::{AppDefinition, Time};
use serde::{Deserialize, Serialize};

/// The backoff state of one app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Consecutive failures since the last reset.
    failures: u32,
    /// The delay the last failure imposed.
    delay: Duration,
    /// No launch before this.
    until: Time,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// A task of the app failed at `now`: the next launch waits for the next delay.
    pub fn failed(&mut self, now: Time, def: &AppDefinition) {
        self.failures = self.failures.saturating_add(1);
        self.delay = delay_after(self.failures, def);
        self.until = now.saturating_add(self.delay);
    }

    /// A task of the app became running (healthy, with a health check), or the app got a
    /// new config version: launches may go ahead at once again.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// The earliest time a new task of the app may be launched.
    pub fn launch_allowed_at(&self) -> Time {
        self.until
    }

    pub fn launch_allowed(&self, now: Time) -> bool {
        now >= self.until
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay imposed by the last failure (zero when there was none).
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// `backoffSeconds × backoffFactor^(failures-1)`, at most `maxLaunchDelaySeconds`.
pub fn delay_after(failures: u32, def: &AppDefinition) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let cap = finite_non_negative(def.max_launch_delay_seconds);
    let base = finite_non_negative(def.backoff_seconds);
    if base == 0.0 {
        return Duration::ZERO;
    }
    // Past a few hundred failures the power is infinite or the cap long reached; clamping
    // the exponent keeps powi in range.
    let exponent = (failures - 1).min(10_000) as i32;
    let factor = if def.backoff_factor.is_finite() { def.backoff_factor.max(1.0) } else { 1.0 };
    let seconds = base * factor.powi(exponent);
    let seconds = if seconds.is_finite() { seconds.min(cap) } else { cap };
    Duration::from_secs_f64(seconds)
}

fn finite_non_negative(value: f64) -> f64 {
    if value.is_finite() { value.max(0.0) } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::test_support::definition;
    use serde_json::json;

    fn def(backoff: f64, factor: f64, max: f64) -> AppDefinition {
        definition(json!({"id": "/a", "cmd": "false", "backoffSeconds": backoff, "backoffFactor": factor,
                          "maxLaunchDelaySeconds": max}))
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let def = def(1.0, 2.0, 10.0);
        let delays: Vec<f64> = (1..=6).map(|n| delay_after(n, &def).as_secs_f64()).collect();
        assert_eq!(delays, vec![1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
        assert_eq!(delay_after(0, &def), Duration::ZERO);
        assert_eq!(delay_after(u32::MAX, &def), Duration::from_secs(10));
        assert_eq!(delay_after(5, &self::def(0.0, 2.0, 10.0)), Duration::ZERO);
    }

    #[test]
    fn marathon_defaults() {
        let def = definition(json!({"id": "/a", "cmd": "false"}));
        assert_eq!(delay_after(1, &def), Duration::from_secs(1));
        assert!((delay_after(2, &def).as_secs_f64() - 1.15).abs() < 1e-9);
        assert_eq!(delay_after(200, &def), Duration::from_secs(300));
    }

    #[test]
    fn failures_hold_launches_back_until_reset() {
        let def = def(2.0, 3.0, 60.0);
        let mut backoff = Backoff::new();
        assert_eq!(backoff.launch_allowed_at(), Time::ZERO);
        backoff.failed(Time(10_000), &def);
        assert_eq!(backoff.launch_allowed_at(), Time(12_000));
        assert!(!backoff.launch_allowed(Time(11_999)));
        assert!(backoff.launch_allowed(Time(12_000)));
        backoff.failed(Time(13_000), &def);
        assert_eq!((backoff.failures(), backoff.delay()), (2, Duration::from_secs(6)));
        assert_eq!(backoff.launch_allowed_at(), Time(19_000));
        backoff.reset();
        assert_eq!(backoff, Backoff::new());
        assert!(backoff.launch_allowed(Time(13_000)));
        backoff.failed(Time(20_000), &def);
        assert_eq!(backoff.launch_allowed_at(), Time(22_000), "the sequence starts over");
    }
}
