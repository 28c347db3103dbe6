//! Names from the DNS answers seen on this host: every A/AAAA answer maps its address to the
//! name the client asked for, as `name` records with source `dns`.
//!
//! ```text
//!  kernel: every packet of the host netns (all interfaces, arrivals only)
//!    └─ socket filter fg_dns_answers (bpf/dns.bpf.c): UDP from port 53? keep <= SNAPLEN bytes
//!        └─ AF_PACKET SOCK_DGRAM socket (IP header at offset 0)
//!  reader thread: IP/UDP (etherparse) ─► DNS message (hickory-proto) ─► answers
//!      (addr, question name, TTL) ─► NameCache (LRU addr -> name, expiry): new, changed or
//!      expired? ─► pending SeenName ─► DnsNames::drain, once per export period
//! ```
//!
//! The question name, not the answer record's owner: a client that asked for `api.example.com`
//! and got `api.example.com CNAME lb-7.cdn.net`, `lb-7.cdn.net A 192.0.2.7` connects to
//! 192.0.2.7 as `api.example.com`. Only records on the CNAME chain that starts at the question
//! count; the TTL is the smallest along that chain (how long the whole mapping holds).
//!
//! A name is not withdrawn when its TTL runs out: connections outlive TTLs (clients cache, and a
//! TCP connection keeps its peer), so the last name seen stays the address's name until another
//! answer names it differently. The TTL decides only when an unchanged mapping is worth
//! emitting again.

use aya::maps::{Array, MapData, MapError};
use aya::programs::{ProgramError, SocketFilter};
use aya::{Ebpf, EbpfError, EbpfLoader};
use etherparse::{SlicedPacket, TransportSlice};
use flowgraph_schema::{Name, NameSource, Record};
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{DNSClass, RData};
use lru::LruCache;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::Read;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The compiled socket filter.
static DNS_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dns.bpf.o"));

/// The socket filter program's name in the object.
pub const PROGRAM: &str = "fg_dns_answers";

/// Bytes of a datagram the filter passes (FG_DNS_SNAPLEN in bpf/dns.h).
pub const SNAPLEN: usize = 4096 + 60 + 8;

const C_PASSED: u32 = 0;
const C_TRUNCATED: u32 = 1;
const DNS_PORT: u16 = 53;
/// How often the reader looks at its stop flag when no packet comes.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// RFC 2181 §8: a TTL with the top bit set is to be taken as zero.
const MAX_TTL: u32 = i32::MAX as u32;

/// Options for [`DnsNames::start`].
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// Addresses remembered (address -> name, expiry); the least recently answered is evicted
    /// beyond this, and counted ([`DnsCounters::cache_evictions`]).
    pub cache_capacity: usize,
    /// Names held for the next [`DnsNames::drain`] at most; beyond this they are dropped and
    /// counted ([`DnsCounters::names_dropped`]).
    pub max_pending: usize,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions { cache_capacity: 65_536, max_pending: 65_536 }
    }
}

