//! Wall-clock time as the decision cores see it: passed in, never read by them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    /// Reads the system clock; only I/O shells call this.
    pub fn now() -> Time {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Time(since_epoch.as_millis() as u64)
    }

    pub fn from_secs_f64(secs: f64) -> Time {
        Time((secs.max(0.0) * 1000.0).round() as u64)
    }

    /// Seconds since the epoch, as Mesos timestamps are written.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn saturating_add(self, duration: Duration) -> Time {
        Time(self.0.saturating_add(duration.as_millis() as u64))
    }

    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
