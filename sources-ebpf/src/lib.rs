//! flowgraph's eBPF agent, kernel side and its userspace reader.
//!
//! The kernel programs (`bpf/flowgraph.bpf.c`, compiled by `build.rs` with clang and embedded
//! here) keep one entry per TCP socket, keyed by the socket cookie, with the bytes the owning
//! process sent and received, its addresses, its role (client: connect; server: accept) and its
//! lifecycle. [`Agent::load`] loads and attaches them; [`Agent::collect`] reads every socket's
//! cumulative counters and drops the state of sockets the kernel has destroyed, once read.
//!
//! Tracepoints used (as BTF-enabled raw tracepoints, `tp_btf`): `sock:sock_send_length`,
//! `sock:sock_recv_length` (bytes, in process context: the current process is the owner),
//! `sock:inet_sock_set_state` (birth, role, addresses), `tcp:tcp_destroy_sock` (end of life).
//! tp_btf rather than classic tracepoints: the socket cookie needs a typed socket pointer.
//!
//! Turning samples into `conn_stats` / `process` records (upid, /proc metadata, export periods)
//! is the exporter's job ([`export`]), built on top of [`SocketSample`].
//!
//! Separately, [`dns`] names remote addresses by the DNS answers seen on the host (a socket
//! filter on an AF_PACKET socket, `bpf/dns.bpf.c`).

#![deny(missing_docs)]

pub mod dns;
pub mod export;

use aya::maps::{Array, HashMap, MapData, MapError};
use aya::programs::{BtfTracePoint, ProgramError};
use aya::{Btf, BtfError, Ebpf, EbpfError, EbpfLoader};
use flowgraph_schema::TraceRole;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The compiled kernel programs.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowgraph.bpf.o"));

/// Where the kernel exposes its BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// `/proc/PID/stat` start times are in USER_HZ ticks, 100 per second on every Linux ABI
/// flowgraph targets (x86-64, arm64).
pub const USER_HZ: u64 = 100;

/// The programs and the tracepoint each attaches to (`category:name`).
pub const TRACEPOINTS: [(&str, &str); 4] = [
    ("fg_sock_send_length", "sock:sock_send_length"),
    ("fg_sock_recv_length", "sock:sock_recv_length"),
    ("fg_inet_sock_set_state", "sock:inet_sock_set_state"),
    ("fg_tcp_destroy_sock", "tcp:tcp_destroy_sock"),
];

const ROLE_CLIENT: u8 = 1;
const ROLE_SERVER: u8 = 2;
const F_ESTABLISHED: u8 = 0x01;
const F_TCP_CLOSE: u8 = 0x02;
const F_DESTROYED: u8 = 0x04;
const F_ADOPTED: u8 = 0x08;
const F_FIN_READ: u8 = 0x10;
const AF_INET: u16 = 2;
/// Size of the fg_counters array (FG_C_NUM).
const COUNTERS: u32 = 16;
/// Indexes into fg_counters (FG_C_* in bpf/flowgraph.h).
const C_MAP_FULL: usize = 0;
const C_UPDATE_FAILED: usize = 1;
const C_MISSING_STATE: usize = 2;
const C_LOST_BYTES_EVENTS: usize = 3;
const C_FOREIGN_IO: usize = 4;
const C_DESTROY_UNTRACKED: usize = 5;
const C_CLOSED_UNOWNED: usize = 6;
const C_PROC_INSERTED: usize = 7;
const C_PROC_DELETED: usize = 8;
const C_PROC_INSERT_FAILED: usize = 9;
/// max_entries of fg_procs (bpf/flowgraph.bpf.c).
const MAX_PROCS: usize = 16_384;

/// Mirror of `struct fg_sock` in `bpf/flowgraph.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawSock {
    bytes_sent: u64,
    bytes_recv: u64,
    tcp_bytes_acked: u64,
    tcp_bytes_received: u64,
    tcp_bytes_read: u64,
    owner_start_ns: u64,
    open_ns: u64,
    close_ns: u64,
    _reserved: u64,
    tgid: u32,
    foreign_tgid: u32,
    laddr: [u8; 16],
    raddr: [u8; 16],
    family: u16,
    lport: u16,
    rport: u16,
    role: u8,
    flags: u8,
    state: u8,
    _pad: [u8; 7],
}
const _: () = assert!(std::mem::size_of::<RawSock>() == 128);