/// Why DNS names cannot be observed. Each message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The process may not open packet sockets or load socket filters.
    #[error(
        "not permitted to {what} ({source}): DNS names need CAP_NET_RAW for the packet socket \
         and CAP_BPF (or CAP_SYS_ADMIN) for its filter; run the agent as root or grant them \
         (e.g. `setcap cap_net_raw,cap_bpf,cap_perfmon=ep <binary>`)"
    )]
    Permission {
        /// What was refused.
        what: &'static str,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// The packet socket could not be opened or set up.
    #[error("cannot {what} the AF_PACKET socket for DNS answers: {source}")]
    Socket {
        /// The step that failed.
        what: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The BPF object could not be loaded.
    #[error("cannot load the DNS socket filter's BPF object: {0}")]
    Object(#[source] EbpfError),
    /// The object lacks what this code expects (a build mismatch).
    #[error("the DNS filter's BPF object has no {what} `{name}`: rebuild flowgraph-sources-ebpf")]
    Missing {
        /// "map" or "program".
        what: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// The verifier refused the filter, or attaching it failed.
    #[error("cannot {what} the DNS socket filter {PROGRAM}: {source}")]
    Program {
        /// "load" or "attach".
        what: &'static str,
        /// aya's error, with the verifier log when there is one.
        #[source]
        source: ProgramError,
    },
    /// Reading the filter's counters failed.
    #[error("BPF map fg_dns_counters: {0}")]
    Map(#[source] MapError),
    /// The reader thread could not be started.
    #[error("cannot start the DNS reader thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The DNS names' counters, cumulative since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Datagrams from UDP port 53 the kernel filter passed to the socket.
    pub kernel_passed: u64,
    /// Of those, longer than [`SNAPLEN`] and cut short (they fail to parse).
    pub truncated: u64,
    /// Datagrams the reader received (`kernel_passed - packets` is what the socket's receive
    /// queue dropped, plus what is still queued).
    pub packets: u64,
    /// Datagrams that were not a parsable IP/UDP/DNS message (fragments, truncated, garbage).
    pub parse_failures: u64,
    /// A/AAAA answers on the question's CNAME chain.
    pub answers: u64,
    /// Name records emitted (a mapping new, changed, or seen again after its TTL ran out).
    pub names: u64,
    /// Addresses evicted from the cache to make room (their next answer is emitted again).
    pub cache_evictions: u64,
    /// Names dropped because nobody drained them ([`DnsOptions::max_pending`]).
    pub names_dropped: u64,
    /// Errors reading the socket.
    pub read_errors: u64,
    /// 1 when DNS names were wanted but could not be observed (the agent goes on without).
    pub unavailable: u64,
}

impl DnsCounters {
    /// The counters of a DNS observer that could not start.
    pub fn unavailable() -> Self {
        DnsCounters { unavailable: 1, ..Default::default() }
    }

    /// Every counter with its name (`dns_` prefixed), as progress records and metrics carry them.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("dns_kernel_passed", self.kernel_passed),
            ("dns_truncated", self.truncated),
            ("dns_packets", self.packets),
            ("dns_parse_failures", self.parse_failures),
            ("dns_answers", self.answers),
            ("dns_names", self.names),
            ("dns_cache_evictions", self.cache_evictions),
            ("dns_names_dropped", self.names_dropped),
            ("dns_read_errors", self.read_errors),
            ("dns_unavailable", self.unavailable),
        ]
        .into_iter()
    }
}

/// One address answered for a queried name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The address (IPv4-mapped IPv6 shown as IPv4).
    pub addr: IpAddr,
    /// The question name: lower case, no trailing dot, IDNs in their ASCII (`xn--`) form.
    pub name: String,
    /// Seconds the mapping holds: the smallest TTL on the CNAME chain to the address.
    pub ttl: u32,
}

/// A name the observer saw and had not emitted yet (new, changed or expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenName {
    /// When the answer was read, wall-clock ns.
    pub time_ns: u64,
    /// The answer.
    pub answer: Answer,
}

impl SeenName {
    /// As a flowgraph record.
    pub fn to_record(&self) -> Record {
        Record::Name(Name {
            time_: self.time_ns,
            addr: self.answer.addr,
            name: self.answer.name.clone(),
            source: NameSource::Dns,
        })
    }
}

/// Why a datagram yielded nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a well-formed IP packet (or cut short).
    #[error("not a well-formed IP packet: {0}")]
    Ip(String),
    /// One fragment of a larger datagram: only the whole datagram can be parsed.
    #[error("an IP fragment")]
    Fragment,
    /// IP, but not UDP from port 53.
    #[error("not a UDP datagram from port 53")]
    NotDns,
    /// The payload is not a DNS message.
    #[error("not a DNS message: {0}")]
    Dns(String),
}

/// The UDP payload of an IP packet (network header at offset 0) sent from port 53.
pub fn udp_payload(packet: &[u8]) -> Result<&[u8], ParseError> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|e| ParseError::Ip(e.to_string()))?;
    match sliced.transport {
        Some(TransportSlice::Udp(udp)) if udp.source_port() == DNS_PORT => Ok(udp.payload()),
        Some(_) => Err(ParseError::NotDns),
        // etherparse leaves the transport unparsed when the payload is fragmented.
        None if sliced.net.as_ref().and_then(|n| n.ip_payload_ref()).is_some_and(|p| p.fragmented) => {
            Err(ParseError::Fragment)
        }
        None => Err(ParseError::NotDns),
    }
}

