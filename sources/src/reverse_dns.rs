//! Reverse DNS for remote addresses, off the dataflow's thread.
//!
//! ```text
//!  dataflow thread                         "reverse-dns" thread (tokio, current-thread)
//!  want(addr) ─ fresh in cache? ─► hit, done
//!       │ pending already? ─► done
//!       └─ try_send ─► bounded queue ─► dispatcher ─ semaphore (max_in_flight) ─► lookup task
//!            └ full: counted drop,                              PTR query, timeout ─┘
//!              asked again next want                                              │
//!  drain(out) ◄─ name records (only when the name is new or changed) ◄─ cache (moka, TTLs)
//! ```
//!
//! The caller never waits on the network: [`ReverseDns::want`] is a cache look-up, a short lock
//! and a non-blocking send, and answers arrive later through [`ReverseDns::drain`] as
//! [`Resolved`] records the dataflow applies as name updates.
//!
//! Caching is ours, not hickory's (its cache is turned off): `want` has to know synchronously
//! whether an address is fresh, and only the caller's side of the cache can tell a renewed
//! answer from a changed one. Entries hold the name (or its absence) until `fresh_until`; after
//! that the next `want` asks again, while the stale copy stays for one more TTL so an unchanged
//! answer is not reported twice and a failed renewal keeps the last name known until the stale
//! copy ends (serve-stale, RFC 8767 in spirit) instead of erasing it from the graph at the
//! first lost packet.
//!
//! Loopback addresses (127.0.0.0/8, ::1) are named `localhost` by hickory without a query
//! (RFC 6761), so test and load runs use documentation and benchmarking ranges instead.

use crossbeam_channel::{Receiver, Sender};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use moka::sync::Cache;
use rustc_hash::FxHashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How the resolver behaves. [`Default`] suits a fleet's graph against a local caching
/// resolver; every field says why its default is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseDnsConfig {
    /// Servers to ask (address and port, over UDP with TCP for truncated answers). `None` reads
    /// `/etc/resolv.conf`, as every other program on the host does; default `None`.
    pub servers: Option<Vec<SocketAddr>>,
    /// Bound on one lookup, retries included: past it the address is settled as
    /// [`Outcome::Failed`]. Default 2 s: a resolver on the host or the LAN answers in
    /// milliseconds, and a slot held longer only slows the other addresses down.
    pub timeout: Duration,
    /// Tries within `timeout` (each gets `timeout / attempts`). Default 2: one lost UDP packet
    /// does not fail a lookup.
    pub attempts: usize,
    /// Lookups on the wire at once. Default 100: under dnsmasq's default limit of 150 forwarded
    /// queries (the usual local cache), and at 2 s a slot still settles 50 addresses a second
    /// when the server is dead.
    pub max_in_flight: usize,
    /// Addresses waiting for a slot. Past it `want` drops the address (counted) and asks again
    /// the next time the address is wanted. Default 16,384: a fleet's burst of new peers at
    /// start-up fits, and the queue stays under a megabyte.
    pub max_queue: usize,
    /// Floor of a name's TTL. Default 60 s: hosts-file answers (dnsmasq, /etc/hosts) come with
    /// TTL 0, which would otherwise send a query on every `want`.
    pub positive_min_ttl: Duration,
    /// Ceiling of a name's TTL. Default 1 h: a renamed peer shows its new name within the hour
    /// even when its zone says a day.
    pub positive_max_ttl: Duration,
    /// How long "no name" (NXDOMAIN, or no PTR record) is kept. Fixed rather than the server's
    /// SOA minimum, which forwarders often leave out and reverse zones often set to hours.
    /// Default 5 min: an address that gets a name shows it within minutes, and an unnamed one
    /// costs one query per five minutes.
    pub negative_ttl: Duration,
    /// How long a failure (timeout, SERVFAIL, REFUSED) is kept before asking again. Default 30 s:
    /// a dead server is not asked about every address on every record, and a recovered one is
    /// used within half a minute.
    pub failed_ttl: Duration,
    /// Addresses the cache holds, stale copies included; the least useful go first (moka's
    /// TinyLFU). Default 65,536: a large fleet's peers, a few MiB.
    pub cache_capacity: u64,
}

impl Default for ReverseDnsConfig {
    fn default() -> Self {
        Self {
            servers: None,
            timeout: Duration::from_secs(2),
            attempts: 2,
            max_in_flight: 100,
            max_queue: 16_384,
            positive_min_ttl: Duration::from_secs(60),
            positive_max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            failed_ttl: Duration::from_secs(30),
            cache_capacity: 65_536,
        }
    }
}

