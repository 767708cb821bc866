//! The recorded DC/OS operator-API streams (`shared/compat/dcos-net/`), for the tests that
//! replay them: the L4 VIPs (`dcos_net_compat`) and the edge's routes (`edge_mesos_compat`).

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;

/// `shared/compat/` beside the repository, or `$ATOLL_COMPAT_DIR`.
pub fn compat_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("ATOLL_COMPAT_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/compat")])
        .collect();
    candidates.iter().find(|dir| dir.join("dcos-net/operator-api.json").is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "the dcos-net fixtures (dcos-net/operator-api.json) are in none of {candidates:?}: \
             lay the shared/ folder beside the repository or set ATOLL_COMPAT_DIR to its compat/ folder"
        )
    })
}

/// The events of a fixture, in order.
pub fn stream(name: &str) -> Vec<Value> {
    let path = compat_dir().join("dcos-net").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1)))
        .collect()
}

/// What dcos-net's tests resolved host names to (`dns-hostname.json`'s agent is `localhost`).
pub fn resolve(host: &str) -> Vec<IpAddr> {
    if host == "localhost" { vec![IpAddr::from([127, 0, 0, 1])] } else { Vec::new() }
}
