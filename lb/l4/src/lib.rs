//! Atoll's eBPF layer-4 load balancer, kernel-facing half: loads the programs of
//! `ebpf/programs` (built by this crate's build script, or the committed prebuilt object),
//! attaches them, pins maps and links under a bpffs directory so that a restarted loader takes
//! over without interrupting traffic, and offers a small typed API over the maps for the
//! control plane.
//!
//! - East-west: cgroup v2 `sock_addr` programs (`connect4`, `sendmsg4`, `recvmsg4`,
//!   `getpeername4`) on [`L4Options::cgroup`]: a process in that cgroup (or below) that
//!   connects or sends to a VIP reaches a backend chosen by the service's Maglev table, and
//!   sees the VIP as its peer.
//! - North-south: tcx programs on [`L4Options::uplink`], only when named: packets arriving
//!   for a VIP are DNATed to a backend with connection tracking, replies leave with the VIP.
//!
//! Pins (all in [`L4Options::pin_dir`], default `/sys/fs/bpf/atoll`): the maps under their
//! own names ([`map_names`]), the links as `link_<hook>_<version>` and
//! `link_tc_{ingress,egress}_<version>_<interface>`. Dropping a [`Dataplane`] leaves
//! everything attached (that is the hand-over to the next loader); [`Dataplane::cleanup`]
//! detaches and unpins.

mod sys;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering, fence};

pub use atoll_ebpf_common::{
    BACKEND_ID_NONE, Backend, Config, DEFAULT_MAGLEV_SIZE, MAP_VERSION, PROTO_TCP, PROTO_UDP, ServiceKey, ServiceStats,
    ServiceValue, map_names, program_names,
};
use atoll_ebpf_common::{CtKey, CtValue, MAGLEV_SLOTS_PER_ENTRY, MaglevEntry, SockRevKey, SockRevValue};
use aya::maps::{Array, HashMap, Map, MapData, MapError, MapInfo, MapType, PerCpuHashMap};
use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfError, EbpfLoader};
use ipnetwork::IpNetwork;

/// The eBPF object this crate was built with (see `build.rs`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/atoll-ebpf.o"));

/// Where the object came from: `built` (from source with the pinned nightly and
/// bpf-linker), `prebuilt` (the committed `ebpf/prebuilt/atoll-ebpf.o`, matching the
/// sources) or `prebuilt-stale` (the committed object, older than the sources).
pub const OBJECT_ORIGIN: &str = env!("ATOLL_EBPF_OBJECT_ORIGIN");

/// Where bpffs is mounted when it is not yet.
const BPFFS: &str = "/sys/fs/bpf";

/// Everything [`Dataplane::start`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Options {
    /// bpffs directory for the pinned maps and links (created; bpffs is mounted at
    /// `/sys/fs/bpf` if it is not).
    pub pin_dir: PathBuf,
    /// cgroup v2 directory the `sock_addr` programs attach to; every process in it and below
    /// reaches VIPs. Default: the cgroup v2 root ([`cgroup2_root`]).
    pub cgroup: PathBuf,
    /// Interface for north-south NAT (tcx ingress + egress). Never attached unless named.
    pub uplink: Option<String>,
    /// Maglev table size M (slots per table; a prime, ≥ 100 × a service's backends keeps each
    /// backend within 1% of its share).
    pub maglev_size: u32,
    /// Tables in the table array (services with identical backend sets share one).
    pub max_tables: u32,
    /// Services (VIP + port + protocol).
    pub max_services: u32,
    /// Backends.
    pub max_backends: u32,
    /// Sockets whose VIP is remembered for `recvmsg`/`getpeername` (LRU).
    pub max_sockets: u32,
    /// North-south flows tracked (LRU; two entries each).
    pub max_flows: u32,
}

/// Defaults: pins in `/sys/fs/bpf/atoll`, the cgroup v2 root, no uplink, M = 1021, 2048
/// tables, 16384 services and backends, 65536 sockets, 32768 flows: about 25.5 MB of kernel
/// memory on 2 CPUs (measured: tables 8.4 MB — 4 bytes a slot, 4084 bytes a table —,
/// socket reverse NAT 6.3 MB and connection tracking 6.3 MB at 96 bytes an entry, services
/// 1.4 MB at 88 bytes, counters 1.8 MB at 80 + 16 × CPUs bytes, backends 1.3 MB at 80 bytes).
impl Default for L4Options {
    fn default() -> Self {
        L4Options {
            pin_dir: PathBuf::from("/sys/fs/bpf/atoll"),
            cgroup: cgroup2_root().unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")),
            uplink: None,
            maglev_size: DEFAULT_MAGLEV_SIZE,
            max_tables: 2048,
            max_services: 16384,
            max_backends: 16384,
            max_sockets: 65536,
            max_flows: 32768,
        }
    }
}