impl ReverseDnsConfig {
    /// Checks the settings before anything starts; the error names the field.
    pub fn validate(&self) -> Result<(), ReverseDnsError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(ReverseDnsError::InvalidConfig { field, reason: reason.to_string() })
        };
        if let Some(servers) = &self.servers {
            if servers.is_empty() {
                return invalid("servers", "empty: give at least one server, or None for /etc/resolv.conf");
            }
        }
        if self.timeout.is_zero() {
            return invalid("timeout", "must be more than zero");
        }
        if self.attempts == 0 {
            return invalid("attempts", "must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS {
            return invalid("max_in_flight", "must be at least 1 (and below tokio's semaphore limit)");
        }
        if self.max_queue == 0 {
            return invalid("max_queue", "must be at least 1");
        }
        if self.cache_capacity == 0 {
            return invalid("cache_capacity", "must be at least 1");
        }
        if self.positive_min_ttl > self.positive_max_ttl {
            return invalid("positive_min_ttl", "must not exceed positive_max_ttl");
        }
        Ok(())
    }
}

/// Why the resolver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReverseDnsError {
    /// A setting is out of range.
    #[error("reverse DNS: `{field}` {reason}")]
    InvalidConfig {
        /// The field of [`ReverseDnsConfig`].
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `/etc/resolv.conf` could not be read or parsed.
    #[error("reverse DNS: cannot read the system resolver configuration (/etc/resolv.conf)")]
    SystemConfig(#[source] NetError),
    /// The resolver could not be built from the configuration.
    #[error("reverse DNS: cannot build the resolver")]
    Build(#[source] NetError),
    /// The runtime or its thread could not be started.
    #[error("reverse DNS: cannot start the resolver thread")]
    Thread(#[source] std::io::Error),
}

/// How a lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server gave a PTR name.
    Answered,
    /// The address has no name: NXDOMAIN, or no PTR record.
    NoName,
    /// No answer that says either (kept for `failed_ttl`, then asked again).
    Failed(Failure),
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the timeout.
    Timeout,
    /// The server answered with an error code (SERVFAIL, REFUSED, ...), named here.
    Server(String),
    /// Anything else (network, malformed answer), as the resolver described it.
    Other(String),
}

/// A finished lookup whose name is new or changed: the dataflow's name record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The address looked up.
    pub addr: IpAddr,
    /// The PTR name without its trailing dot; `None` when there is none or the lookup failed.
    pub name: Option<String>,
    /// How long this answer stands before the address is asked about again.
    pub ttl: Duration,
    /// How the lookup ended.
    pub outcome: Outcome,
}

/// Counters since start, and the state now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReverseDnsStats {
    /// Lookups sent to the servers (one per address asked about; hickory's retries within a
    /// lookup are not counted again).
    pub queries_sent: u64,
    /// Lookups that gave a name.
    pub answered: u64,
    /// Lookups that found no name.
    pub no_name: u64,
    /// Lookups that failed, timeouts included.
    pub failed: u64,
    /// Of `failed`, those that timed out.
    pub timeouts: u64,
    /// `want` calls answered by a fresh cache entry.
    pub cache_hits: u64,
    /// `want` calls dropped because the queue was full.
    pub queue_drops: u64,
    /// Records handed out by `drain` (lookups whose name was new or changed).
    pub reported: u64,
    /// Addresses waiting for a slot now.
    pub queued: usize,
    /// Lookups on the wire now.
    pub in_flight: usize,
    /// Most lookups on the wire at once since start.
    pub peak_in_flight: usize,
    /// Addresses in the cache now, stale copies included.
    pub cache_entries: u64,
}

/// The asynchronous reverse-DNS resolver. Its methods never block on the network.
pub struct ReverseDns {
    shared: Arc<Shared>,
    queue: mpsc::Sender<IpAddr>,
    results: Receiver<Resolved>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ReverseDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReverseDns").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// A cached answer. `fresh_until` ends its use; `keep_until` ends the stale copy.
#[derive(Debug, Clone)]
struct Entry {
    name: Option<Arc<str>>,
    fresh_until: Instant,
    keep_until: Instant,
}

/// Each entry lives until its own `keep_until` (moka's per-entry expiry).
struct KeepUntil;

impl moka::Expiry<IpAddr, Entry> for KeepUntil {
    fn expire_after_create(&self, _: &IpAddr, entry: &Entry, now: Instant) -> Option<Duration> {
        Some(entry.keep_until.saturating_duration_since(now))
    }

