//! TLS termination: a certificate per host, chosen by SNI, from files in the certificate
//! directory, re-read when they change (no restart, no dropped connection):
//!
//! - `HOST.crt` + `HOST.key` (PEM: the chain, then the key) serve `HOST`;
//! - `_.example.com.crt` + `.key` serve `*.example.com` (one label);
//! - `default.crt` + `.key` serve any other name (and clients without SNI).
//!
//! Without a matching certificate the handshake fails, as it should.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

/// Certificates by lowercase name (`example.com`, `*.example.com`, `default`).
#[derive(Debug, Default)]
pub struct SniResolver {
    certs: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl SniResolver {
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.certs.load().keys().cloned().collect();
        names.sort();
        names
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(cert) = certs.get(&name) {
                return Some(cert.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(cert) = certs.get(&format!("*.{parent}"))
            {
                return Some(cert.clone());
            }
        }
        certs.get("default").cloned()
    }
}

/// What a file looked like when it was loaded.
type Stamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

/// Keeps a [`SniResolver`] in step with a directory.
pub struct CertDir {
    dir: PathBuf,
    resolver: Arc<SniResolver>,
    stamps: BTreeMap<String, (Stamp, Stamp)>,
}

impl CertDir {
    pub fn new(dir: PathBuf) -> CertDir {
        pingora::tls::install_default_crypto_provider();
        CertDir { dir, resolver: Arc::new(SniResolver::default()), stamps: BTreeMap::new() }
    }

    pub fn resolver(&self) -> Arc<SniResolver> {
        self.resolver.clone()
    }

    /// Loads what changed since the last call; a pair that fails to load keeps its previous
    /// certificate (and is logged).
    pub fn refresh(&mut self) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                if !self.stamps.is_empty() {
                    tracing::warn!("certificate directory {}: {e}", self.dir.display());
                }
                return;
            }
        };
        let mut seen = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".crt") else { continue };
            let cert = entry.path();
            let key = self.dir.join(format!("{stem}.key"));
            if !key.is_file() {
                continue;
            }
            seen.insert(stem.to_ascii_lowercase(), (cert, key));
        }
        let mut certs: HashMap<String, Arc<CertifiedKey>> = (**self.resolver.certs.load()).clone();
        let mut changed = false;
        let stems: Vec<String> = self.stamps.keys().cloned().collect();
        for stem in stems {
            if !seen.contains_key(&stem) {
                self.stamps.remove(&stem);
                certs.remove(&server_name(&stem));
                changed = true;
            }
        }
        for (stem, (cert, key)) in seen {
            let stamps = (stamp(&cert), stamp(&key));
            if self.stamps.get(&stem) == Some(&stamps) {
                continue;
            }
            self.stamps.insert(stem.clone(), stamps);
            match load(&cert, &key) {
                Ok(loaded) => {
                    tracing::info!(name = server_name(&stem), file = %cert.display(), "certificate loaded");
                    certs.insert(server_name(&stem), loaded);
                    changed = true;
                }
                Err(e) => tracing::warn!("certificate {}: {e}", cert.display()),
            }
        }
        if changed {
            self.resolver.certs.store(Arc::new(certs));
        }
    }

    /// Re-reads the directory every `interval`, for ever.
    pub async fn watch(mut self, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            self.refresh();
        }
    }
}

/// `_.example.com` → `*.example.com`.
fn server_name(stem: &str) -> String {
    match stem.strip_prefix("_.") {
        Some(parent) => format!("*.{parent}"),
        None => stem.to_owned(),
    }
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let (chain, key) = pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy())
        .map_err(|e| e.to_string())?
        .ok_or("no certificate or no key in the files")?;
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    CertifiedKey::from_der(chain, key, provider).map(Arc::new).map_err(|e| e.to_string())
}
