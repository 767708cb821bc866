//! The Atoll agent (`atoll agent`): the node daemon that registers with the master, launches
//! and kills tasks (each under its own executor process and cgroup), reports their status
//! updates reliably (acknowledged, checkpointed, re-sent), survives its own restarts without
//! disturbing running tasks, and serves state, logs and metrics over HTTP.
//!
//! The CLI calls [`AgentSettings::resolve`] and then [`run`] (or [`cleanup`]); it must also
//! provide `atoll executor --spec FILE`, which calls [`executor::main_with_spec`] and exits
//! with its code — every task's executor is started that way.
//!
//! Layout: [`settings`] (flags/TOML → options), [`actor`] (the one owner of state),
//! [`master`] (the gRPC stream), [`http`] (the API), and small pure pieces it is built from:
//! [`launch`] (argv, env, limits), [`outcome`] (terminal status), [`updates`] (the
//! acknowledgement queue), [`health`] (the health verdict; probes as a thin async layer),
//! [`gc`] (sandbox collection), [`checkpoint`] (what is on disk), [`process`] (pidfds, start
//! times, signals), [`cgroups`] and [`executor`]; [`net`] is container networking (address
//! leases, network namespaces, veths and the bridge over rtnetlink, port forwarders, routes to
//! other hosts' subnets from the event stream).

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

mod actor;
pub mod cgroups;
pub mod checkpoint;
pub mod cleanup;
pub mod executor;
pub mod gc;
pub mod health;
mod http;
pub mod launch;
mod master;
pub mod metrics;
pub mod net;
pub mod outcome;
pub mod process;
pub mod settings;
pub mod updates;

pub use cleanup::{CleanupReport, cleanup};
pub use settings::{AgentOptions, AgentSettings, SettingsError};

use cgroups::CgroupLayout;
use checkpoint::{CheckpointError, Layout};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Ipam(#[from] net::store::StoreError),
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another agent uses the data dir (it holds {path})")]
    Locked { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Cleanup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How [`run`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Return at once; tasks keep running under their executors and the next agent started on
    /// the same data dir re-attaches to them (what SIGTERM of `atoll agent` does).
    LeaveTasks,
    /// Kill every task gracefully, report the terminal updates, wait (bounded, about 10 s) for
    /// their acknowledgements, remove the cgroups, then return (what `atoll up` does).
    KillTasks,
}

/// Runs the agent until `stop` resolves: recovers checkpointed tasks, serves HTTP on
/// `options.listen`, and keeps a stream to the master (reconnecting forever).
pub async fn run(options: AgentOptions, stop: impl Future<Output = StopMode>) -> Result<(), AgentError> {
    let layout = Layout::new(&options.data_dir);
    fs::create_dir_all(layout.data_dir())
        .map_err(|source| AgentError::DataDir { path: layout.data_dir().to_path_buf(), source })?;
    let _lock = DataDirLock::acquire(&layout)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| AgentError::Bind { addr: options.listen, source })?;
    let bound = listener.local_addr().map_err(|source| AgentError::Bind { addr: options.listen, source })?;
    let address = options.advertised_address(bound.port());
    if address.ip().is_unspecified() {
        tracing::warn!(%address, "the agent advertises an unspecified address; set --advertise-ip");
    }
    let cgroups = if options.cgroups {
        task_cgroups()
    } else {
        tracing::warn!("cgroups disabled: tasks run without limits and are killed through their process groups");
        None
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let (tx, rx) = mpsc::unbounded_channel();
    let options = Arc::new(options);
    let networking = options.container_networking_enabled();
    let (me, me_rx) = tokio::sync::watch::channel(None);
    if options.masquerade && !networking {
        tracing::warn!("--masquerade has no effect: container networking is disabled");
    }
    let masquerade = Arc::new(net::masquerade::Masquerade::new(
        options.masquerade && networking,
        net::masquerade::NftTable { name: net::masquerade::table_name(layout.data_dir()), nft: options.nft.clone() },
        options.bridge.clone(),
    ));
    let (ops, worker, follower) = if networking {
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let worker = net::worker::Worker {
            bridge: options.bridge.clone(),
            prefix: net::netns_prefix(layout.data_dir()),
            actor: tx.clone(),
            masquerade: masquerade.clone(),
        };
        let worker = tokio::spawn(worker.run(ops_rx));
        let follower = tokio::spawn(net::routes::follow(options.master.clone(), me_rx, masquerade.clone()));
        (Some(ops), Some(worker), Some(follower))
    } else {
        tracing::info!("container networking disabled: tasks that ask for a network fail");
        (None, None, None)
    };
    let net_channels = actor::NetChannels { ops, me, masquerade };
    let agent =
        actor::Agent::recover(options.clone(), layout, cgroups, address, metrics.clone(), tx.clone(), net_channels)?;

    let api = http::Api { actor: tx.clone(), metrics };
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, http::router(api)).await {
            tracing::error!("HTTP server: {e}");
        }
    });
    tracing::info!(http = %bound, master = %options.master, data_dir = %options.data_dir.display(), "agent started");
    let connection = tokio::spawn(master::run(options.master.clone(), tx));
    let result = agent.run(rx, stop).await;
    connection.abort();
    server.abort();
    for task in [worker, follower].into_iter().flatten() {
        task.abort();
    }
    result
}

/// The cgroup hierarchies tasks are placed in, or `None` (with a loud warning) when this
/// process cannot create cgroups: tasks then run without limits and are killed through their
/// process groups.
fn task_cgroups() -> Option<CgroupLayout> {
    match CgroupLayout::detect() {
        Ok(layout) if layout.usable() => {
            tracing::info!("task cgroups: {}", layout.describe());
            Some(layout)
        }
        Ok(layout) => {
            tracing::warn!(
                "!!! cgroups are not writable here ({}; euid {}): tasks run WITHOUT cpu/memory limits, OOM \
                 detection or cgroup-wide kills. Run the agent as root for isolation. !!!",
                layout.describe(),
                rustix::process::geteuid().as_raw()
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                "!!! no usable cgroups ({e}): tasks run WITHOUT cpu/memory limits, OOM detection or \
                 cgroup-wide kills. !!!"
            );
            None
        }
    }
}

/// An exclusive `flock` on `<data dir>/agent.lock`: two agents on one data dir would fight
/// over the same tasks. Released when dropped (or when the process dies).
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub(crate) fn acquire(layout: &Layout) -> Result<DataDirLock, AgentError> {
        let path = layout.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| AgentError::Lock { path: path.clone(), source })?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(AgentError::Locked { path }),
            Err(e) => Err(AgentError::Lock { path, source: e.into() }),
        }
    }
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_file_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