    fn expire_after_update(&self, _: &IpAddr, entry: &Entry, now: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(entry.keep_until.saturating_duration_since(now))
    }
}

/// What the caller's thread and the lookup tasks share.
struct Shared {
    config: ReverseDnsConfig,
    cache: Cache<IpAddr, Entry>,
    /// Addresses queued or on the wire: a second `want` for them is a no-op.
    pending: Mutex<FxHashSet<IpAddr>>,
    results: Sender<Resolved>,
    queries_sent: AtomicU64,
    answered: AtomicU64,
    no_name: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
    cache_hits: AtomicU64,
    queue_drops: AtomicU64,
    reported: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

impl ReverseDns {
    /// Checks the configuration, builds the resolver and starts its thread.
    pub fn start(config: ReverseDnsConfig) -> Result<Self, ReverseDnsError> {
        config.validate()?;
        describe_metrics();
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ReverseDnsError::Thread)?;
        let resolver = {
            // hickory's provider spawns its I/O on the runtime it finds in the context.
            let _context = runtime.enter();
            build_resolver(&config)?
        };
        let (queue_tx, queue_rx) = mpsc::channel(config.max_queue);
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            cache: Cache::builder().max_capacity(config.cache_capacity).expire_after(KeepUntil).build(),
            config,
            pending: Mutex::new(FxHashSet::default()),
            results: results_tx,
            queries_sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            no_name: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            queue_drops: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("reverse-dns".into())
                .spawn(move || {
                    runtime.block_on(dispatch(shared, resolver, queue_rx, shutdown_rx));
                    // Dropping the runtime here cancels lookups still on the wire.
                })
                .map_err(ReverseDnsError::Thread)?
        };
        Ok(Self { shared, queue: queue_tx, results: results_rx, shutdown: Some(shutdown_tx), thread: Some(thread) })
    }

    /// Asks for `addr`'s name unless it is cached fresh or already asked for. Never blocks: the
    /// answer comes later through [`drain`](Self::drain). When the queue is full the address is
    /// dropped (counted) and asked for again the next time it is wanted.
    pub fn want(&self, addr: IpAddr) {
        let shared = &*self.shared;
        let now = Instant::now();
        if shared.fresh(addr, now) {
            shared.hit();
            return;
        }
        {
            let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.contains(&addr) {
                return;
            }
            // Checked again under the lock: a lookup that just finished cached its answer
            // before leaving `pending`.
            if shared.fresh(addr, now) {
                drop(pending);
                shared.hit();
                return;
            }
            pending.insert(addr);
        }
        if self.queue.try_send(addr).is_err() {
            // Full (or the thread is gone): forget it, so the next `want` tries again.
            shared.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&addr);
            shared.queue_drops.fetch_add(1, Relaxed);
            metrics::counter!("flowgraph_reverse_dns_queue_drops_total").increment(1);
        }
    }

    /// Moves the finished lookups whose name is new or changed into `out`; never blocks.
    pub fn drain(&self, out: &mut Vec<Resolved>) {
        let before = out.len();
        out.extend(self.results.try_iter());
        self.shared.reported.fetch_add((out.len() - before) as u64, Relaxed);
    }

    /// The counters since start and the state now.
    pub fn stats(&self) -> ReverseDnsStats {
        let shared = &*self.shared;
        // moka counts lazily; settle its bookkeeping so the entry count is exact.
        shared.cache.run_pending_tasks();
        let pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner).len();
        let in_flight = shared.in_flight.load(Relaxed);
        let cache_entries = shared.cache.entry_count();
        metrics::gauge!("flowgraph_reverse_dns_cache_entries").set(cache_entries as f64);
        ReverseDnsStats {
            queries_sent: shared.queries_sent.load(Relaxed),
            answered: shared.answered.load(Relaxed),
            no_name: shared.no_name.load(Relaxed),
            failed: shared.failed.load(Relaxed),
            timeouts: shared.timeouts.load(Relaxed),
            cache_hits: shared.cache_hits.load(Relaxed),
            queue_drops: shared.queue_drops.load(Relaxed),
            reported: shared.reported.load(Relaxed),
            queued: pending.saturating_sub(in_flight),
            in_flight,
            peak_in_flight: shared.peak_in_flight.load(Relaxed),
            cache_entries,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ReverseDnsConfig {
        &self.shared.config
    }
}

