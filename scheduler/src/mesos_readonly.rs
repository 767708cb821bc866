//! The read-only HTTP endpoints of a Mesos master, served by the Atoll master on its one port:
//! `/master/state` (also `/master/state.json`, `/state`, `/state.json`), `/master/state-summary`,
//! `/master/frameworks`, `/master/slaves`, `/master/tasks`, `/master/redirect` and
//! `/metrics/snapshot`. Each handler asks the master actor for the cluster state and hands it to
//! the pure projection in [`crate::mesos_state`]; this module owns only the routing, the query
//! parameters and the master's identity (which needs the bound address and a clock).
//!
//! As in Mesos, unknown query parameters are ignored, `jsonp=CALLBACK` wraps a body in a
//! JavaScript call, and every endpoint is also reachable without the `/master` prefix and with
//! a `.json` suffix (libprocess routes both to the master's handlers).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use atoll_proto::model::{ClusterState, Time};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::actor::{ActorError, MasterHandle};
use crate::config::MasterOptions;
use crate::mesos_state::{self, MasterIdentity, TaskQuery};

/// Why a read-only endpoint could not answer.
#[derive(Debug, thiserror::Error)]
pub enum MesosReadError {
    /// The master actor is gone (shutting down): Mesos answers 503 while it has no leader.
    #[error("no leading master: {0}")]
    Unavailable(#[from] ActorError),
}

impl IntoResponse for MesosReadError {
    fn into_response(self) -> Response {
        // Mesos answers errors of these endpoints in plain text.
        (StatusCode::SERVICE_UNAVAILABLE, self.to_string()).into_response()
    }
}

#[derive(Clone)]
struct ReadState {
    master: MasterHandle,
    identity: Arc<MasterIdentity>,
}

/// The master's identity for a master listening on `listen`: a new Mesos master id, the
/// address it is reached at, and its settings under Mesos flag names. A wildcard `listen`
/// address names no host, so the machine's own address (its host name's, else loopback)
/// stands in for it, as Mesos resolves its host name without `--ip`.
pub async fn identity(listen: SocketAddr, options: &MasterOptions) -> MasterIdentity {
    let ip = if listen.ip().is_unspecified() { host_address(listen.ip()).await } else { listen.ip() };
    let mut identity =
        MasterIdentity::new(uuid::Uuid::new_v4().to_string(), SocketAddr::new(ip, listen.port()), Time::now());
    identity.flags = flags(listen, options);
    identity
}

/// How long the master waits for its own host name to resolve at start.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The first address of this machine's host name in the family of `wildcard` that is not
/// loopback, or loopback.
async fn host_address(wildcard: IpAddr) -> IpAddr {
    let loopback =
        if wildcard.is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) };
    let hostname = rustix::system::uname().nodename().to_string_lossy().into_owned();
    // The resolver may be slow or unreachable; the master must start regardless.
    let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((hostname.as_str(), 0))).await;
    match lookup.unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))) {
        Ok(addresses) => addresses
            .map(|a| a.ip())
            .find(|ip| ip.is_ipv4() == wildcard.is_ipv4() && !ip.is_loopback())
            .unwrap_or(loopback),
        Err(e) => {
            tracing::info!(
                "host name {hostname} does not resolve ({e}); the Mesos endpoints name the master {loopback}"
            );
            loopback
        }
    }
}

/// The master's settings as Mesos's `flags`: strings under the names of the Mesos flags that
/// mean the same, durations written as Mesos writes them (`15secs`).
fn flags(listen: SocketAddr, options: &MasterOptions) -> BTreeMap<String, String> {
    let config = &options.config;
    let mut flags = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        flags.insert(name.to_owned(), value);
    };
    set("ip", listen.ip().to_string());
    set("port", listen.port().to_string());
    set("hostname_lookup", "false".into());
    set("work_dir", options.data_dir.display().to_string());
    set("registry", "atoll_redb".into());
    set("allocator", "hierarchical_drf".into());
    set("allocation_interval", mesos_duration(config.allocation_interval));
    set("agent_ping_timeout", mesos_duration(config.agent_ping_timeout));
    set("max_agent_ping_timeouts", config.max_agent_ping_timeouts.to_string());
    set("agent_removal_timeout", mesos_duration(config.agent_gone_timeout));
    if let Some(timeout) = config.offer_timeout {
        set("offer_timeout", mesos_duration(timeout));
    }
    set("max_completed_tasks_per_framework", config.completed_tasks_per_framework.to_string());
    let minimum: Vec<String> = config.allocator.min_allocatable.iter().map(ToString::to_string).collect();
    set("min_allocatable_resources", minimum.join("|"));
    if !options.role_weights.is_empty() {
        let weights: Vec<String> = options.role_weights.iter().map(|(role, w)| format!("{role}={w}")).collect();
        set("weights", weights.join(","));
    }
    flags
}