// SAFETY: RawSock is #[repr(C)], Copy, made of integers and byte arrays with no implicit
// padding (explicit `_pad`, size asserted above), so every bit pattern is a valid value.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawSock {}

/// Options for [`Agent::load_with`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Capacity of the socket state map (live sockets plus destroyed ones not yet collected).
    /// When full, new sockets are not tracked and [`LossCounters::map_full`] counts them.
    pub max_sockets: u32,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions { max_sockets: 65_536 }
    }
}

/// Why the agent could not start. Each message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The process lacks the privileges to load tracing programs.
    #[error(
        "not permitted to load eBPF tracing programs (missing {}): run the agent as root, or \
         grant it CAP_BPF and CAP_PERFMON (e.g. `setcap cap_bpf,cap_perfmon=ep <binary>`; \
         before Linux 5.8, CAP_SYS_ADMIN){}",
        missing.join(", "),
        detail.as_deref().map(|d| format!(" [{d}]")).unwrap_or_default()
    )]
    Permission {
        /// Capabilities found missing (may be empty when the kernel refused anyway).
        missing: Vec<&'static str>,
        /// The kernel's refusal, when it came from a syscall.
        detail: Option<String>,
    },
    /// The kernel exposes no BTF.
    #[error(
        "this kernel exposes no BTF ({path} is missing): the agent needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (the agent needs Linux 6.3 or newer; most distribution \
         kernels have BTF)"
    )]
    NoBtf {
        /// The path looked at.
        path: String,
    },
    /// The kernel's BTF could not be parsed.
    #[error("cannot read the kernel's BTF at {path}: {source}")]
    Btf {
        /// The path read.
        path: String,
        /// aya's error.
        #[source]
        source: BtfError,
    },
    /// A tracepoint the agent needs does not exist on this kernel.
    #[error(
        "this kernel has no tracepoint {tracepoint} (needed by {program}): the agent needs \
         Linux 6.3 or newer (sock:sock_send_length and sock:sock_recv_length arrived in 6.3); \
         upgrade the kernel"
    )]
    TracepointMissing {
        /// `category:name`.
        tracepoint: &'static str,
        /// The program that attaches to it.
        program: &'static str,
    },
    /// The BPF object could not be loaded (maps created, relocations applied).
    #[error("cannot load the agent's BPF object: {0}")]
    Object(#[source] EbpfError),
    /// The verifier or the kernel refused a program.
    #[error("the kernel refused program {program} (for {tracepoint}): {source}")]
    Load {
        /// The program.
        program: &'static str,
        /// Its tracepoint.
        tracepoint: &'static str,
        /// aya's error, with the verifier log when there is one.
        #[source]
        source: ProgramError,
    },
    /// A program loaded but could not be attached.
    #[error("cannot attach program {program} to {tracepoint}: {source}")]
    Attach {
        /// The program.
        program: &'static str,
        /// Its tracepoint.
        tracepoint: &'static str,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// The object lacks a map or program this code expects (a build mismatch).
    #[error("the agent's BPF object has no {what} `{name}`: rebuild flowgraph-sources-ebpf")]
    Missing {
        /// "map" or "program".
        what: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// Reading or updating a map failed.
    #[error("BPF map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// aya's error.
        #[source]
        source: MapError,
    },
}

/// One socket's cumulative state, as read by [`Agent::collect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSample {
    /// The socket cookie (unique for the kernel's lifetime).
    pub cookie: u64,
    /// Owning process (tgid): the process that connected, or the first one that moved bytes on
    /// it. 0 while a server-side socket has moved no bytes yet.
    pub pid: u32,
    /// The owner's start time in clock ticks since boot, as field 22 of `/proc/PID/stat`.
    pub start_time_ticks: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port; IPv4-mapped IPv6 addresses are shown as IPv4.
    pub remote: SocketAddr,
    /// Client (connect), server (accept), or unknown (socket adopted at its first I/O).
    pub role: TraceRole,
    /// Bytes the process sent on it (socket layer, every send path).
    pub bytes_sent: u64,
    /// Bytes the process received from it (socket layer, MSG_PEEK excluded).
    pub bytes_recv: u64,
    /// The kernel's `tcp_sock.bytes_acked` at the last state change or destroy: payload bytes the peer acknowledged.
    pub tcp_bytes_acked: u64,
    /// The kernel's `tcp_sock.bytes_received` at the last state change or destroy: payload bytes TCP received
    /// (read by the process or not).
    pub tcp_bytes_received: u64,
    /// Bytes the process consumed from the socket by any path, from the kernel's sequence
    /// numbers (`bytes_received - (rcv_nxt - copied_seq)`), plus 1 once it read the peer's FIN,
    /// read at the last state change or destroy. Unlike `bytes_recv` it sees splice(2) reads,
    /// but it is only exact once the socket is closed.
    pub tcp_bytes_read: u64,
    /// At close only (0 before, and for adopted sockets): payload bytes the process consumed
    /// that the recv tracepoint did not see (splice(2) from the socket, TCP zero-copy receive),
    /// `tcp_bytes_read` (less 1 for a FIN the process read) minus `bytes_recv`. The exporter
    /// adds it to the socket's final bytes received; [`LossCounters::recv_unseen_bytes`] sums it.
    pub recv_unseen: u64,
    /// Reached ESTABLISHED.
    pub established: bool,
    /// TCP state reached CLOSE (the process may still hold the socket).
    pub tcp_closed: bool,
    /// Destroyed by the kernel: these are its final counters; the agent has dropped its state.
    pub closed: bool,
    /// First seen at a send/recv rather than at its birth (alive before the agent attached, or
    /// its state was lost): role unknown, counters start late.
    pub adopted: bool,
    /// Last TCP state seen (1 ESTABLISHED ... 7 CLOSE, as in the kernel).
    pub tcp_state: u8,
    /// Another process that moved bytes on this socket (counted to the owner), 0 when none.
    pub foreign_pid: u32,
    /// When the agent first saw the socket, wall-clock ns.
    pub open_time_ns: u64,
    /// When the kernel destroyed it, wall-clock ns.
    pub close_time_ns: Option<u64>,
}

