//! Benchmarks and load generators for Atoll, each reported against a named baseline.
//!
//! The binaries live in `src/bin/` (one per benchmark); this library holds what they share.
//! They are not timed tests: they print numbers for a human to compare, never assert on them.

use std::time::Duration;

/// Minimum, median and maximum of a set of measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub min: Duration,
    pub median: Duration,
    pub max: Duration,
}

impl Summary {
    /// `None` for no samples. An even count takes the mean of the two middle samples.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
        Some(Summary { min: sorted[0], median, max: sorted[n - 1] })
    }
}

/// Milliseconds with two decimals, the unit every table here uses.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// A one-line description of the machine, so a pasted table says where it was measured.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores, {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_middle() {
        let d = Duration::from_millis;
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[d(3), d(1), d(2)]), Some(Summary { min: d(1), median: d(2), max: d(3) }));
        assert_eq!(Summary::of(&[d(4), d(1), d(2), d(3)]).unwrap().median, Duration::from_micros(2500));
    }
}
