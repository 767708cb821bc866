//! The programs and their maps. Map and program names are in `atoll_ebpf_common::map_names`
//! and `program_names` (the attributes below need literals; a test in the loader checks
//! that the object file carries exactly those names).
//!
//! Everything the programs read is written by the loader (`lb/l4`): services, backends, the
//! Maglev table array and the config. All addresses and ports are in network byte order.

use atoll_ebpf_common::{
    BACKEND_ID_NONE, Backend, CT_DIR_ORIGINAL, CT_DIR_REPLY, Config, CtKey, CtValue, MaglevEntry, PROTO_TCP, PROTO_UDP,
    ServiceKey, ServiceStats, ServiceValue, SockRevKey, SockRevValue,
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_MMAPABLE, BPF_F_PSEUDO_HDR, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_get_prandom_u32, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap},
    programs::{SockAddrContext, TcContext},
};

// Sizes here are placeholders: the loader sets every map's size from its options.

#[map(name = "atoll_svc_v1")]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(1024, 0);

#[map(name = "atoll_bknd_v1")]
static BACKENDS: HashMap<u32, Backend> = HashMap::with_max_entries(1024, 0);

/// Every Maglev table, back to back: slot `s` of table `t` is slot `t * M + s`, stored as
/// `entry[slot / 2][slot % 2]`. Mmapable, so that the loader writes a whole table with
/// plain memory stores instead of one syscall per slot.
#[map(name = "atoll_maglev_v1")]
static MAGLEV: Array<MaglevEntry> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map(name = "atoll_cfg_v1")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "atoll_srev_v1")]
static SOCK_REV: LruHashMap<SockRevKey, SockRevValue> = LruHashMap::with_max_entries(1024, 0);

#[map(name = "atoll_ct_v1")]
static CT: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(1024, 0);

#[map(name = "atoll_stats_v1")]
static STATS: PerCpuHashMap<u32, ServiceStats> = PerCpuHashMap::with_max_entries(1024, 0);

/// `sock_addr` programs must return 1 (0 would refuse the operation).
const ALLOW: i32 = 1;
const AF_INET: u32 = 2;

/// The service's backend for `hash`: its table's slot `hash % M`. `None` when the service
/// has no backend taking new connections, the table is out of range or the slot is empty.
#[inline(always)]
fn pick(svc: &ServiceValue, hash: u32) -> Option<(u32, &'static Backend)> {
    if svc.count == 0 {
        return None;
    }
    let config = CONFIG.get(0)?;
    let m = config.maglev_size;
    if m == 0 || svc.table >= config.max_tables {
        return None;
    }
    // The loader keeps max_tables * M below 2^31.
    let slot = svc.table * m + hash % m;
    let entry = MAGLEV.get(slot / 2)?;
    let id = if slot & 1 == 0 { entry[0] } else { entry[1] };
    if id == BACKEND_ID_NONE {
        return None;
    }
    // SAFETY: a plain read of a preallocated hash map value.
    let backend = unsafe { BACKENDS.get(id) }?;
    Some((id, backend))
}

/// A 64-bit finaliser (MurmurHash3's), so that consecutive socket cookies and similar
/// flows spread over the whole table.
#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline(always)]
fn count(rev_nat: u32, connections: u64, packets: u64) {
    let stats = match STATS.get_ptr_mut(rev_nat) {
        Some(stats) => stats,
        None => {
            let _ = STATS.insert(rev_nat, ServiceStats::default(), u64::from(BPF_NOEXIST));
            match STATS.get_ptr_mut(rev_nat) {
                Some(stats) => stats,
                None => return,
            }
        }
    };
    // SAFETY: this CPU's own counters.
    unsafe {
        (*stats).connections += connections;
        (*stats).packets += packets;
    }
}

// ---- East-west: sockets ----------------------------------------------------------------

