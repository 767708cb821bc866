//! Builds the eBPF programs (`ebpf/programs`) for `bpfel-unknown-none` with the pinned
//! nightly and bpf-linker when both are installed, and otherwise uses the committed object
//! `ebpf/prebuilt/atoll-ebpf.o`, so that a plain `cargo build` on stable works anywhere.
//!
//! The prebuilt object has a stamp next to it (`atoll-ebpf.o.sources`) with a hash of the
//! program sources it was built from. A build from source refreshes the object and the stamp
//! when the sources changed (commit them); a build that falls back to a prebuilt object older
//! than the sources says so with a cargo warning.
//!
//! `ATOLL_EBPF_BUILD`: `auto` (default), `source` (fail without the toolchain: CI), or
//! `prebuilt` (never build).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

const TOOLCHAIN: &str = "nightly-2026-05-19";
const BPF_LINKER_VERSION: &str = "0.10.";
const PACKAGE: &str = "atoll-ebpf";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../..").canonicalize()?;
    let programs = root.join("ebpf/programs");
    let common = root.join("ebpf/common");
    let prebuilt_dir = root.join("ebpf/prebuilt");
    let prebuilt = prebuilt_dir.join("atoll-ebpf.o");
    let stamp = prebuilt_dir.join("atoll-ebpf.o.sources");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("atoll-ebpf.o");

    for path in [programs.join("src"), programs.join("Cargo.toml"), common.join("src"), common.join("Cargo.toml")] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed={}", prebuilt.display());
    println!("cargo:rerun-if-changed={}", stamp.display());
    println!("cargo:rerun-if-env-changed=ATOLL_EBPF_BUILD");

    let sources = sources_hash(&[&programs, &common])?;
    let mode = env::var("ATOLL_EBPF_BUILD").unwrap_or_else(|_| "auto".into());
    let toolchain = match mode.as_str() {
        "prebuilt" => Err("ATOLL_EBPF_BUILD=prebuilt".to_string()),
        "auto" | "source" | "" => toolchain_available(),
        other => bail!("ATOLL_EBPF_BUILD={other}: expected auto, source or prebuilt"),
    };

    let origin = match toolchain {
        Ok(()) => {
            let package = aya_build::Package {
                name: PACKAGE,
                root_dir: programs.to_str().context("non-UTF-8 path")?,
                ..Default::default()
            };
            // The nested cargo's progress would otherwise become one cargo warning per line.
            // SAFETY: the build script is single-threaded here.
            unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
            aya_build::build_ebpf([package], aya_build::Toolchain::Custom(TOOLCHAIN))?;
            let built = out_dir.join(PACKAGE);
            fs::copy(&built, &object).with_context(|| format!("copying {}", built.display()))?;
            if read_stamp(&stamp).as_deref() != Some(sources.as_str()) || !prebuilt.exists() {
                refresh_prebuilt(&built, &prebuilt, &stamp, &sources)?;
                println!(
                    "cargo:warning=refreshed {} from the eBPF sources (commit it with its .sources stamp)",
                    prebuilt.display()
                );
            }
            "built"
        }
        Err(why) => {
            if mode == "source" {
                bail!(
                    "ATOLL_EBPF_BUILD=source but the eBPF toolchain is missing ({why}); install it with \
                     `rustup toolchain install {TOOLCHAIN} --component rust-src --profile minimal` and \
                     `cargo install bpf-linker@0.10.0 --locked` (./dev test does)"
                );
            }
            fs::copy(&prebuilt, &object).with_context(|| format!("copying {}", prebuilt.display()))?;
            if read_stamp(&stamp).as_deref() == Some(sources.as_str()) {
                "prebuilt"
            } else {
                println!(
                    "cargo:warning=the prebuilt eBPF object {} is STALE: the programs changed since it was \
                     built, and they cannot be rebuilt here ({why}). Install the toolchain \
                     (`rustup toolchain install {TOOLCHAIN} --component rust-src --profile minimal`, \
                     `cargo install bpf-linker@0.10.0 --locked`) and build again to refresh it.",
                    prebuilt.display()
                );
                "prebuilt-stale"
            }
        }
    };
    println!("cargo:rustc-env=ATOLL_EBPF_OBJECT_ORIGIN={origin}");
    Ok(())
}

/// Whether the pinned nightly (with rust-src) and bpf-linker 0.10 are installed; never
/// installs anything.
fn toolchain_available() -> Result<(), String> {
    let rustup = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    if !rustup.status.success() {
        return Err(format!("toolchain {TOOLCHAIN} is not installed"));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&rustup.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Err(format!("toolchain {TOOLCHAIN} has no rust-src component"));
    }
    let linker = Command::new("bpf-linker").arg("--version").output().map_err(|e| format!("bpf-linker: {e}"))?;
    let version = String::from_utf8_lossy(&linker.stdout);
    if !linker.status.success() || !version.split_whitespace().any(|w| w.starts_with(BPF_LINKER_VERSION)) {
        return Err(format!("bpf-linker is not {BPF_LINKER_VERSION}x ({})", version.trim()));
    }
    Ok(())
}

fn read_stamp(stamp: &Path) -> Option<String> {
    let text = fs::read_to_string(stamp).ok()?;
    text.lines().find_map(|l| l.strip_prefix("sources ")).map(|s| s.trim().to_string())
}

fn refresh_prebuilt(built: &Path, prebuilt: &Path, stamp: &Path, sources: &str) -> anyhow::Result<()> {
    let dir = prebuilt.parent().context("prebuilt path")?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(".atoll-ebpf.o.tmp");
    fs::copy(built, &tmp)?;
    fs::rename(&tmp, prebuilt)?;
    let text = format!(
        "# Hash of ebpf/programs and ebpf/common (FNV-1a 64 over their Cargo.toml and src/, \
         see lb/l4/build.rs) that atoll-ebpf.o was built from.\n\
         sources {sources}\ntoolchain {TOOLCHAIN}\nbpf-linker {BPF_LINKER_VERSION}x\n"
    );
    let tmp = dir.join(".atoll-ebpf.o.sources.tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, stamp)?;
    Ok(())
}

/// FNV-1a 64 over the relative path and contents of every file in each crate's Cargo.toml
/// and src/, in sorted order, plus the toolchain it is built with. Enough to notice a change,
/// not a security measure.
fn sources_hash(crates: &[&Path]) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for dir in crates {
        files.push(dir.join("Cargo.toml"));
        collect(&dir.join("src"), &mut files)?;
    }
    let root = crates[0].parent().context("crate dir")?;
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(TOOLCHAIN.as_bytes());
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        feed(relative.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
        feed(&[0]);
    }
    Ok(format!("{hash:016x}"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