/// The kernel side's loss and diagnostic counters, cumulative since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossCounters {
    /// New sockets not tracked because the state map was full.
    pub map_full: u64,
    /// New sockets not tracked because the map update failed otherwise.
    pub update_failed: u64,
    /// Sockets first seen at a send/recv or mid-life (adopted; counts start late).
    pub missing_state: u64,
    /// Send/recv events whose bytes were dropped for lack of state.
    pub lost_byte_events: u64,
    /// Send/recv by a process other than the socket's owner (bytes counted to the owner).
    pub foreign_io: u64,
    /// Destroyed sockets the agent had no state for (listeners, never-connected sockets).
    pub destroy_untracked: u64,
    /// Destroyed sockets whose state [`Agent::collect`] failed to delete.
    pub delete_failed: u64,
    /// Sockets destroyed without an owner (a server socket closed before any send or
    /// receive, or an adopted one that moved no bytes): the exporter cannot attribute them
    /// to a process, so their conn_open/conn_close are not reported.
    pub closed_without_owner: u64,
    /// Process descriptions the kernel side lost: evicted from its LRU map (at least this
    /// many; exact when no process starts during the count) or refused by it. The exporter
    /// falls back to /proc for them, which fails for a process that has already exited.
    pub proc_evicted: u64,
    /// Bytes received that the recv tracepoint did not see, recovered at close from the
    /// kernel's sequence numbers and added to the final rows ([`SocketSample::recv_unseen`]).
    pub recv_unseen_bytes: u64,
    /// The DNS names' counters ([`dns::DnsNames::counters`]), when DNS names were wanted; the
    /// caller fills them ([`Agent::loss_counters`] leaves `None`).
    pub dns: Option<dns::DnsCounters>,
}

