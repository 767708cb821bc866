//! Benchmarks and load generators for Atoll, each reported against a named baseline.
//!
//! The binaries live in `src/bin/` (one per benchmark); this library holds what they share.
//! They are not timed tests: they print numbers for a human to compare, never assert on them.

use std::time::Duration;

pub mod dns;

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

/// Nearest-rank percentiles of a set of latencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub count: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Percentiles {
    /// `None` for no samples. The p-th percentile is the smallest sample with at least p% of
    /// the samples at or below it (nearest rank), so it is always a measured value.
    pub fn of(samples: &[Duration]) -> Option<Percentiles> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let rank = |p: usize| sorted[(p * n).div_ceil(100).clamp(1, n) - 1];
        let total: Duration = sorted.iter().sum();
        Some(Percentiles {
            count: n,
            min: sorted[0],
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max: sorted[n - 1],
            mean: total / u32::try_from(n).unwrap_or(u32::MAX),
        })
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

/// Whether compilers are running next to the benchmark (other builds on a shared machine take
/// CPU and, with their writes, slow every fsync) and the load average (tests count too), so a
/// pasted result says if it was contended.
pub fn other_builds() -> String {
    let running = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| matches!(c.trim(), "rustc" | "clippy-driver" | "rustdoc" | "cargo-nextest"))
                })
                .count()
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    match running {
        0 => format!("none (no rustc, clippy-driver, rustdoc or nextest process), 1-minute load average {load}"),
        n => format!(
            "{n} compiler or test-runner process(es) running, 1-minute load average {load}: the numbers are contended"
        ),
    }
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

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Duration::from_millis;
        assert_eq!(Percentiles::of(&[]), None);
        let samples: Vec<Duration> = (1..=100).rev().map(d).collect();
        let p = Percentiles::of(&samples).unwrap();
        assert_eq!((p.min, p.p50, p.p90, p.p99, p.max), (d(1), d(50), d(90), d(99), d(100)));
        let one = Percentiles::of(&[d(7)]).unwrap();
        assert_eq!((one.p50, one.p99, one.mean), (d(7), d(7), d(7)));
    }
}
