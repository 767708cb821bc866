//! The Atoll master daemon: the I/O shell around `atoll-scheduler-core`.
//!
//! It owns the registry (redb), runs the master core on one thread ([`actor`]), and serves
//! frameworks, agents and event subscribers over gRPC and operators over HTTP/JSON — both on
//! the one `--listen` port (gRPC is told apart by its HTTP/2 content type).

pub mod actor;
pub mod config;
pub mod events;
pub mod grpc;
pub mod hosted;
pub mod http;
pub mod mesos_operator;
pub mod mesos_readonly;
#[cfg(test)]
mod mesos_required;
pub mod mesos_scheduler;
pub mod mesos_state;
pub mod metrics;
pub mod registry;
pub mod run;
pub mod server;
pub mod services;
pub mod wire;