/// Appends the A/AAAA answers of a DNS response to `out`, each mapped to the question name.
/// Queries, and responses without a question or without addresses, append nothing.
pub fn parse_answers(payload: &[u8], out: &mut Vec<Answer>) -> Result<(), ParseError> {
    let message = Message::from_vec(payload).map_err(|e| ParseError::Dns(e.to_string()))?;
    if message.metadata.message_type != MessageType::Response {
        return Ok(());
    }
    let Some(question) = message.queries.first() else { return Ok(()) };
    if question.name.is_root() {
        return Ok(());
    }
    let ttl = |t: u32| if t > MAX_TTL { 0 } else { t };
    // The names on the CNAME chain from the question, each with the smallest TTL to reach it.
    // Servers list the chain in order, but nothing requires it: grow until nothing changes
    // (at most one pass per CNAME record, so bounded by the message's size).
    let mut chain = vec![(&question.name, u32::MAX)];
    loop {
        let mut grew = false;
        for record in &message.answers {
            let RData::CNAME(target) = &record.data else { continue };
            if record.dns_class != DNSClass::IN || chain.iter().any(|(n, _)| *n == &target.0) {
                continue;
            }
            if let Some(&(_, reach)) = chain.iter().find(|(n, _)| *n == &record.name) {
                chain.push((&target.0, reach.min(ttl(record.ttl))));
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut name = question.name.to_lowercase().to_ascii();
    if name.ends_with('.') {
        name.pop();
    }
    for record in &message.answers {
        let addr = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0).to_canonical(),
            _ => continue,
        };
        if record.dns_class != DNSClass::IN {
            continue;
        }
        if let Some(&(_, reach)) = chain.iter().find(|(n, _)| *n == &record.name) {
            out.push(Answer { addr, name: name.clone(), ttl: reach.min(ttl(record.ttl)) });
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Entry {
    name: String,
    expires: Instant,
}

/// The last name emitted for each address and until when it holds; bounded, least recently
/// answered evicted first.
#[derive(Debug)]
pub struct NameCache {
    entries: LruCache<IpAddr, Entry>,
    evictions: u64,
}

impl NameCache {
    /// A cache of at most `capacity` addresses (at least 1).
    pub fn new(capacity: usize) -> Self {
        NameCache { entries: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)), evictions: 0 }
    }

    /// Records `answer`, seen at `now`; true when it is worth a name record: the address is new,
    /// its name changed, or its last name's TTL ran out.
    pub fn observe(&mut self, answer: &Answer, now: Instant) -> bool {
        let expires = now.checked_add(Duration::from_secs(answer.ttl.into())).unwrap_or(now);
        if let Some(entry) = self.entries.get_mut(&answer.addr) {
            if entry.name == answer.name && now < entry.expires {
                // Still valid: a later answer may only extend it (a cache counts TTLs down).
                entry.expires = entry.expires.max(expires);
                return false;
            }
            entry.name.clone_from(&answer.name);
            entry.expires = expires;
            return true;
        }
        let entry = Entry { name: answer.name.clone(), expires };
        if let Some((evicted, _)) = self.entries.push(answer.addr, entry) {
            if evicted != answer.addr {
                self.evictions += 1;
            }
        }
        true
    }

    /// Forgets an address, so its next answer is emitted (used when a name was dropped).
    pub fn forget(&mut self, addr: &IpAddr) {
        self.entries.pop(addr);
    }

    /// Addresses evicted to make room, since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    pending: Mutex<Vec<SeenName>>,
    packets: AtomicU64,
    parse_failures: AtomicU64,
    answers: AtomicU64,
    names: AtomicU64,
    cache_evictions: AtomicU64,
    names_dropped: AtomicU64,
    read_errors: AtomicU64,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<SeenName>> {
        // A panic elsewhere while holding the lock leaves a Vec that is still valid.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Observes the DNS answers arriving on this host's network namespace (all its interfaces) and
/// turns them into names. Dropping it stops the reader thread and closes the socket.
pub struct DnsNames {
    shared: Arc<Shared>,
    counters: Array<MapData, u64>,
    reader: Option<JoinHandle<()>>,
    /// Keeps the program loaded (the socket holds its own reference once attached).
    _bpf: Ebpf,
}

impl std::fmt::Debug for DnsNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsNames").finish_non_exhaustive()
    }
}

fn is_eperm(e: &(dyn std::error::Error + 'static)) -> Option<std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code @ (libc::EPERM | libc::EACCES)) = io.raw_os_error() {
                return Some(std::io::Error::from_raw_os_error(code));
            }
        }
        cur = err.source();
    }
    None
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl DnsNames {
    /// Opens the packet socket, attaches the filter and starts the reader thread.
    pub fn start(options: &DnsOptions) -> Result<DnsNames, DnsError> {
        let mut bpf = EbpfLoader::new().load(DNS_OBJECT).map_err(|e| match is_eperm(&e) {
            Some(source) => DnsError::Permission { what: "load the DNS socket filter", source },
            None => DnsError::Object(e),
        })?;
        let program: &mut SocketFilter = bpf
            .program_mut(PROGRAM)
            .ok_or(DnsError::Missing { what: "program", name: PROGRAM })?
            .try_into()
            .map_err(|source| DnsError::Program { what: "load", source })?;
        program.load().map_err(|source| match is_eperm(&source) {
            Some(source) => DnsError::Permission { what: "load the DNS socket filter", source },
            None => DnsError::Program { what: "load", source },
        })?;

        // SOCK_DGRAM ("cooked"): the kernel strips the link-layer header, so the filter and the
        // parser see the IP header at offset 0 on every interface (Ethernet, loopback, veth,
        // tun and WireGuard alike); SOCK_RAW would need each interface's header length.
        // Protocol ETH_P_ALL (in network byte order): every packet, both IP versions.
        let all = Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
        let socket = Socket::new(Domain::PACKET, Type::DGRAM, Some(all)).map_err(|source| {
            if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                DnsError::Permission { what: "open an AF_PACKET socket", source }
            } else {
                DnsError::Socket { what: "open", source }
            }
        })?;
        program.attach(&socket).map_err(|source| DnsError::Program { what: "attach", source })?;
        // Packets queued between socket() and the attach passed no filter: drop them.
        let setup = |what, r: std::io::Result<()>| r.map_err(|source| DnsError::Socket { what, source });
        setup("set non-blocking", socket.set_nonblocking(true))?;
        let mut scratch = vec![0u8; 65_536];
        while (&socket).read(&mut scratch).is_ok() {}
        setup("set blocking", socket.set_nonblocking(false))?;
        setup("set a read timeout on", socket.set_read_timeout(Some(READ_TIMEOUT)))?;
        // Room for bursts; the kernel caps it at net.core.rmem_max, which is fine.
        let _ = socket.set_recv_buffer_size(4 << 20);

        let counters =
            bpf.take_map("fg_dns_counters").ok_or(DnsError::Missing { what: "map", name: "fg_dns_counters" })?;
        let counters = Array::try_from(counters).map_err(DnsError::Map)?;
        let shared = Arc::new(Shared::default());
        let reader = {
            let shared = Arc::clone(&shared);
            let options = options.clone();
            std::thread::Builder::new()
                .name("fg-dns-names".into())
                .spawn(move || read_loop(socket, &shared, &options, scratch))
                .map_err(DnsError::Thread)?
        };
        Ok(DnsNames { shared, counters, reader: Some(reader), _bpf: bpf })
    }

    /// Moves the names seen since the last drain to `out`, oldest first.
    pub fn drain(&self, out: &mut Vec<SeenName>) {
        out.append(&mut self.shared.pending());
    }

    /// Moves the names seen since the last drain to `out` as `name` records, oldest first.
    /// Each record's time is when its answer was read, so a caller that takes its watermark
    /// before draining never emits a name older than a watermark it already sent.
    pub fn drain_records(&self, out: &mut Vec<Record>) {
        out.extend(self.shared.pending().drain(..).map(|seen| seen.to_record()));
    }

    /// The counters, cumulative since start.
    pub fn counters(&self) -> Result<DnsCounters, DnsError> {
        let kernel = |index: u32| self.counters.get(&index, 0).map_err(DnsError::Map);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.shared;
        Ok(DnsCounters {
            kernel_passed: kernel(C_PASSED)?,
            truncated: kernel(C_TRUNCATED)?,
            packets: load(&s.packets),
            parse_failures: load(&s.parse_failures),
            answers: load(&s.answers),
            names: load(&s.names),
            cache_evictions: load(&s.cache_evictions),
            names_dropped: load(&s.names_dropped),
            read_errors: load(&s.read_errors),
            unavailable: 0,
        })
    }
}