/// A duration as stout prints one: in the largest unit it reaches, as a number that may have
/// decimals (`200ms`, `1secs`, `1.5mins`, `15mins`).
fn mesos_duration(duration: std::time::Duration) -> String {
    const UNITS: [(&str, f64); 8] = [
        ("weeks", 604_800e9),
        ("days", 86_400e9),
        ("hrs", 3_600e9),
        ("mins", 60e9),
        ("secs", 1e9),
        ("ms", 1e6),
        ("us", 1e3),
        ("ns", 1.0),
    ];
    let nanos = duration.as_nanos() as f64;
    let (unit, size) = UNITS.iter().copied().find(|(_, size)| nanos >= *size).unwrap_or(("ns", 1.0));
    format!("{}{unit}", nanos / size)
}

/// The routes, on the master's own port.
pub fn router(master: MasterHandle, identity: MasterIdentity) -> Router {
    let state = ReadState { master, identity: Arc::new(identity) };
    let mut router = Router::new();
    // libprocess serves `/master/X` also as `/X` (the master is its delegate) and as `X.json`.
    for (name, handler) in [
        ("state", get(state_handler)),
        ("state-summary", get(state_summary)),
        ("frameworks", get(frameworks)),
        ("slaves", get(slaves)),
        ("tasks", get(tasks)),
    ] {
        for path in
            [format!("/master/{name}"), format!("/master/{name}.json"), format!("/{name}"), format!("/{name}.json")]
        {
            router = router.route(&path, handler.clone());
        }
    }
    router
        .route("/master/redirect", get(redirect))
        .route("/redirect", get(redirect))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics/snapshot.json", get(metrics_snapshot))
        .with_state(state)
}

type Params = Query<HashMap<String, String>>;

impl ReadState {
    async fn cluster(&self) -> Result<ClusterState, MesosReadError> {
        Ok(self.master.state().await?)
    }
}

/// A JSON body as Mesos sends it, or wrapped as `CALLBACK(json);` when asked with `jsonp`.
fn reply(body: &Value, params: &HashMap<String, String>) -> Response {
    match params.get("jsonp") {
        Some(callback) => ([(header::CONTENT_TYPE, "text/javascript")], format!("{callback}({body});")).into_response(),
        None => axum::Json(body).into_response(),
    }
}

async fn state_handler(State(state): State<ReadState>, Query(params): Params) -> Result<Response, MesosReadError> {
    let cluster = state.cluster().await?;
    Ok(reply(&mesos_state::mesos_state(&cluster, &state.identity), &params))
}

async fn state_summary(State(state): State<ReadState>, Query(params): Params) -> Result<Response, MesosReadError> {
    let cluster = state.cluster().await?;
    Ok(reply(&mesos_state::state_summary(&cluster, &state.identity), &params))
}

async fn frameworks(State(state): State<ReadState>, Query(params): Params) -> Result<Response, MesosReadError> {
    let cluster = state.cluster().await?;
    let wanted = params.get("framework_id").map(String::as_str);
    Ok(reply(&mesos_state::frameworks(&cluster, &state.identity, wanted), &params))
}

async fn slaves(State(state): State<ReadState>, Query(params): Params) -> Result<Response, MesosReadError> {
    let cluster = state.cluster().await?;
    let wanted = params.get("slave_id").map(String::as_str);
    Ok(reply(&mesos_state::slaves(&cluster, &state.identity, wanted), &params))
}

async fn tasks(State(state): State<ReadState>, Query(params): Params) -> Result<Response, MesosReadError> {
    let cluster = state.cluster().await?;
    let query = TaskQuery::from_params(&params);
    Ok(reply(&mesos_state::tasks(&cluster, &state.identity, &query), &params))
}

/// Mesos's `timeout` parameter bounds how long it waits for slow metrics; these are computed
/// at once, so it is accepted and ignored.
async fn metrics_snapshot(State(state): State<ReadState>, Query(params): Params) -> Result<Response, MesosReadError> {
    let cluster = state.cluster().await?;
    Ok(reply(&mesos_state::metrics_snapshot(&cluster, &state.identity, Time::now()), &params))
}

/// `307 Temporary Redirect` to the leader's base URL (`//IP:PORT`): this master, the only one.
async fn redirect(State(state): State<ReadState>) -> Response {
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, state.identity.redirect_location())]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_print_like_stout() {
        assert_eq!(mesos_duration(Duration::from_secs(1)), "1secs");
        assert_eq!(mesos_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(mesos_duration(Duration::from_secs(90)), "1.5mins");
        assert_eq!(mesos_duration(Duration::from_secs(15 * 60)), "15mins");
        assert_eq!(mesos_duration(Duration::ZERO), "0ns");
    }

    #[tokio::test]
    async fn the_identity_names_a_real_address_and_the_settings() {
        let options = MasterOptions::default();
        let identity = identity("127.0.0.1:5050".parse().unwrap(), &options).await;
        assert_eq!(identity.pid(), "master@127.0.0.1:5050");
        assert_eq!(identity.flags["port"], "5050");
        assert_eq!(identity.flags["allocation_interval"], "1secs");
        assert_eq!(identity.flags["work_dir"], options.data_dir.display().to_string());
        // (A wildcard address is not tried here: it looks the host name up, which may leave
        // the machine.)
    }
}
