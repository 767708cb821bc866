//! The typed domain model shared by every Atoll crate.

mod app;
mod cluster;
mod event;
mod health;
mod ids;
mod network;
mod resources;
mod task;
mod time;

pub use app::*;
pub use cluster::*;
pub use event::*;
pub use health::*;
pub use ids::*;
pub use network::*;
pub use resources::*;
pub use task::*;
pub use time::*;