impl Drop for DnsNames {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn read_loop(socket: Socket, shared: &Shared, options: &DnsOptions, mut buf: Vec<u8>) {
    let mut cache = NameCache::new(options.cache_capacity);
    let mut answers = Vec::new();
    let mut fresh = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let len = match (&socket).read(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // ENETDOWN and the like: count, say so, and do not spin.
                shared.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "reading the DNS answer socket failed");
                std::thread::sleep(READ_TIMEOUT);
                continue;
            }
        };
        shared.packets.fetch_add(1, Ordering::Relaxed);
        answers.clear();
        if let Err(e) = udp_payload(&buf[..len]).and_then(|payload| parse_answers(payload, &mut answers)) {
            shared.parse_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, bytes = len, "unparsable datagram from port 53");
            continue;
        }
        shared.answers.fetch_add(answers.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        fresh.clear();
        fresh.extend(answers.drain(..).filter(|answer| cache.observe(answer, now)));
        shared.cache_evictions.store(cache.evictions(), Ordering::Relaxed);
        if fresh.is_empty() {
            continue;
        }
        let mut pending = shared.pending();
        // Stamped under the lock that drain takes: a name is either in the batch drained at a
        // watermark or stamped after it.
        let time_ns = wall_ns();
        for answer in fresh.drain(..) {
            if pending.len() >= options.max_pending {
                shared.names_dropped.fetch_add(1, Ordering::Relaxed);
                cache.forget(&answer.addr);
                continue;
            }
            shared.names.fetch_add(1, Ordering::Relaxed);
            pending.push(SeenName { time_ns, answer });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name as DnsName, Record as DnsRecord, RecordType};

    fn name(s: &str) -> DnsName {
        DnsName::from_ascii(s).unwrap()
    }

    fn response(question: &str, answers: Vec<DnsRecord>) -> Vec<u8> {
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name(question), RecordType::A));
        m.add_answers(answers);
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_map_to_the_question_through_cnames_with_the_chain_ttl() {
        let wire = response(
            "WWW.Example.test.",
            vec![
                DnsRecord::from_rdata(name("www.example.test."), 60, RData::CNAME(CNAME(name("lb.cdn.test.")))),
                DnsRecord::from_rdata(name("lb.cdn.test."), 300, RData::A(A::new(192, 0, 2, 7))),
                DnsRecord::from_rdata(
                    name("lb.cdn.test."),
                    30,
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
                ),
                // Not on the chain: ignored.
                DnsRecord::from_rdata(name("other.test."), 300, RData::A(A::new(192, 0, 2, 99))),
            ],
        );
        let mut out = Vec::new();
        parse_answers(&wire, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Answer { addr: "192.0.2.7".parse().unwrap(), name: "www.example.test".into(), ttl: 60 },
                Answer { addr: "2001:db8::7".parse().unwrap(), name: "www.example.test".into(), ttl: 30 },
            ]
        );
    }

    #[test]
    fn queries_and_garbage() {
        let mut query = Message::query();
        query.add_query(Query::query(name("a.test."), RecordType::A));
        let mut out = Vec::new();
        parse_answers(&query.to_vec().unwrap(), &mut out).unwrap();
        assert!(out.is_empty());
        assert!(matches!(parse_answers(b"\x12\x34\x81\x80\x00\x01\x00\x01", &mut out), Err(ParseError::Dns(_))));
        assert!(matches!(udp_payload(b"garbage"), Err(ParseError::Ip(_))));
    }

    #[test]
    fn the_cache_emits_new_changed_and_expired_mappings_and_counts_evictions() {
        let mut cache = NameCache::new(2);
        let t0 = Instant::now();
        let a = |addr: &str, name: &str, ttl| Answer { addr: addr.parse().unwrap(), name: name.into(), ttl };
        assert!(cache.observe(&a("10.0.0.1", "x", 10), t0));
        assert!(!cache.observe(&a("10.0.0.1", "x", 10), t0 + Duration::from_secs(5)));
        assert!(cache.observe(&a("10.0.0.1", "y", 10), t0 + Duration::from_secs(6)));
        assert!(cache.observe(&a("10.0.0.1", "y", 10), t0 + Duration::from_secs(17)));
        assert!(cache.observe(&a("10.0.0.2", "z", 0), t0));
        assert!(cache.observe(&a("10.0.0.2", "z", 0), t0), "a TTL of 0 never holds");
        assert_eq!(cache.evictions(), 0);
        assert!(cache.observe(&a("10.0.0.3", "w", 10), t0));
        assert_eq!((cache.evictions(), cache.len()), (1, 2));
        assert!(cache.observe(&a("10.0.0.1", "y", u32::MAX), t0), "10.0.0.1 was least recently answered");
    }
}
