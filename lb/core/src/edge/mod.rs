//! The edge proxy's routing, pure: apps with their labels and tasks → a [`RouteTable`] of
//! virtual host + longest path prefix → backends, rebuilt whenever the cluster changes and
//! swapped whole by the proxy (so a route change never touches a request in flight).
//!
//! 1. [`labels`]: an app's labels → [`RouteSpec`]s, one per exposed port: Marathon-LB's
//!    (`HAPROXY_GROUP`, `HAPROXY_{n}_VHOST`, `_PATH`, `_BALANCE`, `_REDIRECT_TO_HTTPS`,
//!    `_ENABLED`, …) and Atoll's own (`ATOLL_EDGE_{n}_HOST`, `_PATH`, `_STRIP_PREFIX`,
//!    `_BALANCE`, …).
//! 2. [`source`]: where apps come from — the master's cluster state ([`EdgeApps::from_state`])
//!    or Marathon's `/v2/apps?embed=apps.tasks` JSON ([`source::MarathonApps`]); [`mesos`]: a
//!    Mesos master's tasks grouped into apps by their Marathon task ids
//!    ([`EdgeApps::from_mesos_state`]).
//! 3. [`table`]: specs + tasks → [`RouteTable`], with [`RouteTable::lookup`] for each request.
//! 4. [`balance`] and [`outlier`]: the per-request choices (round robin, power of two choices
//!    on in-flight requests, consistent hashing) and passive outlier ejection, with the
//!    counters, random numbers and clock passed in by the shell.

pub mod balance;
pub mod labels;
pub mod mesos;
pub mod outlier;
pub mod source;
pub mod table;

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

pub use labels::{RouteSpec, route_specs};
pub use source::{EdgeApp, EdgeApps, EdgePort, EdgeTask, TaskHealth};
pub use table::{Lookup, RouteTable};

/// The group served when none is configured, as Marathon-LB's `--group external`.
pub const DEFAULT_GROUP: &str = "external";

/// How a route spreads requests over its backends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "on")]
pub enum Balance {
    RoundRobin,
    /// The less busy of two random backends (in-flight requests): least connections without
    /// a scan, and without every proxy thread piling onto the same idle backend.
    LeastConnections,
    /// Consistent (rendezvous) hashing: the same key reaches the same backend while it lives,
    /// and a backend leaving moves only its own keys.
    Hash(HashOn),
}

/// What a hashing route hashes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "name")]
pub enum HashOn {
    Header(String),
    Cookie(String),
    ClientIp,
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::RoundRobin => f.write_str("round-robin"),
            Balance::LeastConnections => f.write_str("least-connections"),
            Balance::Hash(HashOn::Header(name)) => write!(f, "hash-header:{name}"),
            Balance::Hash(HashOn::Cookie(name)) => write!(f, "hash-cookie:{name}"),
            Balance::Hash(HashOn::ClientIp) => f.write_str("hash-client-ip"),
        }
    }
}

/// How a route's path matches a request's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "prefix")]
pub enum PathMatch {
    /// HAProxy's `path_beg`, as Marathon-LB's `HAPROXY_{n}_PATH`: a plain string prefix
    /// (`/api` also matches `/apiary`).
    Begins(String),
    /// Atoll's `ATOLL_EDGE_{n}_PATH`: whole segments (`/api` matches `/api` and `/api/x`, not
    /// `/apiary`).
    Segments(String),
}

impl PathMatch {
    /// The prefix as written.
    pub fn prefix(&self) -> &str {
        match self {
            PathMatch::Begins(p) | PathMatch::Segments(p) => p,
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Begins(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Segments(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                match path.strip_prefix(prefix) {
                    Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
                    None => false,
                }
            }
        }
    }
}

/// Whether a backend takes new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendState {
    /// RUNNING and healthy (or without a health check).
    Active,
    /// KILLING, unreachable or marked draining: its requests in flight finish, no new ones.
    Draining,
    /// RUNNING with a failing health check (or none reported yet): no requests.
    Unhealthy,
}