impl LossCounters {
    /// Every counter with its name, as progress records and metrics carry them.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("map_full", self.map_full),
            ("update_failed", self.update_failed),
            ("missing_state", self.missing_state),
            ("lost_byte_events", self.lost_byte_events),
            ("foreign_io", self.foreign_io),
            ("destroy_untracked", self.destroy_untracked),
            ("delete_failed", self.delete_failed),
            ("closed_without_owner", self.closed_without_owner),
            ("proc_evicted", self.proc_evicted),
            ("recv_unseen_bytes", self.recv_unseen_bytes),
        ]
        .into_iter()
        .chain(self.dns.into_iter().flat_map(|dns| dns.named()))
    }

    /// Events that lost data (bytes or whole sockets). Not included: sockets closed without an
    /// owner (no bytes seen on them), process descriptions evicted (/proc is the fallback), and
    /// unseen received bytes (recovered at close).
    pub fn lossy(&self) -> u64 {
        self.map_full + self.update_failed + self.lost_byte_events + self.delete_failed
    }
}

/// Mirror of `struct fg_proc` (bpf/flowgraph.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct RawProc {
    start_ns: u64,
    args_len: u32,
    _pad: u32,
    comm: [u8; 16],
    args: [u8; 256],
}
const _: () = assert!(std::mem::size_of::<RawProc>() == 288);

// SAFETY: RawProc is #[repr(C)], Copy, integers and byte arrays with no implicit padding (size
// asserted above), so every bit pattern is a valid value.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawProc {}

/// A process as the kernel saw it at its first socket event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelProcess {
    /// The task's comm.
    pub comm: String,
    /// Its arguments joined by spaces, truncated to 256 bytes.
    pub cmdline: String,
}

/// The loaded and attached kernel programs, and the maps they fill.
pub struct Agent {
    procs: HashMap<MapData, u32, RawProc>,
    socks: HashMap<MapData, u64, RawSock>,
    counters: Array<MapData, u64>,
    delete_failed: u64,
    recv_unseen_bytes: u64,
    /// (fg_procs inserts when last counted, evictions found then): see `proc_evictions`.
    proc_evictions: std::cell::Cell<(u64, u64)>,
    max_sockets: u32,
    /// Keeps the programs loaded and their links attached; dropping it detaches.
    _bpf: Ebpf,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("max_sockets", &self.max_sockets).finish_non_exhaustive()
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

fn missing_caps() -> Vec<&'static str> {
    let Some(caps) = effective_caps() else {
        return Vec::new(); // cannot tell: let the kernel decide
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

fn permission(e: &(dyn std::error::Error + 'static)) -> AgentError {
    AgentError::Permission { missing: missing_caps(), detail: Some(e.to_string()) }
}

/// CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads) to wall clock: REALTIME - MONOTONIC now.
fn monotonic_to_wall_offset() -> i128 {
    fn now(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        if rc != 0 {
            return 0;
        }
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    }
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

fn addr(family: u16, raw: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw)).to_canonical()
    };
    SocketAddr::new(ip, port)
}

impl Agent {
    /// Loads and attaches the kernel programs with default options.
    pub fn load() -> Result<Agent, AgentError> {
        Agent::load_with(&AgentOptions::default())
    }

