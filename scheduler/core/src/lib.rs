//! The master's pure decision cores: the hierarchical DRF allocator and the master state
//! machine (agents, frameworks, offers, tasks, and the event log they produce), and the
//! built-in services framework's decisions (app validation, offer matching, the deployment
//! reconciler). No tokio, no sockets, no clock, no randomness: time comes in as an argument
//! and every consequence goes out as a value for the I/O shell (`atoll-scheduler`) to carry
//! out.

pub mod allocator;
pub mod master;
pub mod services;
