//! `atoll lb`, the load balancer daemon of a node: it follows the master's event stream (an
//! Atoll master's, or with `--mesos-master` a Mesos master's operator API through
//! `atoll-mesos-follow`), projects it onto the VIP services this node must serve
//! (`atoll-lb-core`), and keeps the eBPF dataplane's maps (`atoll-lb-l4`) in step — one writer
//! of those maps per node. It also owns the VIP pool's blackhole route, and serves `/metrics`
//! with per-VIP counters read from the kernel.

pub mod daemon;
pub mod http;
pub mod metrics;
pub mod settings;

pub use daemon::{Cleanup, LbError, RunningLb, cleanup, run, start};
pub use settings::{LbOptions, LbSettings, SettingsError};