impl L4Options {
    /// Checks the options (also done by [`Dataplane::start`]), for a precise error early.
    pub fn validate(&self) -> Result<(), L4Error> {
        let bad = |why: String| Err(L4Error::InvalidOptions(why));
        for (name, value) in [
            ("maglev_size", self.maglev_size),
            ("max_tables", self.max_tables),
            ("max_services", self.max_services),
            ("max_backends", self.max_backends),
            ("max_sockets", self.max_sockets),
            ("max_flows", self.max_flows),
        ] {
            if value == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        // The programs compute `table * M + slot` in 32 bits.
        if u64::from(self.maglev_size) * u64::from(self.max_tables) > 1 << 31 {
            return bad(format!(
                "maglev_size × max_tables = {} × {} exceeds 2^31 slots",
                self.maglev_size, self.max_tables
            ));
        }
        if self.max_flows > u32::MAX / 2 {
            return bad("max_flows is too large".into());
        }
        if let Some(uplink) = &self.uplink
            && (uplink.is_empty() || uplink.contains('/'))
        {
            return bad(format!("bad interface name {uplink:?}"));
        }
        Ok(())
    }

    /// Whether `cgroup` is a cgroup v2 directory the programs can attach to (separate from
    /// [`L4Options::validate`]: cleaning up after a cgroup that is gone must still work).
    pub fn check_cgroup(&self) -> Result<(), L4Error> {
        if sys::is_cgroup2(&self.cgroup) {
            Ok(())
        } else {
            Err(L4Error::NotCgroup2 { path: self.cgroup.clone(), root: cgroup2_root() })
        }
    }

    /// Entries of the Maglev table array (two slots each).
    fn maglev_entries(&self) -> u32 {
        (self.maglev_size * self.max_tables).div_ceil(MAGLEV_SLOTS_PER_ENTRY)
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` on a pure v2 system, `/sys/fs/cgroup/unified`
/// on a hybrid one), from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum L4Error {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not on a bpffs")]
    NotBpffs { path: PathBuf },
    #[error("cgroup: {} is not a cgroup v2 directory ({})", path.display(), match root {
        Some(root) => format!("cgroup v2 is mounted at {}", root.display()),
        None => "cgroup v2 is not mounted".to_owned(),
    })]
    NotCgroup2 { path: PathBuf, root: Option<PathBuf> },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: ProgramError,
    },
    #[error("{what}: {source}")]
    Map {
        what: String,
        #[source]
        source: MapError,
    },
    #[error("backend id {0} is reserved (0 = no backend)")]
    ReservedBackendId(u32),
    #[error("table {table} is out of range (max_tables {max_tables})")]
    TableOutOfRange { table: u32, max_tables: u32 },
    #[error("a table has {expected} slots (maglev_size), got {got}")]
    TableLength { expected: u32, got: usize },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("netlink: {what}: {message}")]
    Netlink { what: String, message: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> L4Error {
    let what = what.into();
    move |source| L4Error::Io { what, source }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> L4Error {
    let what = what.into();
    move |source| L4Error::Program { what, source }
}

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> L4Error {
    let what = what.into();
    move |source| L4Error::Map { what, source }
}

/// What [`Dataplane::start`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartReport {
    /// The pinned maps of this version were kept, contents and all (a restart); otherwise
    /// they were created empty and the control plane must program everything.
    pub maps_reused: bool,
    /// Pinned maps that did not match the options (sizes, Maglev layout) and were replaced.
    pub maps_replaced: Vec<String>,
    /// Pinned links whose program was swapped in place (atomically; a restart).
    pub links_updated: Vec<String>,
    /// Links attached and pinned anew.
    pub links_created: Vec<String>,
    /// Pinned links for another target (another cgroup, a vanished interface) replaced by a
    /// new link: the new one was attached before the old one was detached.
    pub links_replaced: Vec<String>,
    /// Pins removed: other versions' maps and links, uplinks no longer configured, leftovers.
    pub removed: Vec<String>,
    /// [`OBJECT_ORIGIN`].
    pub object: &'static str,
}

/// What [`Dataplane::cleanup`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Links detached and unpinned.
    pub links_detached: Vec<String>,
    /// Maps (and other pins) unpinned.
    pub unpinned: Vec<String>,
    /// Files in the pin directory that are not Atoll's, left alone.
    pub left_alone: Vec<String>,
    /// Whether the pin directory itself was removed.
    pub removed_dir: bool,
}

/// The shape a pinned map must have to be re-used.
struct MapSpec {
    name: &'static str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
}

/// `BPF_F_MMAPABLE`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

fn map_specs(o: &L4Options) -> Vec<MapSpec> {
    fn spec<K, V>(name: &'static str, map_type: MapType, max_entries: u32, flags: u32) -> MapSpec {
        MapSpec {
            name,
            map_type,
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            max_entries,
            flags,
        }
    }
    vec![
        spec::<ServiceKey, ServiceValue>(map_names::SERVICES, MapType::Hash, o.max_services, 0),
        spec::<u32, Backend>(map_names::BACKENDS, MapType::Hash, o.max_backends, 0),
        spec::<u32, MaglevEntry>(map_names::MAGLEV, MapType::Array, o.maglev_entries(), BPF_F_MMAPABLE),
        spec::<u32, Config>(map_names::CONFIG, MapType::Array, 1, 0),
        spec::<SockRevKey, SockRevValue>(map_names::SOCK_REV, MapType::LruHash, o.max_sockets, 0),
        spec::<CtKey, CtValue>(map_names::CT, MapType::LruHash, o.max_flows * 2, 0),
        spec::<u32, ServiceStats>(map_names::STATS, MapType::PerCpuHash, o.max_services, 0),
    ]
}

/// A cgroup `sock_addr` hook: program name and the name of its link pin.
const CGROUP_HOOKS: [(&str, &str); 4] = [
    (program_names::CONNECT4, "connect4"),
    (program_names::SENDMSG4, "sendmsg4"),
    (program_names::RECVMSG4, "recvmsg4"),
    (program_names::GETPEERNAME4, "getpeername4"),
];

fn cgroup_link_pin(hook: &str) -> String {
    format!("link_{hook}_{MAP_VERSION}")
}

fn tc_link_pin(direction: &str, interface: &str) -> String {
    format!("link_tc_{direction}_{MAP_VERSION}_{interface}")
}

/// The layer-4 dataplane: the programs attached and pinned, and handles on their maps.
pub struct Dataplane {
    options: L4Options,
    config: Config,
    config_map: Array<MapData, Config>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, u32, Backend>,
    stats: PerCpuHashMap<MapData, u32, ServiceStats>,
    tables: MaglevTables,
    /// Services per rev_nat id, so that a service's counters go when its last service does.
    rev_nat_refs: BTreeMap<u32, u32>,
    memory: BTreeMap<&'static str, u64>,
    report: StartReport,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("options", &self.options)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The Maglev table array, mapped into our memory: one flat `u32` slot array.
struct MaglevTables {
    mapping: sys::Mapping,
    /// Slots in the array (`max_tables * maglev_size`, rounded up to whole entries).
    slots: usize,
    _map: MapData,
}

impl MaglevTables {
    fn slots(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is at least `slots * 4` bytes, page-aligned, and the kernel only
        // reads it; atomics make the concurrent reads well-defined.
        unsafe { std::slice::from_raw_parts(self.mapping.as_ptr().cast::<AtomicU32>(), self.slots) }
    }
}

impl Dataplane {
    /// Loads (or re-uses the pinned) maps, loads the programs, attaches them and pins the
    /// links. A second `start` on the same pin directory — a restarted `atoll lb` — keeps the
    /// maps and their contents and swaps the programs inside the existing links
    /// (`BPF_LINK_UPDATE`), so VIP traffic never sees a moment without a program. Pins of
    /// other versions are removed once this version is attached; pinned maps that do not
    /// fit the options are replaced (empty).
    pub fn start(options: &L4Options) -> Result<Dataplane, L4Error> {
        options.validate()?;
        options.check_cgroup()?;
        let _lock = prepare_pin_dir(&options.pin_dir)?;
        let fresh = list_dir(&options.pin_dir)?.iter().all(|name| !is_atoll_pin(name));
        let started = Dataplane::start_locked(options);
        if started.is_err() && fresh {
            // Nothing served from here before: leave nothing behind either.
            let mut undone = CleanupReport::default();
            if let Err(e) = unpin_all(&options.pin_dir, &mut undone) {
                tracing::warn!("removing what the failed start pinned in {}: {e}", options.pin_dir.display());
            }
            let _ = fs::remove_dir(&options.pin_dir);
        }
        started
    }

    /// `start` with the pin directory prepared and locked.
    fn start_locked(options: &L4Options) -> Result<Dataplane, L4Error> {
        let mut report = StartReport { object: OBJECT_ORIGIN, ..StartReport::default() };
        let specs = map_specs(options);
        let config = Config { maglev_size: options.maglev_size, max_tables: options.max_tables };
        report.maps_reused = check_pinned_maps(&options.pin_dir, &specs, config, &mut report)?;

        let mut loader = EbpfLoader::new();
        for spec in &specs {
            loader.map_max_entries(spec.name, spec.max_entries);
            loader.map_pin_path(spec.name, options.pin_dir.join(spec.name));
        }
        let mut ebpf = loader.load(OBJECT)?;

        let mut config_map: Array<MapData, Config> = take_map(&mut ebpf, map_names::CONFIG)?;
        config_map.set(0, config, 0).map_err(map_err("writing the config"))?;

        attach_cgroup_programs(&mut ebpf, options, &mut report)?;
        attach_uplink_programs(&mut ebpf, options, &mut report)?;
        remove_stale_pins(options, &mut report)?;

        let services: HashMap<MapData, ServiceKey, ServiceValue> = take_map(&mut ebpf, map_names::SERVICES)?;
        let backends = take_map(&mut ebpf, map_names::BACKENDS)?;
        let stats = take_map(&mut ebpf, map_names::STATS)?;
        let Some(Map::Array(maglev)) = ebpf.take_map(map_names::MAGLEV) else {
            return Err(L4Error::Missing("Maglev table array"));
        };
        let slots = options.maglev_entries() as usize * MAGLEV_SLOTS_PER_ENTRY as usize;
        let len = (slots * size_of::<u32>()).next_multiple_of(sys::page_size());
        let mapping = sys::Mapping::new(maglev.fd(), len).map_err(io_err("mapping the Maglev table array"))?;
        debug_assert!(mapping.len() >= slots * size_of::<u32>());
        let tables = MaglevTables { mapping, slots, _map: maglev };

        let mut rev_nat_refs = BTreeMap::new();
        for entry in services.iter() {
            let (_, value) = entry.map_err(map_err("reading the services"))?;
            *rev_nat_refs.entry(value.rev_nat).or_insert(0) += 1;
        }
        let mut memory = BTreeMap::new();
        for spec in &specs {
            if let Ok(map) = MapData::from_pin(options.pin_dir.join(spec.name))
                && let Some(bytes) = sys::map_memlock(map.fd().as_fd())
            {
                memory.insert(spec.name, bytes);
            }
        }
        tracing::info!(
            pin_dir = %options.pin_dir.display(),
            cgroup = %options.cgroup.display(),
            uplink = options.uplink.as_deref().unwrap_or("-"),
            object = OBJECT_ORIGIN,
            maps_reused = report.maps_reused,
            "layer-4 dataplane started"
        );
        Ok(Dataplane {
            options: options.clone(),
            config,
            config_map,
            services,
            backends,
            stats,
            tables,
            rev_nat_refs,
            memory,
            report,
        })
    }

    /// What `start` found and did.
    pub fn report(&self) -> &StartReport {
        &self.report
    }

    pub fn options(&self) -> &L4Options {
        &self.options
    }

    /// The configuration the programs read.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Changes the Maglev layout the programs read. The table array keeps its size, so
    /// `maglev_size × max_tables` must fit in it; every table must be written again for the
    /// new size before services use it.
    pub fn set_config(&mut self, config: Config) -> Result<(), L4Error> {
        if config.maglev_size == 0 || config.max_tables == 0 {
            return Err(L4Error::InvalidConfig("maglev_size and max_tables must be positive".into()));
        }
        let slots = u64::from(config.maglev_size) * u64::from(config.max_tables);
        if slots > self.tables.slots as u64 {
            return Err(L4Error::InvalidConfig(format!(
                "{} tables of {} slots do not fit in the table array ({} slots)",
                config.max_tables, config.maglev_size, self.tables.slots
            )));
        }
        self.config_map.set(0, config, 0).map_err(map_err("writing the config"))?;
        self.config = config;
        Ok(())
    }

    /// Adds or changes backend `id` (ids start at 1; 0 means "no backend").
    pub fn upsert_backend(&mut self, id: u32, backend: Backend) -> Result<(), L4Error> {
        if id == BACKEND_ID_NONE {
            return Err(L4Error::ReservedBackendId(id));
        }
        self.backends.insert(id, backend, 0).map_err(map_err(format!("writing backend {id}")))
    }

    /// Removes backend `id` (missing is fine). Tables still naming it send nothing there:
    /// a connection that picks its slot is left alone (and meets the blackhole route), so
    /// take a backend out of the tables first.
    pub fn remove_backend(&mut self, id: u32) -> Result<(), L4Error> {
        ignore_missing(self.backends.remove(&id)).map_err(map_err(format!("removing backend {id}")))
    }

    /// Writes table `table`: `backend_ids[s]` is slot `s`'s backend (length `maglev_size`).
    /// Write a table no service uses, then point services at it ([`Dataplane::upsert_service`]):
    /// a service's switch is then atomic.
    pub fn write_table(&mut self, table: u32, backend_ids: &[u32]) -> Result<(), L4Error> {
        let m = self.config.maglev_size;
        if table >= self.config.max_tables {
            return Err(L4Error::TableOutOfRange { table, max_tables: self.config.max_tables });
        }
        if backend_ids.len() != m as usize {
            return Err(L4Error::TableLength { expected: m, got: backend_ids.len() });
        }
        let start = table as usize * m as usize;
        for (slot, &id) in self.tables.slots()[start..start + m as usize].iter().zip(backend_ids) {
            slot.store(id, Ordering::Relaxed);
        }
        // The service update that follows is a syscall; this orders the table before it.
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Reads table `table` back (for reconciliation and tests).
    pub fn table(&self, table: u32) -> Result<Vec<u32>, L4Error> {
        let m = self.config.maglev_size as usize;
        if table >= self.config.max_tables {
            return Err(L4Error::TableOutOfRange { table, max_tables: self.config.max_tables });
        }
        let start = table as usize * m;
        Ok(self.tables.slots()[start..start + m].iter().map(|s| s.load(Ordering::Relaxed)).collect())
    }

    /// Adds or changes a service (one map update: atomic for the service). `value.count == 0`
    /// leaves connections to the VIP alone (they meet the blackhole route); its `table` is
    /// then not read (lb/core's `NO_TABLE` is fine).
    pub fn upsert_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), L4Error> {
        if value.count > 0 && value.table >= self.config.max_tables {
            return Err(L4Error::TableOutOfRange { table: value.table, max_tables: self.config.max_tables });
        }
        let old = match self.services.get(&key, 0) {
            Ok(old) => Some(old),
            Err(MapError::KeyNotFound) => None,
            Err(e) => return Err(map_err("reading a service")(e)),
        };
        self.services.insert(key, value, 0).map_err(map_err(format!("writing service {}", describe(&key))))?;
        *self.rev_nat_refs.entry(value.rev_nat).or_insert(0) += 1;
        if let Some(old) = old {
            self.release_rev_nat(old.rev_nat)?;
        }
        Ok(())
    }

    /// Removes a service (missing is fine); its counters go with its last service.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), L4Error> {
        let old = match self.services.get(key, 0) {
            Ok(old) => old,
            Err(MapError::KeyNotFound) => return Ok(()),
            Err(e) => return Err(map_err("reading a service")(e)),
        };
        ignore_missing(self.services.remove(key)).map_err(map_err(format!("removing service {}", describe(key))))?;
        self.release_rev_nat(old.rev_nat)
    }

    fn release_rev_nat(&mut self, rev_nat: u32) -> Result<(), L4Error> {
        let Some(refs) = self.rev_nat_refs.get_mut(&rev_nat) else { return Ok(()) };
        *refs -= 1;
        if *refs == 0 {
            self.rev_nat_refs.remove(&rev_nat);
            ignore_missing(self.stats.remove(&rev_nat)).map_err(map_err("removing counters"))?;
        }
        Ok(())
    }

    /// Every service in the map (after a restart: what the previous loader programmed).
    pub fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, L4Error> {
        self.services.iter().collect::<Result<Vec<_>, _>>().map_err(map_err("reading the services"))
    }

    /// Every backend in the map.
    pub fn backends(&self) -> Result<Vec<(u32, Backend)>, L4Error> {
        self.backends.iter().collect::<Result<Vec<_>, _>>().map_err(map_err("reading the backends"))
    }

    /// Counters per service id (`rev_nat`), summed over CPUs: `connections` counts
    /// `connect()`s to the VIP and new north-south flows, `packets` counts `sendmsg`
    /// datagrams and north-south packets.
    pub fn stats(&self) -> Result<BTreeMap<u32, ServiceStats>, L4Error> {
        let mut out = BTreeMap::new();
        for entry in self.stats.iter() {
            let (rev_nat, per_cpu) = entry.map_err(map_err("reading the counters"))?;
            let sum = per_cpu.iter().fold(ServiceStats::default(), |acc, s| ServiceStats {
                connections: acc.connections + s.connections,
                packets: acc.packets + s.packets,
            });
            out.insert(rev_nat, sum);
        }
        Ok(out)
    }

    /// Kernel memory held by each map (bytes, from `/proc/self/fdinfo`'s `memlock`) when the
    /// dataplane started; hash maps are preallocated, so this does not grow.
    pub fn kernel_memory(&self) -> &BTreeMap<&'static str, u64> {
        &self.memory
    }

    /// Detaches every Atoll link pinned in `options.pin_dir` (any version) and removes every
    /// pin and the directory (`atoll lb --cleanup`). Links are detached explicitly, so a
    /// loader that still holds one does not keep it attached. The blackhole route is
    /// separate ([`remove_blackhole`]).
    pub fn cleanup(options: &L4Options) -> Result<CleanupReport, L4Error> {
        let mut report = CleanupReport::default();
        let dir = &options.pin_dir;
        if !dir.exists() || !sys::is_bpffs(dir) {
            return Ok(report);
        }
        let lock = sys::lock_dir(dir).map_err(io_err(format!("locking {}", dir.display())))?;
        unpin_all(dir, &mut report)?;
        drop(lock);
        if report.left_alone.is_empty() {
            match fs::remove_dir(dir) {
                Ok(()) => report.removed_dir = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing {}", dir.display()))(e)),
            }
        }
        Ok(report)
    }
}

/// Detaches the links and removes every Atoll pin in `dir` (which the caller has locked).
fn unpin_all(dir: &Path, report: &mut CleanupReport) -> Result<(), L4Error> {
    for name in list_dir(dir)? {
        let path = dir.join(&name);
        if !is_atoll_pin(&name) {
            report.left_alone.push(name);
            continue;
        }
        if detach_pinned_link(&path)? {
            report.links_detached.push(name.clone());
        } else {
            report.unpinned.push(name.clone());
        }
        remove_pin(&path)?;
    }
    Ok(())
}

fn describe(key: &ServiceKey) -> String {
    let proto = match key.proto {
        PROTO_TCP => "tcp".to_string(),
        PROTO_UDP => "udp".to_string(),
        p => p.to_string(),
    };
    format!("{}:{}/{proto}", std::net::Ipv4Addr::from(u32::from_be(key.address)), u16::from_be(key.port))
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, L4Error>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(L4Error::Missing(name))?;
    T::try_from(map).map_err(map_err(format!("opening map {name}")))
}

/// Mounts bpffs if needed, creates `dir` on it and locks it: one loader at a time per pin
/// directory (a second `start` or a `cleanup` waits for the first to finish).
fn prepare_pin_dir(dir: &Path) -> Result<sys::DirLock, L4Error> {
    let bpffs = Path::new(BPFFS);
    if dir.starts_with(bpffs) && !sys::is_bpffs(bpffs) {
        // Under a lock on the mount point, so that loaders starting together mount it once.
        fs::create_dir_all(bpffs).map_err(io_err(format!("creating {BPFFS}")))?;
        let _lock = sys::lock_dir(bpffs).map_err(io_err(format!("locking {BPFFS}")))?;
        if !sys::is_bpffs(bpffs) {
            tracing::info!("mounting bpffs at {BPFFS}");
            sys::mount_bpffs(bpffs).map_err(io_err(format!("mounting bpffs at {BPFFS}")))?;
        }
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    if !sys::is_bpffs(dir) {
        return Err(L4Error::NotBpffs { path: dir.to_owned() });
    }
    sys::lock_dir(dir).map_err(io_err(format!("locking {}", dir.display())))
}

/// Whether this version's pinned maps can be re-used. They can when all are there with the
/// shapes the options ask for and the same Maglev layout; when none is there they are
/// created; otherwise the ones there are unpinned (the programs attached now keep theirs
/// until their links are replaced) and created afresh.
fn check_pinned_maps(dir: &Path, specs: &[MapSpec], config: Config, report: &mut StartReport) -> Result<bool, L4Error> {
    let mut present = Vec::new();
    let mut mismatch = None;
    for spec in specs {
        let path = dir.join(spec.name);
        if !path.exists() {
            mismatch.get_or_insert_with(|| format!("{} is missing", spec.name));
            continue;
        }
        present.push(spec.name);
        match MapInfo::from_pin(&path) {
            Ok(info) => {
                let same = info.map_type().is_ok_and(|t| t == spec.map_type)
                    && info.key_size() == spec.key_size
                    && info.value_size() == spec.value_size
                    && info.max_entries() == spec.max_entries
                    && info.map_flags() == spec.flags;
                if !same {
                    mismatch.get_or_insert_with(|| format!("{} has another shape", spec.name));
                }
            }
            Err(e) => {
                mismatch.get_or_insert_with(|| format!("{}: {e}", spec.name));
            }
        }
    }
    if present.is_empty() {
        return Ok(false);
    }
    if mismatch.is_none() {
        let pinned = MapData::from_pin(dir.join(map_names::CONFIG))
            .and_then(|data| Array::<MapData, Config>::try_from(Map::Array(data)))
            .and_then(|a| a.get(&0, 0));
        match pinned {
            Ok(pinned) if pinned == config => return Ok(true),
            Ok(pinned) => {
                mismatch = Some(format!(
                    "the tables are laid out for maglev_size {} × {} tables",
                    pinned.maglev_size, pinned.max_tables
                ));
            }
            Err(e) => mismatch = Some(format!("reading the pinned config: {e}")),
        }
    }
    tracing::warn!(
        reason = mismatch.as_deref().unwrap_or_default(),
        "replacing the pinned maps (the control plane must program everything again)"
    );
    for name in present {
        remove_pin(&dir.join(name))?;
        report.maps_replaced.push(name.to_string());
    }
    Ok(false)
}

/// A pinned link, if any, and whether it is attached where we want it.
enum Pinned {
    None,
    Same(std::os::fd::OwnedFd),
    Other(std::os::fd::OwnedFd),
}

fn pinned_link(path: &Path, link_type: u32, target: u64) -> Result<Pinned, L4Error> {
    if !path.exists() {
        return Ok(Pinned::None);
    }
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pinned::None),
        Err(e) => return Err(io_err(format!("opening {}", path.display()))(e)),
    };
    if !sys::is_link(fd.as_fd()) {
        // Something else pinned under our name: replace it.
        return Ok(Pinned::Other(fd));
    }
    match sys::link_info(fd.as_fd()) {
        Ok(info) if info.link_type == link_type && info.target == target && target != 0 => Ok(Pinned::Same(fd)),
        Ok(_) | Err(_) => Ok(Pinned::Other(fd)),
    }
}

/// Pins a freshly attached link at `path`. If another link was pinned there, the new one is
/// pinned next to it and renamed over it (bpffs renames atomically), then the old one is
/// detached: the hook never goes without a program.
fn install_link(link: FdLink, dir: &Path, name: &str, old: Pinned, report: &mut StartReport) -> Result<(), L4Error> {
    let path = dir.join(name);
    match old {
        Pinned::None => {
            link.pin(&path).map_err(|e| io_err(format!("pinning {}", path.display()))(io::Error::other(e)))?;
            report.links_created.push(name.to_string());
        }
        Pinned::Other(old) | Pinned::Same(old) => {
            let tmp = dir.join(format!("tmp_{name}"));
            if tmp.exists() {
                detach_pinned_link(&tmp)?;
                remove_pin(&tmp)?;
            }
            link.pin(&tmp).map_err(|e| io_err(format!("pinning {}", tmp.display()))(io::Error::other(e)))?;
            fs::rename(&tmp, &path).map_err(io_err(format!("renaming {} to {}", tmp.display(), path.display())))?;
            if let Err(e) = sys::link_detach(old.as_fd()) {
                tracing::debug!(link = name, error = %e, "the replaced link was already detached");
            }
            report.links_replaced.push(name.to_string());
        }
    }
    Ok(())
}

fn attach_cgroup_programs(ebpf: &mut Ebpf, options: &L4Options, report: &mut StartReport) -> Result<(), L4Error> {
    let cgroup = File::open(&options.cgroup).map_err(io_err(format!("opening cgroup {}", options.cgroup.display())))?;
    let cgroup_id = sys::cgroup_id(&options.cgroup).map_err(io_err(format!("reading {}", options.cgroup.display())))?;
    for (program, hook) in CGROUP_HOOKS {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(program)
            .ok_or(L4Error::Missing(program))?
            .try_into()
            .map_err(prog_err(format!("program {program}")))?;
        prog.load().map_err(prog_err(format!("loading {program}")))?;
        let name = cgroup_link_pin(hook);
        match pinned_link(&options.pin_dir.join(&name), sys::BPF_LINK_TYPE_CGROUP, cgroup_id)? {
            Pinned::Same(link) => {
                let fd = prog.fd().map_err(prog_err(format!("program {program}")))?;
                sys::link_update(link.as_fd(), fd.as_fd())
                    .map_err(io_err(format!("replacing the program of {name}")))?;
                report.links_updated.push(name);
            }
            old => {
                let id = prog
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(prog_err(format!("attaching {program} to {}", options.cgroup.display())))?;
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(prog_err(format!("taking the link of {program}")))?
                    .try_into()
                    .map_err(|e| io_err(format!("link of {program}"))(io::Error::other(e)))?;
                install_link(link, &options.pin_dir, &name, old, report)?;
            }
        }
    }
    Ok(())
}

fn attach_uplink_programs(ebpf: &mut Ebpf, options: &L4Options, report: &mut StartReport) -> Result<(), L4Error> {
    let Some(uplink) = &options.uplink else { return Ok(()) };
    let ifindex = sys::ifindex(uplink).map_err(io_err(format!("interface {uplink}")))?;
    for (program, direction, attach_type) in [
        (program_names::TC_INGRESS, "ingress", TcAttachType::Ingress),
        (program_names::TC_EGRESS, "egress", TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(program)
            .ok_or(L4Error::Missing(program))?
            .try_into()
            .map_err(prog_err(format!("program {program}")))?;
        prog.load().map_err(prog_err(format!("loading {program}")))?;
        let name = tc_link_pin(direction, uplink);
        match pinned_link(&options.pin_dir.join(&name), sys::BPF_LINK_TYPE_TCX, u64::from(ifindex))? {
            Pinned::Same(link) => {
                let fd = prog.fd().map_err(prog_err(format!("program {program}")))?;
                sys::link_update(link.as_fd(), fd.as_fd())
                    .map_err(io_err(format!("replacing the program of {name}")))?;
                report.links_updated.push(name);
            }
            old => {
                let id = prog
                    .attach_with_options(uplink, attach_type, TcAttachOptions::TcxOrder(LinkOrder::default()))
                    .map_err(prog_err(format!("attaching {program} to {uplink} ({direction})")))?;
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(prog_err(format!("taking the link of {program}")))?
                    .try_into()
                    .map_err(|e| io_err(format!("link of {program}"))(io::Error::other(e)))?;
                install_link(link, &options.pin_dir, &name, old, report)?;
            }
        }
    }
    Ok(())
}

/// Names in the pin directory that Atoll manages: maps (`atoll_*`), links (`link_*`) and
/// leftovers of an interrupted link replacement (`tmp_*`).
fn is_atoll_pin(name: &str) -> bool {
    name.starts_with("atoll_") || name.starts_with("link_") || name.starts_with("tmp_")
}

/// After this version is attached: removes pins of other versions, links for uplinks no
/// longer configured, and leftovers.
fn remove_stale_pins(options: &L4Options, report: &mut StartReport) -> Result<(), L4Error> {
    let mut keep: Vec<String> = map_names::ALL.iter().map(|s| s.to_string()).collect();
    keep.extend(CGROUP_HOOKS.iter().map(|(_, hook)| cgroup_link_pin(hook)));
    if let Some(uplink) = &options.uplink {
        keep.push(tc_link_pin("ingress", uplink));
        keep.push(tc_link_pin("egress", uplink));
    }
    for name in list_dir(&options.pin_dir)? {
        if !is_atoll_pin(&name) || keep.contains(&name) {
            continue;
        }
        let path = options.pin_dir.join(&name);
        detach_pinned_link(&path)?;
        remove_pin(&path)?;
        tracing::info!(pin = name, "removed a stale pin");
        report.removed.push(name);
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<String>, L4Error> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))? {
        let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// If `path` is a pinned link, detaches it (returns true); anything else is left as it is.
fn detach_pinned_link(path: &Path) -> Result<bool, L4Error> {
    let Ok(fd) = sys::obj_get(path) else { return Ok(false) };
    if !sys::is_link(fd.as_fd()) {
        return Ok(false);
    }
    if let Err(e) = sys::link_detach(fd.as_fd()) {
        tracing::debug!(link = %path.display(), error = %e, "detaching (already detached?)");
    }
    Ok(true)
}

fn remove_pin(path: &Path) -> Result<(), L4Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
    }
}

// ---- The VIP pool's blackhole route -----------------------------------------------------

fn blackhole_message(net: IpNetwork) -> Result<rtnetlink::packet_route::route::RouteMessage, L4Error> {
    use rtnetlink::packet_route::route::RouteType;
    Ok(rtnetlink::RouteMessageBuilder::<std::net::IpAddr>::new()
        .destination_prefix(net.network(), net.prefix())
        .map_err(|e| L4Error::Netlink { what: format!("a route to {net}"), message: e.to_string() })?
        .kind(RouteType::BlackHole)
        .build())
}

async fn with_netlink<T, F>(what: String, f: impl FnOnce(rtnetlink::Handle) -> F) -> Result<T, L4Error>
where
    F: Future<Output = Result<T, rtnetlink::Error>>,
{
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| L4Error::Netlink { what: what.clone(), message: format!("opening a netlink socket: {e}") })?;
    let task = tokio::spawn(connection);
    let result = f(handle).await;
    task.abort();
    result.map_err(|e| L4Error::Netlink { what, message: e.to_string() })
}

/// Adds (or keeps) a blackhole route for the VIP pool `net` in the current network
/// namespace, so that a connection to a VIP never leaves the machine when no program
/// rewrote it (no backend, or no program attached). Needs a tokio runtime.
pub async fn ensure_blackhole(net: IpNetwork) -> Result<(), L4Error> {
    let message = blackhole_message(net)?;
    with_netlink(format!("adding blackhole {net}"), |h| async move { h.route().add(message).replace().execute().await })
        .await
}

/// Removes the blackhole route for `net` (missing is fine). Needs a tokio runtime.
pub async fn remove_blackhole(net: IpNetwork) -> Result<(), L4Error> {
    let message = blackhole_message(net)?;
    with_netlink(format!("removing blackhole {net}"), |h| async move {
        match h.route().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == libc::ESRCH => Ok(()),
            other => other,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_defines_the_shared_names() {
        let names = map_names::ALL.into_iter().chain([
            program_names::CONNECT4,
            program_names::SENDMSG4,
            program_names::RECVMSG4,
            program_names::GETPEERNAME4,
            program_names::TC_INGRESS,
            program_names::TC_EGRESS,
        ]);
        for name in names {
            let symbol = [name.as_bytes(), b"\0"].concat();
            assert!(OBJECT.windows(symbol.len()).any(|w| w == symbol), "{name} is not in the eBPF object");
        }
        assert!(["built", "prebuilt", "prebuilt-stale"].contains(&OBJECT_ORIGIN));
    }

    #[test]
    fn options_are_validated() {
        let ok = L4Options::default();
        assert_eq!(ok.validate().map_err(|e| e.to_string()), Ok(()));
        assert_eq!(ok.maglev_entries(), (DEFAULT_MAGLEV_SIZE * 2048).div_ceil(2));
        for bad in [
            L4Options { maglev_size: 0, ..ok.clone() },
            L4Options { max_flows: 0, ..ok.clone() },
            L4Options { maglev_size: 65537, max_tables: 65536, ..ok.clone() },
            L4Options { uplink: Some(String::new()), ..ok.clone() },
            L4Options { uplink: Some("../eth0".into()), ..ok.clone() },
        ] {
            assert!(matches!(bad.validate(), Err(L4Error::InvalidOptions(_))), "{bad:?}");
        }
    }

    #[test]
    fn pin_names_carry_the_version() {
        assert_eq!(cgroup_link_pin("connect4"), "link_connect4_v1");
        assert_eq!(tc_link_pin("ingress", "eth0"), "link_tc_ingress_v1_eth0");
        for name in ["atoll_svc_v1", "atoll_svc_v0", "link_connect4_v1", "tmp_link_connect4_v1"] {
            assert!(is_atoll_pin(name), "{name}");
        }
        assert!(!is_atoll_pin("cilium_lb4_services_v2"));
    }

    #[test]
    fn map_shapes_follow_the_options() {
        let options = L4Options { maglev_size: 7, max_tables: 3, max_flows: 10, ..L4Options::default() };
        let specs = map_specs(&options);
        assert_eq!(specs.iter().map(|s| s.name).collect::<Vec<_>>(), map_names::ALL);
        let maglev = specs.iter().find(|s| s.name == map_names::MAGLEV).expect("maglev");
        assert_eq!((maglev.max_entries, maglev.value_size, maglev.flags), (11, 8, BPF_F_MMAPABLE));
        let ct = specs.iter().find(|s| s.name == map_names::CT).expect("ct");
        assert_eq!(ct.max_entries, 20);
    }

    #[test]
    fn the_cgroup2_root_is_found_when_mounted() {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mountinfo.contains(" - cgroup2 ") {
            let root = cgroup2_root().expect("cgroup2 is mounted");
            assert!(root.join("cgroup.procs").exists(), "{}", root.display());
        }
    }
}