/// connect4 / sendmsg4: VIP:port → a backend; remember the VIP for the socket's replies.
#[inline(always)]
fn redirect(ctx: &SockAddrContext, connect: bool) {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the kernel's context; the verifier checks every field access.
    unsafe {
        if (*sa).user_family != AF_INET {
            return;
        }
        let proto = (*sa).protocol;
        if proto != u32::from(PROTO_TCP) && proto != u32::from(PROTO_UDP) {
            return;
        }
        let vip = (*sa).user_ip4;
        let vip_port = (*sa).user_port as u16;
        let key = ServiceKey { address: vip, port: vip_port, proto: proto as u8, _pad: 0 };
        let Some(svc) = SERVICES.get(key) else { return };
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        // TCP: a random slot per connection. UDP: the socket's slot, so that every datagram
        // of one socket goes to the same backend.
        let hash = if proto == u32::from(PROTO_TCP) { bpf_get_prandom_u32() } else { mix(cookie) as u32 };
        let Some((_, backend)) = pick(svc, hash) else { return };
        let (address, port) = (backend.address, backend.port);
        (*sa).user_ip4 = address;
        (*sa).user_port = u32::from(port);
        let rev_key = SockRevKey { cookie, address, port, _pad: [0; 2] };
        let rev = SockRevValue { address: vip, port: vip_port, _pad: [0; 2], rev_nat: svc.rev_nat };
        let _ = SOCK_REV.insert(rev_key, rev, 0);
        if connect { count(svc.rev_nat, 1, 0) } else { count(svc.rev_nat, 0, 1) }
    }
}

/// recvmsg4 / getpeername4: a backend the socket was sent to by `redirect` → its VIP.
#[inline(always)]
fn restore(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: as in `redirect`.
    unsafe {
        if (*sa).user_family != AF_INET {
            return;
        }
        let cookie = bpf_get_socket_cookie(ctx.as_ptr());
        let key = SockRevKey { cookie, address: (*sa).user_ip4, port: (*sa).user_port as u16, _pad: [0; 2] };
        if let Some(rev) = SOCK_REV.get(key) {
            let (address, port) = (rev.address, rev.port);
            (*sa).user_ip4 = address;
            (*sa).user_port = u32::from(port);
        }
    }
}

#[cgroup_sock_addr(connect4)]
pub fn atoll_connect4(ctx: SockAddrContext) -> i32 {
    redirect(&ctx, true);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn atoll_sendmsg4(ctx: SockAddrContext) -> i32 {
    redirect(&ctx, false);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn atoll_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn atoll_getpeer4(ctx: SockAddrContext) -> i32 {
    restore(&ctx);
    ALLOW
}

// ---- North-south: packets on an uplink --------------------------------------------------

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_CSUM: usize = ETH_HLEN + 10;
const IP_SRC: usize = ETH_HLEN + 12;
const IP_DST: usize = ETH_HLEN + 16;

/// An unfragmented IPv4 TCP or UDP packet's addresses and ports (network byte order, as in
/// the packet) and where its L4 header and checksum are.
struct Flow {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    l4: usize,
    l4_csum: usize,
}

#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Flow> {
    let ethertype: u16 = ctx.load(12).ok()?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return None;
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    if version_ihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    // More-fragments or a fragment offset: only whole datagrams carry both ports.
    let frag: u16 = ctx.load(ETH_HLEN + 6).ok()?;
    if u16::from_be(frag) & 0x3fff != 0 {
        return None;
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    let csum_offset = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return None,
    };
    let l4 = ETH_HLEN + ihl;
    Some(Flow {
        saddr: ctx.load(IP_SRC).ok()?,
        daddr: ctx.load(IP_DST).ok()?,
        sport: ctx.load(l4).ok()?,
        dport: ctx.load(l4 + 2).ok()?,
        proto,
        l4,
        l4_csum: l4 + csum_offset,
    })
}

/// Replaces an address (at `addr_at`) and a port (at `port_at`), fixing the IP header
/// checksum and the L4 checksum (pseudo-header included; a UDP checksum of 0 stays 0).
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "one packet rewrite, spelled out")]
fn rewrite(
    ctx: &TcContext,
    flow: &Flow,
    addr_at: usize,
    from_addr: u32,
    to_addr: u32,
    port_at: usize,
    from_port: u16,
    to_port: u16,
) -> Option<()> {
    let mangled = if flow.proto == PROTO_UDP { u64::from(BPF_F_MARK_MANGLED_0) } else { 0 };
    ctx.l4_csum_replace(
        flow.l4_csum,
        u64::from(from_addr),
        u64::from(to_addr),
        u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
    )
    .ok()?;
    ctx.l4_csum_replace(flow.l4_csum, u64::from(from_port), u64::from(to_port), mangled | 2).ok()?;
    ctx.l3_csum_replace(IP_CSUM, u64::from(from_addr), u64::from(to_addr), 4).ok()?;
    ctx.store(addr_at, &to_addr, 0).ok()?;
    ctx.store(port_at, &to_port, 0).ok()
}

