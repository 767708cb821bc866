//! Atoll's DNS: every task and VIP by name, Mesos-DNS compatible.
//!
//! `records` holds the record vocabulary; the projection turns the master's event stream (or a
//! Mesos `/master/state`) into record changes; the server answers queries over UDP and TCP
//! from the records, authoritative for its zones and forwarding the rest.

pub mod daemon;
pub mod http;
pub mod mesos;
pub mod metrics;
pub mod projection;
pub mod records;
pub mod server;
pub mod settings;
