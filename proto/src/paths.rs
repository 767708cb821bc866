//! Where Atoll daemons keep their state by default.

use std::path::PathBuf;

/// `/var/lib/atoll` as root; otherwise `$XDG_DATA_HOME/atoll` (when absolute) or
/// `~/.local/share/atoll`.
pub fn default_data_root() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/atoll");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("atoll")
}

/// The default data dir of one daemon (`master`, `agent`, `dns`).
pub fn default_data_dir(daemon: &str) -> PathBuf {
    default_data_root().join(daemon)
}