/// One backend of a route: a task's address and port for the route's app port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EdgeBackend {
    pub address: SocketAddr,
    pub task: String,
    pub state: BackendState,
}

/// A served route: requests for one of `hosts` (any host when empty) whose path matches
/// `path` go to `backends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// `app id:port index`, e.g. `/shop/web:0`.
    pub id: String,
    pub app: String,
    pub port_index: usize,
    /// Lowercase, without a port; empty = any host.
    pub hosts: Vec<String>,
    pub path: Option<PathMatch>,
    /// Remove the path prefix before proxying (`/api/x` → `/x`).
    pub strip_prefix: bool,
    pub balance: Balance,
    pub redirect_to_https: bool,
    /// The app port's service port, when it has one (what Marathon-LB binds a frontend to).
    pub service_port: Option<u32>,
    /// Sorted by address; every state, so the admin view can show draining ones.
    pub backends: Vec<EdgeBackend>,
}

impl Route {
    /// The backends that take new requests.
    pub fn active(&self) -> impl Iterator<Item = &EdgeBackend> {
        self.backends.iter().filter(|b| b.state == BackendState::Active)
    }

    /// The path a backend sees for `path`.
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        match (&self.path, self.strip_prefix) {
            (Some(prefix), true) => {
                let prefix = prefix.prefix().trim_end_matches('/');
                let rest = path.strip_prefix(prefix).unwrap_or(path);
                if rest.is_empty() || rest.starts_with('?') {
                    format!("/{rest}").into()
                } else if rest.starts_with('/') {
                    rest.into()
                } else {
                    format!("/{rest}").into()
                }
            }
            _ => path.into(),
        }
    }
}

/// Something in the labels or the apps that could not be served as written; the rest is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, thiserror::Error)]
#[error("{app}: {message}")]
pub struct EdgeProblem {
    pub app: String,
    pub message: String,
}

impl EdgeProblem {
    pub fn new(app: impl Into<String>, message: impl Into<String>) -> EdgeProblem {
        EdgeProblem { app: app.into(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_matching_follows_the_label_family() {
        let begins = PathMatch::Begins("/api".into());
        assert!(begins.matches("/api") && begins.matches("/api/x") && begins.matches("/apiary"));
        assert!(!begins.matches("/ap") && !begins.matches("/x/api"));
        let segments = PathMatch::Segments("/api".into());
        assert!(segments.matches("/api") && segments.matches("/api/x") && segments.matches("/api?q=1"));
        assert!(!segments.matches("/apiary"));
        let slash = PathMatch::Segments("/api/".into());
        assert!(slash.matches("/api/x") && slash.matches("/api"));
        assert!(PathMatch::Segments("/".into()).matches("/anything"));
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash_and_the_query() {
        let route = |path: PathMatch, strip| Route {
            id: "/a:0".into(),
            app: "/a".into(),
            port_index: 0,
            hosts: vec![],
            path: Some(path),
            strip_prefix: strip,
            balance: Balance::RoundRobin,
            redirect_to_https: false,
            service_port: None,
            backends: vec![],
        };
        let r = route(PathMatch::Segments("/api".into()), true);
        assert_eq!(r.upstream_path("/api/x/y"), "/x/y");
        assert_eq!(r.upstream_path("/api"), "/");
        assert_eq!(r.upstream_path("/api?q=1"), "/?q=1");
        let r = route(PathMatch::Segments("/api/".into()), true);
        assert_eq!(r.upstream_path("/api/x"), "/x");
        let r = route(PathMatch::Begins("/api".into()), true);
        assert_eq!(r.upstream_path("/apiary"), "/ary");
        let r = route(PathMatch::Segments("/api".into()), false);
        assert_eq!(r.upstream_path("/api/x"), "/api/x");
    }
}