/// Client → VIP: DNAT to the flow's backend (tracked, so the flow keeps it).
#[inline(always)]
fn ingress(ctx: &TcContext) -> Option<()> {
    let flow = parse(ctx)?;
    let key = ServiceKey { address: flow.daddr, port: flow.dport, proto: flow.proto, _pad: 0 };
    // SAFETY: plain reads of preallocated hash map values.
    let svc = unsafe { SERVICES.get(key) }?;
    let original = CtKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        dir: CT_DIR_ORIGINAL,
        _pad: [0; 2],
    };
    // SAFETY: as above (LRU values are not freed under a running program).
    let tracked = match unsafe { CT.get(original) } {
        Some(ct) => {
            let id = ct.backend;
            unsafe { BACKENDS.get(id) }.map(|backend| (id, backend))
        }
        None => None,
    };
    let (backend, new_flow) = match tracked {
        Some((_, backend)) => (backend, 0),
        None => {
            // A hash of the flow (not a random slot): a flow whose entry was evicted, or that
            // another node with the same table sees, still lands on the same backend.
            let a = (u64::from(flow.saddr) << 32) | u64::from(flow.daddr);
            let b = (u64::from(flow.sport) << 24) | (u64::from(flow.dport) << 8) | u64::from(flow.proto);
            let (id, backend) = pick(svc, mix(a ^ mix(b)) as u32)?;
            let value =
                CtValue { backend: id, vip: flow.daddr, vip_port: flow.dport, _pad: [0; 2], rev_nat: svc.rev_nat };
            let reply = CtKey {
                saddr: backend.address,
                daddr: flow.saddr,
                sport: backend.port,
                dport: flow.sport,
                proto: flow.proto,
                dir: CT_DIR_REPLY,
                _pad: [0; 2],
            };
            CT.insert(reply, value, 0).ok()?;
            CT.insert(original, value, 0).ok()?;
            (backend, 1)
        }
    };
    let (address, port) = (backend.address, backend.port);
    rewrite(ctx, &flow, IP_DST, flow.daddr, address, flow.l4 + 2, flow.dport, port)?;
    count(svc.rev_nat, new_flow, 1);
    Some(())
}

/// Backend → client, for a tracked flow: the VIP becomes the source again.
#[inline(always)]
fn egress(ctx: &TcContext) -> Option<()> {
    let flow = parse(ctx)?;
    let key = CtKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        dir: CT_DIR_REPLY,
        _pad: [0; 2],
    };
    // SAFETY: as in `ingress`.
    let ct = unsafe { CT.get(key) }?;
    let (vip, vip_port) = (ct.vip, ct.vip_port);
    rewrite(ctx, &flow, IP_SRC, flow.saddr, vip, flow.l4, flow.sport, vip_port)
}

// Both return TC_ACT_UNSPEC (tcx: "next"): the packet goes on to any other program and then
// the stack; these programs never drop anything.

#[classifier]
pub fn atoll_tc_in(ctx: TcContext) -> i32 {
    let _ = ingress(&ctx);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn atoll_tc_out(ctx: TcContext) -> i32 {
    let _ = egress(&ctx);
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The programs use no GPL-only helper; this matches the workspace's licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