impl Drop for ReverseDns {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // An error means the thread already ended; nothing to stop.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the reverse-dns thread panicked");
            }
        }
    }
}

/// Describes the `flowgraph_reverse_dns_*` metrics to the installed recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("flowgraph_reverse_dns_queries_total", "Reverse DNS lookups sent");
    describe_counter!(
        "flowgraph_reverse_dns_lookups_total",
        "Reverse DNS lookups finished, by outcome (answered, no_name, timeout, failed)"
    );
    describe_counter!("flowgraph_reverse_dns_cache_hits_total", "Addresses wanted and cached fresh");
    describe_counter!("flowgraph_reverse_dns_queue_drops_total", "Addresses dropped on a full queue");
    describe_gauge!("flowgraph_reverse_dns_in_flight", "Reverse DNS lookups on the wire");
    describe_gauge!("flowgraph_reverse_dns_cache_entries", "Addresses in the reverse DNS cache");
    describe_histogram!(
        "flowgraph_reverse_dns_lookup_seconds",
        Unit::Seconds,
        "Time from a lookup's start to its outcome"
    );
}

impl Shared {
    fn fresh(&self, addr: IpAddr, now: Instant) -> bool {
        self.cache.get(&addr).is_some_and(|entry| entry.fresh_until > now)
    }

    fn hit(&self) {
        self.cache_hits.fetch_add(1, Relaxed);
        metrics::counter!("flowgraph_reverse_dns_cache_hits_total").increment(1);
    }

    /// Caches a finished lookup and reports it when the name is new or changed.
    fn settle(&self, addr: IpAddr, answer: Answer, started: Instant) {
        let Answer { name, ttl, outcome } = answer;
        let label = match &outcome {
            Outcome::Answered => {
                self.answered.fetch_add(1, Relaxed);
                "answered"
            }
            Outcome::NoName => {
                self.no_name.fetch_add(1, Relaxed);
                "no_name"
            }
            Outcome::Failed(Failure::Timeout) => {
                self.failed.fetch_add(1, Relaxed);
                self.timeouts.fetch_add(1, Relaxed);
                "timeout"
            }
            Outcome::Failed(_) => {
                self.failed.fetch_add(1, Relaxed);
                "failed"
            }
        };
        metrics::counter!("flowgraph_reverse_dns_lookups_total", "outcome" => label).increment(1);
        metrics::histogram!("flowgraph_reverse_dns_lookup_seconds").record(started.elapsed().as_secs_f64());

        let now = Instant::now();
        let fresh_until = now + ttl;
        let previous = self.cache.get(&addr);
        let previous_name = previous.as_ref().map(|entry| entry.name.clone());
        let entry = match (&outcome, previous) {
            // A failure keeps the last name known until that name's stale copy ends, never
            // later: a long outage does lose the name, once.
            (Outcome::Failed(_), Some(previous)) if previous.name.is_some() => Entry {
                name: previous.name,
                fresh_until: fresh_until.min(previous.keep_until),
                keep_until: previous.keep_until,
            },
            (Outcome::Failed(_), _) => Entry { name: None, fresh_until, keep_until: fresh_until },
            // The stale copy outlives the answer by one TTL and one lookup, so that a renewal
            // asked for as the answer expires can tell a renewed name from a changed one.
            _ => Entry { name, fresh_until, keep_until: fresh_until + ttl + self.config.timeout },
        };
        let report = match &previous_name {
            None => true,
            Some(previous) => *previous != entry.name,
        };
        let reported_name = entry.name.clone();
        // Cached before it leaves `pending`, so a `want` in between sees one or the other.
        self.cache.insert(addr, entry);
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&addr);
        if report {
            let resolved = Resolved { addr, name: reported_name.map(|name| name.to_string()), ttl, outcome };
            // An error means the ReverseDns is gone and nobody drains any more.
            let _ = self.results.send(resolved);
        }
    }
}

/// A lookup's result before it is cached: the TTL is already clamped by the configuration.
struct Answer {
    name: Option<Arc<str>>,
    ttl: Duration,
    outcome: Outcome,
}