    /// Loads and attaches the kernel programs.
    pub fn load_with(options: &AgentOptions) -> Result<Agent, AgentError> {
        let missing = missing_caps();
        if !missing.is_empty() {
            return Err(AgentError::Permission { missing, detail: None });
        }
        if !Path::new(KERNEL_BTF).exists() {
            return Err(AgentError::NoBtf { path: KERNEL_BTF.into() });
        }
        let btf = Btf::from_sys_fs().map_err(|source| AgentError::Btf { path: KERNEL_BTF.into(), source })?;
        let mut bpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries("fg_socks", options.max_sockets.max(1))
            .load(BPF_OBJECT)
            .map_err(|e| if is_eperm(&e) { permission(&e) } else { AgentError::Object(e) })?;

        for (program, tracepoint) in TRACEPOINTS {
            let name = tracepoint.split_once(':').map(|(_, n)| n).unwrap_or(tracepoint);
            let prog: &mut BtfTracePoint = bpf
                .program_mut(program)
                .ok_or(AgentError::Missing { what: "program", name: program })?
                .try_into()
                .map_err(|source| AgentError::Load { program, tracepoint, source })?;
            prog.load(name, &btf).map_err(|source| match source {
                ProgramError::Btf(BtfError::UnknownBtfTypeName { .. }) => {
                    AgentError::TracepointMissing { tracepoint, program }
                }
                e if is_eperm(&e) => permission(&e),
                source => AgentError::Load { program, tracepoint, source },
            })?;
            prog.attach().map_err(|source| {
                if is_eperm(&source) {
                    permission(&source)
                } else {
                    AgentError::Attach { program, tracepoint, source }
                }
            })?;
        }

        let socks = bpf.take_map("fg_socks").ok_or(AgentError::Missing { what: "map", name: "fg_socks" })?;
        let socks = HashMap::try_from(socks).map_err(|source| AgentError::Map { map: "fg_socks", source })?;
        let counters = bpf.take_map("fg_counters").ok_or(AgentError::Missing { what: "map", name: "fg_counters" })?;
        let counters = Array::try_from(counters).map_err(|source| AgentError::Map { map: "fg_counters", source })?;
        let procs = bpf.take_map("fg_procs").ok_or(AgentError::Missing { what: "map", name: "fg_procs" })?;
        let procs = HashMap::try_from(procs).map_err(|source| AgentError::Map { map: "fg_procs", source })?;
        Ok(Agent {
            procs,
            socks,
            counters,
            delete_failed: 0,
            recv_unseen_bytes: 0,
            proc_evictions: std::cell::Cell::new((0, 0)),
            max_sockets: options.max_sockets,
            _bpf: bpf,
        })
    }

    /// Capacity of the socket state map.
    pub fn max_sockets(&self) -> u32 {
        self.max_sockets
    }

    /// Appends every tracked socket's cumulative counters to `out`, then drops the state of the
    /// sockets the kernel has destroyed (their final counters are in `out`, with `closed`).
    /// Returns how many samples were appended.
    pub fn collect(&mut self, out: &mut Vec<SocketSample>) -> Result<usize, AgentError> {
        let offset = monotonic_to_wall_offset();
        let wall = |mono: u64| (mono as i128 + offset).max(0) as u64;
        let mut destroyed = Vec::new();
        let before = out.len();
        for item in self.socks.iter() {
            let (cookie, raw) = match item {
                Ok(kv) => kv,
                // The entry vanished between listing its key and reading it: skip it.
                Err(MapError::KeyNotFound) => continue,
                Err(source) => return Err(AgentError::Map { map: "fg_socks", source }),
            };
            let closed = raw.flags & F_DESTROYED != 0;
            let adopted = raw.flags & F_ADOPTED != 0;
            // At close, what the process consumed by any path (the kernel's sequence numbers,
            // less the FIN it read) against what the recv tracepoint saw. Not for adopted
            // sockets: the kernel's count starts at the connection's birth, theirs later; nor
            // for sockets without an owner, which the exporter cannot report (they are counted
            // in closed_without_owner).
            let recv_unseen = if closed && !adopted && raw.tgid != 0 {
                let payload_read = raw.tcp_bytes_read.saturating_sub(u64::from(raw.flags & F_FIN_READ != 0));
                payload_read.saturating_sub(raw.bytes_recv)
            } else {
                0
            };
            if closed {
                destroyed.push((cookie, recv_unseen));
            }
            out.push(SocketSample {
                cookie,
                pid: raw.tgid,
                start_time_ticks: raw.owner_start_ns / (1_000_000_000 / USER_HZ),
                local: addr(raw.family, &raw.laddr, raw.lport),
                remote: addr(raw.family, &raw.raddr, raw.rport),
                role: match raw.role {
                    ROLE_CLIENT => TraceRole::Client,
                    ROLE_SERVER => TraceRole::Server,
                    _ => TraceRole::Unknown,
                },
                bytes_sent: raw.bytes_sent,
                bytes_recv: raw.bytes_recv,
                tcp_bytes_acked: raw.tcp_bytes_acked,
                tcp_bytes_received: raw.tcp_bytes_received,
                tcp_bytes_read: raw.tcp_bytes_read,
                recv_unseen,
                established: raw.flags & F_ESTABLISHED != 0,
                tcp_closed: raw.flags & F_TCP_CLOSE != 0,
                closed,
                adopted,
                tcp_state: raw.state,
                foreign_pid: raw.foreign_tgid,
                open_time_ns: wall(raw.open_ns),
                close_time_ns: (raw.close_ns != 0).then(|| wall(raw.close_ns)),
            });
        }
        // Deleting while iterating would restart the kernel's key walk: delete afterwards.
        // A destroyed socket gets no more events, so nothing is lost between read and delete.
        // The unseen bytes are summed once per socket: when its state is deleted.
        for (cookie, recv_unseen) in destroyed {
            match self.socks.remove(&cookie) {
                Ok(()) => self.recv_unseen_bytes += recv_unseen,
                Err(MapError::KeyNotFound) => {}
                Err(_) => self.delete_failed += 1,
            }
        }
        Ok(out.len() - before)
    }

