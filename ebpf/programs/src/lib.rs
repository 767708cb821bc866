//! Empty on purpose: this library only exists so that `lb/l4` can name `atoll-ebpf` as a
//! build-dependency (cargo then re-runs its build script when the programs change). The
//! programs themselves are the `atoll-ebpf` binary, built for `bpfel-unknown-none`.
#![no_std]