/// Takes queued addresses and starts a lookup for each as a slot frees, until shutdown.
async fn dispatch(
    shared: Arc<Shared>,
    resolver: TokioResolver,
    mut queue: mpsc::Receiver<IpAddr>,
    shutdown: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_in_flight));
    let work = async {
        while let Some(addr) = queue.recv().await {
            // The semaphore is never closed, so this only waits for a free slot.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let shared = shared.clone();
            let resolver = resolver.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let now_in_flight = shared.in_flight.fetch_add(1, Relaxed) + 1;
                shared.peak_in_flight.fetch_max(now_in_flight, Relaxed);
                shared.queries_sent.fetch_add(1, Relaxed);
                metrics::counter!("flowgraph_reverse_dns_queries_total").increment(1);
                metrics::gauge!("flowgraph_reverse_dns_in_flight").set(now_in_flight as f64);
                let started = Instant::now();
                let answer = lookup(&resolver, addr, &shared.config).await;
                shared.settle(addr, answer, started);
                let now_in_flight = shared.in_flight.fetch_sub(1, Relaxed) - 1;
                metrics::gauge!("flowgraph_reverse_dns_in_flight").set(now_in_flight as f64);
            });
        }
    };
    tokio::select! {
        () = work => {}
        _ = shutdown => {}
    }
}

/// One PTR lookup, bounded by the configured timeout as a whole.
async fn lookup(resolver: &TokioResolver, addr: IpAddr, config: &ReverseDnsConfig) -> Answer {
    let query = resolver.lookup(Name::from(addr), RecordType::PTR);
    let failed = |failure| Answer { name: None, ttl: config.failed_ttl, outcome: Outcome::Failed(failure) };
    let no_name = Answer { name: None, ttl: config.negative_ttl, outcome: Outcome::NoName };
    match tokio::time::timeout(config.timeout, query).await {
        Err(_elapsed) => failed(Failure::Timeout),
        Ok(Ok(lookup)) => {
            // Several PTR records: the least name, so a server that rotates them does not make
            // the name flap between renewals.
            let best = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::PTR(ptr) => Some((ptr_name(&ptr.0), record.ttl)),
                    _ => None,
                })
                .filter(|(name, _)| !name.is_empty())
                .min();
            match best {
                Some((name, ttl)) => Answer {
                    name: Some(name.into()),
                    ttl: Duration::from_secs(u64::from(ttl)).clamp(config.positive_min_ttl, config.positive_max_ttl),
                    outcome: Outcome::Answered,
                },
                None => no_name,
            }
        }
        Ok(Err(NetError::Dns(DnsError::NoRecordsFound(_)))) => no_name,
        Ok(Err(NetError::Dns(DnsError::ResponseCode(code)))) => failed(Failure::Server(code.to_string())),
        Ok(Err(NetError::Timeout)) => failed(Failure::Timeout),
        Ok(Err(error)) => {
            tracing::debug!(%addr, %error, "reverse DNS lookup failed");
            failed(Failure::Other(error.to_string()))
        }
    }
}

/// A PTR target as the graph shows it: UTF-8 (IDNA decoded), without the root's trailing dot.
fn ptr_name(name: &Name) -> String {
    let mut text = name.to_utf8();
    if text.ends_with('.') {
        text.pop();
    }
    text
}

fn build_resolver(config: &ReverseDnsConfig) -> Result<TokioResolver, ReverseDnsError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match &config.servers {
        None => TokioResolver::builder(provider).map_err(ReverseDnsError::SystemConfig)?,
        Some(servers) => {
            let servers = servers
                .iter()
                .map(|server| {
                    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                    for connection in &mut ns.connections {
                        connection.port = server.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        }
    };
    let options: &mut ResolverOpts = builder.options_mut();
    let attempts = u32::try_from(config.attempts).unwrap_or(u32::MAX);
    // Our timeout bounds the whole lookup; each of hickory's tries gets its share.
    options.timeout = config.timeout / attempts;
    options.attempts = config.attempts;
    // The cache is ours (see the module doc): hickory's would only hold second copies.
    options.cache_size = 0;
    // Explicit servers are the whole truth (tests, load runs); the system's config includes
    // its hosts file, as getnameinfo(3) would.
    options.use_hosts_file = if config.servers.is_some() { ResolveHosts::Never } else { ResolveHosts::Auto };
    // TCP fallback multiplexes lookups on one connection: let it carry all of ours.
    options.max_active_requests = options.max_active_requests.max(config.max_in_flight);
    builder.build().map_err(ReverseDnsError::Build)
}