    /// What the kernel recorded about process `pid` started at `start_time_ticks`, if it did.
    pub fn process(&self, pid: u32, start_time_ticks: u64) -> Option<KernelProcess> {
        let raw = self.procs.get(&pid, 0).ok()?;
        if raw.start_ns / (1_000_000_000 / USER_HZ) != start_time_ticks {
            return None; // the pid now belongs to another process
        }
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let comm_len = raw.comm.iter().position(|b| *b == 0).unwrap_or(raw.comm.len());
        let args = &raw.args[..(raw.args_len as usize).min(raw.args.len())];
        let cmdline = args.split(|b| *b == 0).filter(|a| !a.is_empty()).map(text).collect::<Vec<_>>().join(" ");
        Some(KernelProcess { comm: text(&raw.comm[..comm_len]), cmdline })
    }

    /// The kernel side's loss and diagnostic counters.
    pub fn loss_counters(&self) -> Result<LossCounters, AgentError> {
        let mut v = [0u64; COUNTERS as usize];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot =
                self.counters.get(&(i as u32), 0).map_err(|source| AgentError::Map { map: "fg_counters", source })?;
        }
        Ok(LossCounters {
            map_full: v[C_MAP_FULL],
            update_failed: v[C_UPDATE_FAILED],
            missing_state: v[C_MISSING_STATE],
            lost_byte_events: v[C_LOST_BYTES_EVENTS],
            foreign_io: v[C_FOREIGN_IO],
            destroy_untracked: v[C_DESTROY_UNTRACKED],
            delete_failed: self.delete_failed,
            closed_without_owner: v[C_CLOSED_UNOWNED],
            proc_evicted: self.proc_evictions(v[C_PROC_INSERTED]) + v[C_PROC_INSERT_FAILED],
            recv_unseen_bytes: self.recv_unseen_bytes,
            dns: None,
        })
    }

    /// Entries evicted from the fg_procs LRU map, which evicts silently: every entry the
    /// programs add or delete is counted, so evicted = inserted - deleted - live. Counting the
    /// live entries walks the map's keys (a syscall each, up to 16,384), so it is done only
    /// when processes were added since the last count. `inserted` is read before the walk and
    /// `deleted` after it: entries added during the walk can only lower the figure, so it is
    /// a lower bound, exact when no process starts during the count, and kept monotonic.
    fn proc_evictions(&self, inserted: u64) -> u64 {
        let (counted_at, evicted) = self.proc_evictions.get();
        if inserted == counted_at {
            return evicted;
        }
        // A key deleted under the walk restarts it from the first bucket: dedupe, and bound it
        // (a walk cut short would undercount the live entries, so it is not used).
        let mut live = std::collections::HashSet::new();
        let mut steps = 0;
        for key in self.procs.keys() {
            steps += 1;
            match key {
                Ok(pid) if steps <= 4 * MAX_PROCS => {
                    live.insert(pid);
                }
                _ => return evicted, // try again at the next count
            }
        }
        let Ok(deleted) = self.counters.get(&(C_PROC_DELETED as u32), 0) else {
            return evicted;
        };
        let evicted = evicted.max(inserted.saturating_sub(deleted + live.len() as u64));
        self.proc_evictions.set((inserted, evicted));
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_shows_as_v4() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(addr(10, &raw, 80), "10.0.0.7:80".parse().unwrap());
        assert_eq!(
            addr(AF_INET, &[127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1),
            "127.0.0.1:1".parse().unwrap()
        );
    }
}
