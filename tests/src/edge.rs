//! Whole-cluster tests of `atoll edge`: the proxy as a process of its own next to the test's
//! master and agent, on loopback ports of its own, killed (by PID) when the test ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{Cluster, atoll_bin, free_port, wait_for};

/// The backend task of the edge tests (HTTP, slow answers, WebSockets, graceful drain).
pub const HTTP_BACKEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/http_backend.py");

pub struct Edge {
    pub port: u16,
    pub tls_port: u16,
    pub admin_port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Edge {
    /// Starts `atoll edge` against the cluster's master with `extra` flags and waits for its
    /// admin API.
    pub async fn start(cluster: &Cluster, extra: &[&str]) -> anyhow::Result<Edge> {
        let mut edge = Edge {
            port: free_port(),
            tls_port: free_port(),
            admin_port: free_port(),
            log: cluster.dir.path().join("edge.log"),
            child: None,
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&edge.log)?;
        let child = Command::new(atoll_bin())
            .args(["edge", "--master", &cluster.master_url()])
            .args(["--listen", &format!("127.0.0.1:{}", edge.port)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", edge.admin_port)])
            .args(["--grace-period", "2s"])
            .args(extra)
            .env("ATOLL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting atoll edge")?;
        edge.child = Some(child);
        let url = edge.admin("/health");
        wait_for("the edge to answer", Duration::from_secs(20), async || {
            if let Some(status) = edge.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("atoll edge exited with {status}:\n{}", edge.logs());
            }
            Ok(reqwest::get(&url).await.ok().filter(|r| r.status().is_success()).map(|_| ()))
        })
        .await?;
        Ok(edge)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn routes(&self) -> anyhow::Result<Value> {
        Ok(reqwest::get(self.admin("/v1/routes")).await?.error_for_status()?.json().await?)
    }

    /// The route `id` once it has `active` active backends.
    pub async fn wait_route(&self, id: &str, active: usize) -> anyhow::Result<Value> {
        let what = format!("route {id} with {active} active backends");
        wait_for(&what, Duration::from_secs(60), async || {
            let routes = self.routes().await?;
            Ok(routes["routes"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["id"] == id && backends_in(r, "active").len() == active).cloned()))
        })
        .await
        .with_context(|| self.logs())
    }

    pub fn logs(&self) -> String {
        format!("--- edge.log\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Ends the proxy with `signal` and waits for it; how long that took.
    pub fn stop(&mut self, signal: i32) -> Option<(std::process::ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        let started = std::time::Instant::now();
        // SAFETY: the pid of our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        // Bounded: a proxy that does not stop within 30 s is killed, and the test sees it.
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let status = child.wait().ok()?;
        Some((status, started.elapsed()))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL);
    }
}

/// Task ids of a route's backends in `state` (`active`, `draining`, `unhealthy`).
pub fn backends_in(route: &Value, state: &str) -> Vec<String> {
    route["backends"]
        .as_array()
        .map(|b| {
            b.iter().filter(|b| b["state"] == state).filter_map(|b| b["task"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

/// An app of `instances` backend tasks with an HTTP health check and `labels`.
pub fn http_app(id: &str, instances: u32, labels: Value) -> Value {
    serde_json::json!({
        "id": id,
        "instances": instances,
        "cmd": format!("exec python3 {HTTP_BACKEND}"),
        "cpus": 0.05,
        "mem": 32,
        "env": { "VERSION": "1" },
        "taskKillGracePeriodSeconds": 20,
        "labels": labels,
        "portDefinitions": [{ "port": 0, "name": "http" }],
        "healthChecks": [{ "protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 30, "delaySeconds": 0,
                           "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 3 }],
    })
}
