//! The generator's engine: fleet state, per-agent export ticks, and the arrival-order merge.
//!
//! Every agent exports at `start + k·period + phase(agent)`. When the first chunk of an agent's
//! batch for period k is due (its arrival time: export instant plus a bounded delay), the agent
//! is *ticked*: keys that reported their last sample are retired, its processes may restart or
//! change labels, its pools move bytes, short connections open and close, due names are
//! queued. Then the batch streams out in chunks: pending process/name records, one conn_stats
//! per live key (read lazily from the key table, so no period is ever materialised), progress.
//! Chunks of all agents merge by arrival time in a binary heap, so records interleave as a
//! Kafka consumer would see them and lag their event time by at most `max_delay_ns`. Before
//! its first export (the fleet was running before the recording began) and between
//! exports an agent reports progress every `progress_period_ns` (as the agent does), each
//! report arriving at its time or after the export's last chunk, whichever is later, and after
//! its last export until the fleet's last (the stream's end, so the end time is unchanged);
//! these use no randomness, so the rest of the stream is the same with or without them.
//!
//! Both sides of an in-fleet connection are separate keys on (possibly) different agents: the
//! client key owns the traffic and mirrors every change onto the server keys its connections
//! landed on (`peers`: a pool through a ClusterIP, or to a pre-fork server, spreads over
//! several backends), each of which aggregates all clients from one IP (`backrefs`). Counters survive a key's retirement in its
//! process's index, so a key that comes back continues counting (cumulative, nondecreasing).

use crate::catalog::{self, ExternalSpec, Kind, ARCHETYPES, EXTERNALS};
use crate::FleetProfile;
use flowgraph_schema::{ConnStats, Name, NameSource, Process, Progress, Record, TraceRole, Upid};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal, Zipf};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Clock ticks per second are 100 (USER_HZ): one tick is 10 ms.
const TICK_NS: u64 = 10_000_000;
const SECOND_NS: u64 = 1_000_000_000;
const DAY_NS: u64 = 86_400 * SECOND_NS;
/// Linux's default pid_max on 64-bit machines.
const PID_MAX: u32 = 4_194_304;
/// Most bytes one pool moves per period each way (about 800 Gbit/s): caps the log-normal tail.
const MAX_PERIOD_BYTES: f64 = 1e12;
/// Most pods one node's /23 pod range holds.
const PODS_PER_NODE: u32 = 510;

type ProcId = u32;

/// Where a key lives: agent index (asid - 1) and slot in that agent's key table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyRef {
    agent: u32,
    slot: u32,
}

/// A retired key's counters, kept so that the key continues them if it comes back.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    open: u64,
    close: u64,
    sent: u64,
    recv: u64,
}

#[derive(Debug)]
enum Slot {
    Live(u32),
    Retired(Box<Counters>),
}

/// Connections of a client key carried by one server key.
#[derive(Debug, Clone, Copy)]
struct Link {
    key: KeyRef,
    pool: u32,
    pending: u32,
}

/// A key's identity within its process: (remote_addr, remote_port, trace_role).
type IndexKey = (IpAddr, u16, u8);

/// One conn_stats key and its cumulative counters.
#[derive(Debug)]
struct Key {
    live: bool,
    /// Changed since its last sample; a key retires only after it reported active == 0.
    dirty: bool,
    proc_: ProcId,
    remote: IpAddr,
    port: u16,
    role: TraceRole,
    open: u64,
    close: u64,
    active: u64,
    sent: u64,
    recv: u64,
    /// Long-lived connections this key owns (client side, or a standalone server key).
    pool: u32,
    /// Short connections that close at the owner's next tick.
    pending: u32,
    /// Median bytes per period the pool sends / receives.
    rate_sent: f32,
    rate_recv: f32,
    /// Client keys: the server-side keys mirroring this one, with their share of connections.
    peers: Vec<Link>,
    /// Server keys: the client keys mirrored onto this one.
    backrefs: Vec<KeyRef>,
}

impl Key {
    fn new(proc_: ProcId, (remote, port, role): (IpAddr, u16, TraceRole), c: Counters) -> Key {
        Key {
            live: true,
            dirty: true,
            proc_,
            remote,
            port,
            role,
            open: c.open,
            close: c.close,
            active: 0,
            sent: c.sent,
            recv: c.recv,
            pool: 0,
            pending: 0,
            rate_sent: 0.0,
            rate_recv: 0.0,
            peers: Vec::new(),
            backrefs: Vec::new(),
        }
    }

    /// Opens `n` connections; `own` when this key (not a peer) decides when they close.
    fn open_conns(&mut self, conn: Conn, n: u32, bytes: (u64, u64), rates: (f32, f32), own: bool) {
        let n64 = u64::from(n);
        self.open += n64;
        match conn {
            Conn::Pool => {
                self.active += n64;
                if own {
                    self.pool += n;
                }
            }
            Conn::ShortOpen => {
                self.active += n64;
                if own {
                    self.pending += n;
                }
            }
            Conn::ShortClosed => self.close += n64,
        }
        self.sent = self.sent.saturating_add(bytes.0);
        self.recv = self.recv.saturating_add(bytes.1);
        self.rate_sent += rates.0;
        self.rate_recv += rates.1;
        self.dirty = true;
    }

    /// Closes `n` of the key's connections (a peer's view of them).
    fn close_conns(&mut self, n: u64) {
        if n > 0 {
            self.close += n;
            self.active = self.active.saturating_sub(n);
            self.dirty = true;
        }
    }

    fn index_key(&self) -> IndexKey {
        (self.remote, self.port, u8::from(self.role))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// Long-lived: lives as long as the client process.
    Pool,
    /// Short, still open at the sample: closes at the owner's next tick.
    ShortOpen,
    /// Short, opened and closed within the period.
    ShortClosed,
}

/// Where a client connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// A pod's IP (client-side load balancing).
    Pod(u32),
    /// A service's ClusterIP; the connection lands on one of its pods.
    Service(u32),
    /// An agent's node-exporter (node IP:9100).
    NodeExporter(u32),
    /// An agent's kubelet (node IP:10250).
    Kubelet(u32),
    /// External endpoint and which of its addresses.
    External(u32, u8),
    /// The control plane behind the `default/kubernetes` service IP (not in the fleet).
    ApiServer,
}

#[derive(Debug, Clone, Copy)]
struct Target {
    dest: Dest,
    /// Pool connections; 0 for short connections only.
    pool: u32,
    rate_sent: f32,
    rate_recv: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcKind {
    Pod,
    Sshd,
    Containerd,
    Kubelet,
    NodeExporter,
}

#[derive(Debug)]
struct Proc {
    upid: Upid,
    agent: u32,
    kind: ProcKind,
    pod: Option<u32>,
    svc: Option<u32>,
    alive: bool,
    cmdline: &'static str,
    container: String,
    /// Service label currently `ns/svc-canary` instead of `ns/svc`.
    canary: bool,
    ip4: Ipv4Addr,
    ip6: Ipv6Addr,
    index: BTreeMap<IndexKey, Slot>,
    targets: Vec<Target>,
    /// Mean short connections per period.
    short_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dep {
    Service(u32),
    External(u32),
}

#[derive(Debug)]
struct Service {
    ns: String,
    name: String,
    kind: Kind,
    port: u16,
    cmdline: &'static str,
    /// Reached over IPv6.
    v6: bool,
    /// As a client, connects through ClusterIPs.
    via_cluster_ip: bool,
    ip4: Ipv4Addr,
    ip6: Ipv6Addr,
    workers: u32,
    pods: Vec<u32>,
    deps: Vec<Dep>,
    /// Popularity rank as a destination (1 = most called), 0 when nobody picks it by Zipf.
    rank: u32,
}

#[derive(Debug)]
struct Pod {
    /// `namespace/name`.
    name: String,
    svc: u32,
    procs: Vec<ProcId>,
    ip4: Ipv4Addr,
    ip6: Ipv6Addr,
}

#[derive(Debug)]
struct External {
    spec: ExternalSpec,
    /// Periods between the first sample and the Name record; None: never named.
    name_delay: Option<u32>,
    seen: bool,
}

#[derive(Debug)]
struct Batch {
    time: u64,
    /// Latest arrival of any of its chunks.
    limit: u64,
    pending: VecDeque<Record>,
    cursor: usize,
    done: bool,
}

#[derive(Debug)]
struct Agent {
    asid: u32,
    host: String,
    node: String,
    ip4: Ipv4Addr,
    boot_ns: u64,
    phase_ns: u64,
    keys: Vec<Key>,
    free: Vec<u32>,
    /// Live processes, in creation order (a restart takes its predecessor's place).
    procs: Vec<ProcId>,
    pods: u32,
    /// Records for the next batch (time set when it starts).
    pending: Vec<Record>,
    /// Names due at a later period.
    scheduled: Vec<(u32, Record)>,
    next_pid: u32,
    containerd: ProcId,
    kubelet: ProcId,
    node_exporter: ProcId,
    next_period: u32,
    batch: Option<Batch>,
    /// Event time of the agent's last scheduled progress report, or of its last export
    /// (the next report follows one progress period later).
    next_report: u64,
}

/// The stream as an iterator: records in arrival order, generated lazily.
///
/// [`crate::generate`] drives one to the end; use this directly to pull records at your pace.
#[derive(Debug)]
pub struct Generator {
    p: FleetProfile,
    rng: ChaCha8Rng,
    agents: Vec<Agent>,
    services: Vec<Service>,
    pods: Vec<Pod>,
    procs: Vec<Proc>,
    externals: Vec<External>,
    registry: u32,
    ingress_clients: Vec<IpAddr>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    buf: VecDeque<Record>,
    /// The fleet's last export instant, the stream's last event time: agents report progress
    /// after their own last export until then.
    end_ns: u64,
}

/// exp(mu + sigma·N(0,1)).
fn lognormal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    (mu + sigma * z).exp()
}

/// A Zipf-distributed index in 0..n (rank 1 is index 0); uniform if the exponent is unusable.
fn zipf_index(rng: &mut ChaCha8Rng, n: usize, exponent: f64) -> usize {
    if n <= 1 {
        return 0;
    }
    match Zipf::new(n as f64, exponent) {
        Ok(zipf) => (zipf.sample(rng) as usize).clamp(1, n) - 1,
        Err(_) => rng.random_range(0..n),
    }
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    match Poisson::new(lambda) {
        Ok(dist) => {
            let x: f64 = dist.sample(rng);
            x.min(100_000.0) as u32
        }
        Err(_) => 0,
    }
}

impl Generator {
    /// A generator for `profile` (clamped into range, see [`FleetProfile::clamped`]) and `seed`.
    pub fn new(profile: &FleetProfile, seed: u64) -> Generator {
        let p = profile.clamped();
        let ingress_clients = catalog::internet_clients(p.internet_clients);
        let mut g = Generator {
            p,
            rng: ChaCha8Rng::seed_from_u64(seed),
            agents: Vec::new(),
            services: Vec::new(),
            pods: Vec::new(),
            procs: Vec::new(),
            externals: Vec::new(),
            registry: 0,
            ingress_clients,
            heap: BinaryHeap::new(),
            buf: VecDeque::new(),
            end_ns: 0,
        };
        g.build_agents();
        g.build_externals();
        g.build_services();
        g.build_pods();
        g.build_targets();
        g.build_names();
        g.end_ns = (0..g.agents.len()).map(|a| g.export_time(a, g.p.periods - 1)).max().unwrap_or(0);
        for a in 0..g.agents.len() {
            let arrival = g.export_time(a, 0) + g.rng.random_range(0..=g.p.max_delay_ns / 2);
            g.heap.push(Reverse((arrival, a as u32)));
            g.schedule_first_report(a);
        }
        g
    }

    /// The (clamped) profile being generated.
    pub fn profile(&self) -> &FleetProfile {
        &self.p
    }

    fn export_time(&self, agent: usize, period: u32) -> u64 {
        self.p.start_time_ns + u64::from(period) * self.p.export_period_ns + self.agents[agent].phase_ns
    }

    // ---------------------------------------------------------------- building the fleet

    fn build_agents(&mut self) {
        for i in 0..self.p.nodes {
            let (hi, lo) = ((i / 200 + 1) as u8, (i % 200 + 10) as u8);
            let host = format!("ip-10-0-{hi}-{lo}");
            let node = format!("{host}.eu-west-1.compute.internal");
            let ip4 = Ipv4Addr::new(10, 0, hi, lo);
            let ip6 = Ipv6Addr::new(0xfd00, 0x10, 0, i as u16, 0, 0, 0, 1);
            let boot_ns = self.p.start_time_ns.saturating_sub(self.rng.random_range(DAY_NS..60 * DAY_NS));
            let phase_ns = self.rng.random_range(0..self.p.export_period_ns);
            let next_pid = self.rng.random_range(3_000..9_000);
            self.agents.push(Agent {
                asid: i + 1,
                host,
                node,
                ip4,
                boot_ns,
                phase_ns,
                keys: Vec::new(),
                free: Vec::new(),
                procs: Vec::new(),
                pods: 0,
                pending: Vec::new(),
                scheduled: Vec::new(),
                next_pid,
                containerd: 0,
                kubelet: 0,
                node_exporter: 0,
                next_period: 0,
                batch: None,
                next_report: 0,
            });
            let a = i as usize;
            let hosts: [(ProcKind, &'static str, std::ops::Range<u32>); 4] = [
                (ProcKind::Sshd, "/usr/sbin/sshd -D", 500..900),
                (ProcKind::Containerd, "/usr/bin/containerd", 900..1_200),
                (
                    ProcKind::Kubelet,
                    "/usr/bin/kubelet --config=/etc/kubernetes/kubelet/kubelet-config.json \
                     --kubeconfig=/etc/kubernetes/kubelet/kubeconfig \
                     --container-runtime-endpoint=unix:///run/containerd/containerd.sock",
                    1_200..1_600,
                ),
                (
                    ProcKind::NodeExporter,
                    "/bin/node_exporter --path.rootfs=/host --web.listen-address=:9100",
                    1_600..3_000,
                ),
            ];
            for (kind, cmdline, pids) in hosts {
                let pid = self.rng.random_range(pids);
                let start = boot_ns + self.rng.random_range(3 * SECOND_NS..90 * SECOND_NS);
                let id = self.spawn(
                    Proc {
                        upid: Upid { asid: i + 1, pid, start_ticks: 0 },
                        agent: i,
                        kind,
                        pod: None,
                        svc: None,
                        alive: true,
                        cmdline,
                        container: String::new(),
                        canary: false,
                        ip4,
                        ip6,
                        index: BTreeMap::new(),
                        targets: Vec::new(),
                        short_rate: 0.0,
                    },
                    start,
                );
                self.agents[a].procs.push(id);
                match kind {
                    ProcKind::Containerd => self.agents[a].containerd = id,
                    ProcKind::Kubelet => self.agents[a].kubelet = id,
                    ProcKind::NodeExporter => self.agents[a].node_exporter = id,
                    ProcKind::Sshd | ProcKind::Pod => {}
                }
            }
        }
    }

    fn build_externals(&mut self) {
        let lag = self.p.name_lag_periods.max(1);
        for spec in EXTERNALS.iter().chain(std::iter::once(&catalog::REGISTRY)) {
            let name_delay = match spec.name {
                None => None,
                Some(_) if self.rng.random_bool(0.35) => Some(0),
                Some(_) => Some(self.rng.random_range(1..=lag)),
            };
            self.externals.push(External { spec: *spec, name_delay, seen: false });
        }
        self.registry = (self.externals.len() - 1) as u32;
    }

    fn build_services(&mut self) {
        let p = self.p.clone();
        let per_cycle = ARCHETYPES.len() as u32;
        for idx in 0..p.services {
            let arch = &ARCHETYPES[(idx % per_cycle) as usize];
            let cycle = idx / per_cycle;
            let ns = if cycle == 0 { arch.ns.to_string() } else { format!("{}-{}", arch.ns, cycle + 1) };
            let callable = matches!(arch.kind, Kind::App | Kind::Store);
            let v6 = callable && self.rng.random_bool(p.ipv6_service_fraction);
            let via_cluster_ip = self.rng.random_bool(p.cluster_ip_fraction);
            let workers =
                if arch.multi_worker && p.workers_max >= 2 { self.rng.random_range(2..=p.workers_max) } else { 1 };
            let ip4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 16)) + idx);
            let ip6 = Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 16)) + u128::from(idx));
            self.services.push(Service {
                ns,
                name: arch.name.to_string(),
                kind: arch.kind,
                port: arch.port,
                cmdline: arch.cmdline,
                v6,
                via_cluster_ip,
                ip4,
                ip6,
                workers,
                pods: Vec::new(),
                deps: Vec::new(),
                rank: 0,
            });
        }
        // Dependencies, per catalog cycle: fixed ones, then Zipf-popular services and externals.
        for first in (0..p.services).step_by(per_cycle as usize) {
            let members: Vec<u32> = (first..p.services.min(first + per_cycle)).collect();
            let mut popular: Vec<u32> = members
                .iter()
                .copied()
                .filter(|&s| {
                    let svc = &self.services[s as usize];
                    matches!(svc.kind, Kind::App | Kind::Store)
                        && !["frontend", "grafana", "zookeeper"].contains(&svc.name.as_str())
                })
                .collect();
            // Popularity: stores first (everyone talks to Redis and Postgres), then apps, each
            // group in a seeded order.
            popular.shuffle(&mut self.rng);
            popular.sort_by_key(|&s| self.services[s as usize].kind != Kind::Store);
            for (i, &s) in popular.iter().enumerate() {
                self.services[s as usize].rank = i as u32 + 1;
            }
            for &s in &members {
                let arch = &ARCHETYPES[(s % per_cycle) as usize];
                let mut deps: Vec<Dep> = arch
                    .fixed_deps
                    .iter()
                    .filter_map(|name| {
                        members.iter().copied().find(|&m| self.services[m as usize].name == *name).map(Dep::Service)
                    })
                    .collect();
                if arch.kind == Kind::App && arch.fixed_deps.is_empty() && !popular.is_empty() {
                    let count = if arch.name == "frontend" {
                        self.rng.random_range(2..=p.deps_max + 1)
                    } else {
                        self.rng.random_range(1..=p.deps_max)
                    };
                    for _ in 0..count {
                        for _try in 0..8 {
                            let d = popular[zipf_index(&mut self.rng, popular.len(), p.zipf_exponent)];
                            if d != s && !deps.contains(&Dep::Service(d)) {
                                deps.push(Dep::Service(d));
                                break;
                            }
                        }
                    }
                    if self.rng.random_bool(p.external_dep_prob) {
                        for _ in 0..self.rng.random_range(1..=2) {
                            let e = zipf_index(&mut self.rng, EXTERNALS.len(), p.zipf_exponent) as u32;
                            if !deps.contains(&Dep::External(e)) {
                                deps.push(Dep::External(e));
                            }
                        }
                    }
                }
                self.services[s as usize].deps = deps;
            }
        }
    }

    fn build_pods(&mut self) {
        let p = self.p.clone();
        for s in 0..self.services.len() {
            let (kind, workers, rank) = (self.services[s].kind, self.services[s].workers, self.services[s].rank);
            // The most called services run the most replicas.
            let mut scaled = |max: u32| {
                if rank == 0 {
                    return self.rng.random_range(1..=max);
                }
                let scale = f64::from(rank).powf(-0.4) * self.rng.random_range(0.6..=1.0);
                1 + (f64::from(max - 1) * scale).round() as u32
            };
            let replicas = match kind {
                Kind::App => scaled(p.replicas_max),
                Kind::Store => scaled(p.store_replicas_max),
                Kind::Ingress => self.rng.random_range(1..=p.replicas_max.min(2)),
                Kind::NodeScraper | Kind::KubeletScraper => 1,
            };
            let replica_set = catalog::k8s_suffix(&mut self.rng, 10);
            for r in 0..replicas {
                let agent = self.rng.random_range(0..p.nodes);
                let a = agent as usize;
                let n = self.agents[a].pods % PODS_PER_NODE;
                self.agents[a].pods += 1;
                let svc = &self.services[s];
                let name = if kind == Kind::Store {
                    format!("{}/{}-{r}", svc.ns, svc.name)
                } else {
                    let suffix = catalog::k8s_suffix(&mut self.rng, 5);
                    format!("{}/{}-{replica_set}-{suffix}", svc.ns, svc.name)
                };
                let ip4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (agent << 9) + n + 2);
                let ip6 = Ipv6Addr::new(0xfd00, 0x10, 0x244, agent as u16, 0, 0, 0, (n + 2) as u16);
                let pod = self.pods.len() as u32;
                self.pods.push(Pod { name, svc: s as u32, procs: Vec::new(), ip4, ip6 });
                self.services[s].pods.push(pod);
                let container = catalog::container_id(&mut self.rng);
                // Started between a second after boot and five minutes before the stream.
                let age = self.p.start_time_ns - self.agents[a].boot_ns;
                let start = self
                    .p
                    .start_time_ns
                    .saturating_sub(self.rng.random_range(300 * SECOND_NS..age.max(302 * SECOND_NS) - SECOND_NS));
                for w in 0..workers {
                    let pid = self.next_pid(a);
                    let id = self.spawn(
                        Proc {
                            upid: Upid { asid: agent + 1, pid, start_ticks: 0 },
                            agent,
                            kind: ProcKind::Pod,
                            pod: Some(pod),
                            svc: Some(s as u32),
                            alive: true,
                            cmdline: self.services[s].cmdline,
                            container: container.clone(),
                            canary: false,
                            ip4,
                            ip6,
                            index: BTreeMap::new(),
                            targets: Vec::new(),
                            short_rate: 0.0,
                        },
                        start + u64::from(w) * 20 * TICK_NS,
                    );
                    self.agents[a].procs.push(id);
                    self.pods[pod as usize].procs.push(id);
                }
            }
        }
    }

    fn pool_rates(&mut self, factor: f64) -> (f32, f32) {
        let total = lognormal(&mut self.rng, (self.p.pool_rate_median_bytes * factor).ln(), self.p.pool_rate_sigma);
        let sent_share = self.rng.random_range(0.08..0.6);
        ((total * sent_share) as f32, (total * (1.0 - sent_share)) as f32)
    }

    fn build_targets(&mut self) {
        let p = self.p.clone();
        for id in 0..self.procs.len() {
            let mut targets = Vec::new();
            let mut short_rate = 0.0;
            match (self.procs[id].kind, self.procs[id].svc) {
                (ProcKind::Pod, Some(s)) => {
                    let s = s as usize;
                    match self.services[s].kind {
                        Kind::NodeScraper | Kind::KubeletScraper => {
                            let scrape_node_exporter = self.services[s].kind == Kind::NodeScraper;
                            for a in 0..self.agents.len() as u32 {
                                let (dest, recv) = if scrape_node_exporter {
                                    (Dest::NodeExporter(a), 70_000.0)
                                } else {
                                    (Dest::Kubelet(a), 25_000.0)
                                };
                                let jitter = self.rng.random_range(0.7..1.4);
                                targets.push(Target { dest, pool: 1, rate_sent: 700.0, rate_recv: recv * jitter });
                            }
                        }
                        _ => {
                            let deps = self.services[s].deps.clone();
                            let via_cluster_ip = self.services[s].via_cluster_ip;
                            for dep in deps {
                                match dep {
                                    Dep::Service(d) => {
                                        let factor =
                                            if self.services[d as usize].kind == Kind::Store { 2.5 } else { 1.0 };
                                        if via_cluster_ip {
                                            let (rate_sent, rate_recv) = self.pool_rates(factor);
                                            targets.push(Target {
                                                dest: Dest::Service(d),
                                                pool: self.rng.random_range(1..=p.pool_max),
                                                rate_sent,
                                                rate_recv,
                                            });
                                        } else {
                                            let pods = self.services[d as usize].pods.clone();
                                            let k = pods.len().min(p.max_backends as usize);
                                            let first = self.rng.random_range(0..pods.len());
                                            for j in 0..k {
                                                let (rate_sent, rate_recv) = self.pool_rates(factor);
                                                targets.push(Target {
                                                    dest: Dest::Pod(pods[(first + j) % pods.len()]),
                                                    pool: self.rng.random_range(1..=p.pool_max),
                                                    rate_sent,
                                                    rate_recv,
                                                });
                                            }
                                        }
                                    }
                                    Dep::External(e) => {
                                        let addrs = self.externals[e as usize].spec.addrs.len();
                                        let which = self.rng.random_range(0..addrs) as u8;
                                        let (rate_sent, rate_recv) = self.pool_rates(0.4);
                                        let pool =
                                            if self.rng.random_bool(0.5) { self.rng.random_range(1..=2) } else { 0 };
                                        targets.push(Target {
                                            dest: Dest::External(e, which),
                                            pool,
                                            rate_sent,
                                            rate_recv,
                                        });
                                    }
                                }
                            }
                            if !targets.is_empty() {
                                short_rate = p.short_conns_per_proc * self.rng.random_range(0.3..1.7);
                            }
                        }
                    }
                }
                (ProcKind::Kubelet, _) => {
                    targets.push(Target { dest: Dest::ApiServer, pool: 1, rate_sent: 6_000.0, rate_recv: 20_000.0 })
                }
                (ProcKind::Containerd, _) => {
                    let which = self.rng.random_range(0..catalog::REGISTRY.addrs.len()) as u8;
                    targets.push(Target {
                        dest: Dest::External(self.registry, which),
                        pool: 0,
                        rate_sent: 0.0,
                        rate_recv: 0.0,
                    });
                    short_rate = 0.02;
                }
                _ => {}
            }
            self.procs[id].targets = targets;
            self.procs[id].short_rate = short_rate;
        }
    }

    fn name_due(&mut self) -> u32 {
        if self.p.name_lag_periods == 0 || self.rng.random_bool(0.7) {
            0
        } else {
            self.rng.random_range(1..=self.p.name_lag_periods)
        }
    }

    fn build_names(&mut self) {
        for a in 0..self.agents.len() {
            let (addr, name) = (IpAddr::V4(self.agents[a].ip4), self.agents[a].node.clone());
            self.schedule(a, 0, addr, name);
        }
        self.schedule(0, 0, catalog::APISERVER, catalog::APISERVER_NAME.to_string());
        for pod in 0..self.pods.len() {
            let due = self.name_due();
            let agent = self.procs[self.pods[pod].procs[0] as usize].agent as usize;
            let name = self.pods[pod].name.clone();
            self.schedule(agent, due, IpAddr::V4(self.pods[pod].ip4), name.clone());
            self.schedule(agent, due, IpAddr::V6(self.pods[pod].ip6), name);
        }
        for s in 0..self.services.len() {
            let due = self.name_due();
            let agent = s % self.agents.len();
            let svc = &self.services[s];
            let (name, ip4, ip6, v6) = (format!("{}/{}", svc.ns, svc.name), svc.ip4, svc.ip6, svc.v6);
            self.schedule(agent, due, IpAddr::V4(ip4), name.clone());
            if v6 {
                self.schedule(agent, due, IpAddr::V6(ip6), name);
            }
        }
    }

    /// Queues a name on an agent: in its next batch if due by then, else at period `due`.
    fn schedule(&mut self, agent: usize, due: u32, addr: IpAddr, name: String) {
        // The agent saw the address in a DNS answer.
        let record = Record::Name(Name { time_: 0, addr, name, source: NameSource::Dns });
        let a = &mut self.agents[agent];
        if due <= a.next_period {
            a.pending.push(record);
        } else {
            a.scheduled.push((due, record));
        }
    }

    fn next_pid(&mut self, agent: usize) -> u32 {
        let step = self.rng.random_range(1..400);
        let a = &mut self.agents[agent];
        a.next_pid += step;
        if a.next_pid >= PID_MAX {
            a.next_pid = 300 + step;
        }
        a.next_pid
    }

    /// Registers a process started at `start_ns` and queues its process record.
    fn spawn(&mut self, mut proc_: Proc, start_ns: u64) -> ProcId {
        let agent = proc_.agent as usize;
        proc_.upid.start_ticks = start_ns.saturating_sub(self.agents[agent].boot_ns) / TICK_NS;
        let id = self.procs.len() as ProcId;
        self.procs.push(proc_);
        let record = self.process_record(id);
        self.agents[agent].pending.push(record);
        id
    }

    fn process_record(&self, id: ProcId) -> Record {
        let proc_ = &self.procs[id as usize];
        let agent = &self.agents[proc_.agent as usize];
        let (pod, service, namespace) = match (proc_.pod, proc_.svc) {
            (Some(pod), Some(s)) => {
                let svc = &self.services[s as usize];
                let canary = if proc_.canary { "-canary" } else { "" };
                (self.pods[pod as usize].name.clone(), format!("{}/{}{canary}", svc.ns, svc.name), svc.ns.clone())
            }
            _ => (String::new(), String::new(), String::new()),
        };
        Record::Process(Box::new(Process {
            time_: 0,
            upid: proc_.upid,
            cmdline: proc_.cmdline.to_string(),
            comm: catalog::comm_of(proc_.cmdline),
            container: proc_.container.clone(),
            host: agent.host.clone(),
            pod,
            service,
            namespace,
            node: agent.node.clone(),
        }))
    }

    // ---------------------------------------------------------------- keys and connections

    fn key_mut(&mut self, r: KeyRef) -> &mut Key {
        &mut self.agents[r.agent as usize].keys[r.slot as usize]
    }

    /// The live key of a process for an identity, reviving a retired one with its counters.
    fn key_for(&mut self, p: ProcId, remote: IpAddr, port: u16, role: TraceRole) -> KeyRef {
        let index_key = (remote, port, u8::from(role));
        let proc_ = &self.procs[p as usize];
        let agent = proc_.agent;
        let counters = match proc_.index.get(&index_key) {
            Some(Slot::Live(slot)) => return KeyRef { agent, slot: *slot },
            Some(Slot::Retired(counters)) => **counters,
            None => Counters::default(),
        };
        let key = Key::new(p, (remote, port, role), counters);
        let a = &mut self.agents[agent as usize];
        let slot = match a.free.pop() {
            Some(slot) => {
                a.keys[slot as usize] = key;
                slot
            }
            None => {
                a.keys.push(key);
                (a.keys.len() - 1) as u32
            }
        };
        self.procs[p as usize].index.insert(index_key, Slot::Live(slot));
        KeyRef { agent, slot }
    }

    /// The remote address and port of a destination.
    fn remote_of(&self, dest: Dest) -> (IpAddr, u16) {
        match dest {
            Dest::Pod(pod) => {
                let pod = &self.pods[pod as usize];
                let svc = &self.services[pod.svc as usize];
                let addr = if svc.v6 { IpAddr::V6(pod.ip6) } else { IpAddr::V4(pod.ip4) };
                (addr, svc.port)
            }
            Dest::Service(s) => {
                let svc = &self.services[s as usize];
                let addr = if svc.v6 { IpAddr::V6(svc.ip6) } else { IpAddr::V4(svc.ip4) };
                (addr, svc.port)
            }
            Dest::NodeExporter(a) => (IpAddr::V4(self.agents[a as usize].ip4), 9100),
            Dest::Kubelet(a) => (IpAddr::V4(self.agents[a as usize].ip4), 10250),
            Dest::External(e, which) => {
                let spec = &self.externals[e as usize].spec;
                (spec.addrs[which as usize % spec.addrs.len()], spec.port)
            }
            Dest::ApiServer => (catalog::APISERVER, 443),
        }
    }

    /// The fleet process that accepts one connection to `dest` (None outside the fleet): a
    /// random pod behind a ClusterIP, a random worker of a pre-fork server.
    fn pick_server(&mut self, dest: Dest) -> Option<ProcId> {
        let pod = match dest {
            Dest::Pod(pod) => pod,
            Dest::Service(s) => {
                let pods = &self.services[s as usize].pods;
                pods[self.rng.random_range(0..pods.len())]
            }
            Dest::NodeExporter(a) => return Some(self.agents[a as usize].node_exporter),
            Dest::Kubelet(a) => return Some(self.agents[a as usize].kubelet),
            Dest::External(..) | Dest::ApiServer => return None,
        };
        let procs = &self.pods[pod as usize].procs;
        Some(procs[self.rng.random_range(0..procs.len())])
    }

    /// The client's own address in the family of the remote address.
    fn client_ip(&self, client: ProcId, remote: IpAddr) -> IpAddr {
        let proc_ = &self.procs[client as usize];
        match remote {
            IpAddr::V4(_) => IpAddr::V4(proc_.ip4),
            IpAddr::V6(_) => IpAddr::V6(proc_.ip6),
        }
    }

    /// Opens connections from `client` to a target; `bytes` = (sent, received) by the client.
    fn connect(&mut self, client: ProcId, target: Target, conn: Conn, bytes: (u64, u64), period: u32) {
        let n = if conn == Conn::Pool { target.pool } else { 1 };
        if n == 0 {
            return;
        }
        let (addr, port) = self.remote_of(target.dest);
        let ck = self.key_for(client, addr, port, TraceRole::Client);
        let rates = if conn == Conn::Pool { (target.rate_sent, target.rate_recv) } else { (0.0, 0.0) };
        self.key_mut(ck).open_conns(conn, n, bytes, rates, true);
        // Each connection lands on its own backend; the server side sees the client's pod IP.
        let client_ip = self.client_ip(client, addr);
        for i in 0..n {
            let Some(server) = self.pick_server(target.dest) else {
                break;
            };
            let sk = self.key_for(server, client_ip, 0, TraceRole::Server);
            let mirrored = if i == 0 { (bytes.1, bytes.0) } else { (0, 0) };
            self.key_mut(sk).open_conns(conn, 1, mirrored, (0.0, 0.0), false);
            match conn {
                Conn::Pool => self.add_link(ck, sk, 1, 0),
                Conn::ShortOpen => self.add_link(ck, sk, 0, 1),
                // Closed already: nothing left to mirror later.
                Conn::ShortClosed => {}
            }
        }
        if let Dest::External(e, _) = target.dest {
            self.note_external(e, self.procs[client as usize].agent as usize, period);
        }
    }

    /// Records that `pool` + `pending` of client key `ck`'s connections are carried by `sk`.
    fn add_link(&mut self, ck: KeyRef, sk: KeyRef, pool: u32, pending: u32) {
        let k = self.key_mut(ck);
        if let Some(link) = k.peers.iter_mut().find(|l| l.key == sk) {
            link.pool += pool;
            link.pending += pending;
            return;
        }
        k.peers.push(Link { key: sk, pool, pending });
        self.key_mut(sk).backrefs.push(ck);
    }

    /// A connection accepted from outside the fleet (no client-side key).
    fn accept_external(&mut self, server: ProcId, remote: IpAddr, conn: Conn, bytes: (u64, u64)) {
        let sk = self.key_for(server, remote, 0, TraceRole::Server);
        self.key_mut(sk).open_conns(conn, 1, bytes, (0.0, 0.0), true);
    }

    /// The first use of a named external endpoint schedules its name on the agent that saw it.
    fn note_external(&mut self, e: u32, agent: usize, period: u32) {
        let ext = &mut self.externals[e as usize];
        if ext.seen {
            return;
        }
        ext.seen = true;
        if let (Some(name), Some(delay)) = (ext.spec.name, ext.name_delay) {
            let addrs = ext.spec.addrs;
            for &addr in addrs {
                self.schedule(agent, period + delay, addr, name.to_string());
            }
        }
    }

    fn short_bytes(&mut self) -> (u64, u64) {
        let request = lognormal(&mut self.rng, 700f64.ln(), 1.0);
        let response = lognormal(&mut self.rng, 4_000f64.ln(), 1.6);
        (request as u64 + 60, response as u64 + 40)
    }

    /// Retires a key that reported its last sample; its counters stay in its process's index.
    fn retire(&mut self, r: KeyRef) {
        let (proc_, index_key, counters, links, backrefs) = {
            let k = self.key_mut(r);
            k.live = false;
            let counters = Counters { open: k.open, close: k.close, sent: k.sent, recv: k.recv };
            (k.proc_, k.index_key(), counters, std::mem::take(&mut k.peers), std::mem::take(&mut k.backrefs))
        };
        self.agents[r.agent as usize].free.push(r.slot);
        let p = &mut self.procs[proc_ as usize];
        if p.alive {
            p.index.insert(index_key, Slot::Retired(Box::new(counters)));
        }
        for link in links {
            self.key_mut(link.key).backrefs.retain(|b| *b != r);
        }
        for b in backrefs {
            self.key_mut(b).peers.retain(|l| l.key != r);
        }
    }

    /// A process exits and comes back with a new upid: its keys close and stop, its clients
    /// reconnect to the new process, which opens its own pools again.
    fn restart(&mut self, p: ProcId, period: u32, now: u64) {
        let agent = self.procs[p as usize].agent as usize;
        let index = std::mem::take(&mut self.procs[p as usize].index);
        self.procs[p as usize].alive = false;
        let mut orphans = Vec::new();
        for slot in index.into_values() {
            let Slot::Live(slot) = slot else { continue };
            let r = KeyRef { agent: agent as u32, slot };
            let (links, backrefs) = {
                let k = self.key_mut(r);
                let n = k.active;
                k.close_conns(n);
                k.pool = 0;
                k.pending = 0;
                k.rate_sent = 0.0;
                k.rate_recv = 0.0;
                (std::mem::take(&mut k.peers), std::mem::take(&mut k.backrefs))
            };
            for link in links {
                let pk = self.key_mut(link.key);
                pk.close_conns(u64::from(link.pool + link.pending));
                pk.backrefs.retain(|b| *b != r);
            }
            orphans.extend(backrefs.into_iter().map(|c| (c, r)));
        }

        // The successor: same pod, ips and role; new start time, maybe a new pid/container.
        let old = &self.procs[p as usize];
        let old_ticks = old.upid.start_ticks;
        let same_pid = self.rng.random_bool(0.3);
        let (kind, pod, svc, cmdline, ip4, ip6, canary, short_rate, old_pid) =
            (old.kind, old.pod, old.svc, old.cmdline, old.ip4, old.ip6, old.canary, old.short_rate, old.upid.pid);
        let single_proc_pod = pod.is_some_and(|pod| self.pods[pod as usize].procs.len() == 1);
        let container = if single_proc_pod { catalog::container_id(&mut self.rng) } else { old.container.clone() };
        let targets = std::mem::take(&mut self.procs[p as usize].targets);
        let pid = if same_pid { old_pid } else { self.next_pid(agent) };
        // Started during the last period (after the previous export, so after its predecessor).
        let start = now - self.rng.random_range(0..=self.p.export_period_ns / 2);
        let new = self.spawn(
            Proc {
                upid: Upid { asid: agent as u32 + 1, pid, start_ticks: 0 },
                agent: agent as u32,
                kind,
                pod,
                svc,
                alive: true,
                cmdline,
                container,
                canary,
                ip4,
                ip6,
                index: BTreeMap::new(),
                targets: targets.clone(),
                short_rate,
            },
            start,
        );
        if same_pid && self.procs[new as usize].upid.start_ticks <= old_ticks {
            // Same pid within one clock tick: the kernel's start time still differs.
            self.procs[new as usize].upid.start_ticks = old_ticks + 1;
            let record = self.process_record(new);
            if let Some(last) = self.agents[agent].pending.last_mut() {
                *last = record;
            }
        }
        for slot in self.agents[agent].procs.iter_mut().filter(|x| **x == p) {
            *slot = new;
        }
        if let Some(pod) = pod {
            for slot in self.pods[pod as usize].procs.iter_mut().filter(|x| **x == p) {
                *slot = new;
            }
        }
        match kind {
            ProcKind::Containerd => self.agents[agent].containerd = new,
            ProcKind::Kubelet => self.agents[agent].kubelet = new,
            ProcKind::NodeExporter => self.agents[agent].node_exporter = new,
            ProcKind::Pod | ProcKind::Sshd => {}
        }

        // Clients of the old process lose those connections; pools reconnect to the new one.
        for (c, old_sk) in orphans {
            let k = self.key_mut(c);
            let Some(pos) = k.peers.iter().position(|l| l.key == old_sk) else {
                continue;
            };
            let link = k.peers.swap_remove(pos);
            let (pool, pending) = (u64::from(link.pool), u64::from(link.pending));
            k.close_conns(pool + pending);
            k.pending = k.pending.saturating_sub(link.pending);
            if pool > 0 {
                k.open += pool;
                k.active += pool;
                let (client, remote) = (k.proc_, k.remote);
                let client_ip = self.client_ip(client, remote);
                let sk = self.key_for(new, client_ip, 0, TraceRole::Server);
                self.key_mut(sk).open_conns(Conn::Pool, link.pool, (0, 0), (0.0, 0.0), false);
                self.add_link(c, sk, link.pool, 0);
            }
        }
        for target in targets {
            self.connect(new, target, Conn::Pool, (0, 0), period);
        }
        if single_proc_pod {
            // A new container: the node pulls its image (layers cached, manifests fetched).
            let containerd = self.agents[agent].containerd;
            let which = self.rng.random_range(0..catalog::REGISTRY.addrs.len()) as u8;
            let target = Target { dest: Dest::External(self.registry, which), pool: 0, rate_sent: 0.0, rate_recv: 0.0 };
            let recv = lognormal(&mut self.rng, 200_000f64.ln(), 2.0) as u64;
            let sent = self.rng.random_range(2_000..9_000);
            self.connect(containerd, target, Conn::ShortClosed, (sent, recv), period);
        }
    }

    // ---------------------------------------------------------------- the per-agent tick

    fn tick(&mut self, a: usize, period: u32, now: u64) {
        // 1. Keys whose last sample said active == 0 stop.
        for slot in 0..self.agents[a].keys.len() {
            let k = &self.agents[a].keys[slot];
            if k.live && k.active == 0 && !k.dirty {
                self.retire(KeyRef { agent: a as u32, slot: slot as u32 });
            }
        }
        // 2. Names due now.
        let scheduled = std::mem::take(&mut self.agents[a].scheduled);
        for (due, record) in scheduled {
            if due <= period {
                self.agents[a].pending.push(record);
            } else {
                self.agents[a].scheduled.push((due, record));
            }
        }
        // 3. Restarts and label changes.
        let procs = self.agents[a].procs.clone();
        if period > 0 {
            for &p in &procs {
                if self.rng.random_bool(self.p.restart_prob) {
                    self.restart(p, period, now);
                } else if self.procs[p as usize].kind == ProcKind::Pod && self.rng.random_bool(self.p.label_change_prob)
                {
                    let proc_ = &mut self.procs[p as usize];
                    proc_.canary = !proc_.canary;
                    let record = self.process_record(p);
                    self.agents[a].pending.push(record);
                }
            }
        }
        // 4. Pending short connections close, pools move bytes.
        self.advance_keys(a);
        // 5. Pools open at the start; short connections come and go.
        let procs = self.agents[a].procs.clone();
        if period == 0 {
            for &p in &procs {
                let targets = self.procs[p as usize].targets.clone();
                for target in targets {
                    self.connect(p, target, Conn::Pool, (0, 0), period);
                }
            }
        }
        for &p in &procs {
            let n = poisson(&mut self.rng, self.procs[p as usize].short_rate);
            for _ in 0..n {
                let targets = &self.procs[p as usize].targets;
                if targets.is_empty() {
                    break;
                }
                let target = targets[self.rng.random_range(0..targets.len())];
                let conn = if self.rng.random_bool(0.6) { Conn::ShortClosed } else { Conn::ShortOpen };
                let bytes = self.short_bytes();
                self.connect(p, target, conn, bytes, period);
            }
            let proc_ = &self.procs[p as usize];
            let ingress = proc_.svc.is_some_and(|s| self.services[s as usize].kind == Kind::Ingress);
            if ingress {
                let n = poisson(&mut self.rng, self.p.ingress_conns_per_proc);
                for _ in 0..n {
                    let i = zipf_index(&mut self.rng, self.ingress_clients.len(), self.p.zipf_exponent);
                    let remote = self.ingress_clients[i];
                    let conn = if self.rng.random_bool(0.7) { Conn::ShortClosed } else { Conn::ShortOpen };
                    let (request, response) = self.short_bytes();
                    self.accept_external(p, remote, conn, (response * 3, request));
                }
            } else if proc_.kind == ProcKind::Sshd && self.rng.random_bool(0.01) {
                let remote = catalog::ADMIN_ADDRS[self.rng.random_range(0..catalog::ADMIN_ADDRS.len())];
                let sent = lognormal(&mut self.rng, 40_000f64.ln(), 1.0) as u64;
                let recv = lognormal(&mut self.rng, 4_000f64.ln(), 0.8) as u64;
                self.accept_external(p, remote, Conn::ShortOpen, (sent, recv));
            }
        }
    }

    /// Closes last period's short connections and moves a period of pool traffic, on the
    /// agent's own keys, mirrored onto their peers (pool bytes split by connections).
    fn advance_keys(&mut self, a: usize) {
        for slot in 0..self.agents[a].keys.len() {
            let (links, sent, recv) = {
                let k = &mut self.agents[a].keys[slot];
                if !k.live {
                    continue;
                }
                let closed = u64::from(k.pending);
                if closed > 0 {
                    k.pending = 0;
                    k.close_conns(closed);
                }
                let (mut sent, mut recv) = (0, 0);
                if k.pool > 0 && (k.rate_sent > 0.0 || k.rate_recv > 0.0) && !self.rng.random_bool(0.04) {
                    let z: f64 = self.rng.sample(StandardNormal);
                    let jitter = (0.5 * z - 0.125).exp();
                    sent = (f64::from(k.rate_sent) * jitter).min(MAX_PERIOD_BYTES) as u64;
                    recv = (f64::from(k.rate_recv) * jitter).min(MAX_PERIOD_BYTES) as u64;
                    k.sent = k.sent.saturating_add(sent);
                    k.recv = k.recv.saturating_add(recv);
                    k.dirty = true;
                }
                if k.peers.is_empty() {
                    continue;
                }
                (std::mem::take(&mut k.peers), sent, recv)
            };
            let me = KeyRef { agent: a as u32, slot: slot as u32 };
            let pooled: u64 = links.iter().map(|l| u64::from(l.pool)).sum();
            let last_pooled = links.iter().rposition(|l| l.pool > 0);
            let (mut sent_left, mut recv_left) = (sent, recv);
            let mut kept = Vec::with_capacity(links.len());
            for (i, link) in links.into_iter().enumerate() {
                let (s, r) = if Some(i) == last_pooled {
                    (sent_left, recv_left)
                } else if link.pool > 0 {
                    let share = |x: u64| (u128::from(x) * u128::from(link.pool) / u128::from(pooled)) as u64;
                    (share(sent), share(recv))
                } else {
                    (0, 0)
                };
                sent_left -= s;
                recv_left -= r;
                let pk = self.key_mut(link.key);
                pk.close_conns(u64::from(link.pending));
                if s > 0 || r > 0 {
                    pk.sent = pk.sent.saturating_add(r);
                    pk.recv = pk.recv.saturating_add(s);
                    pk.dirty = true;
                }
                if link.pool > 0 {
                    kept.push(Link { pending: 0, ..link });
                } else {
                    pk.backrefs.retain(|b| *b != me);
                }
            }
            self.agents[a].keys[slot].peers = kept;
        }
    }

    // ---------------------------------------------------------------- emission

    fn start_batch(&mut self, a: usize) {
        let period = self.agents[a].next_period;
        let time = self.export_time(a, period);
        self.tick(a, period, time);
        let mut pending: VecDeque<Record> = std::mem::take(&mut self.agents[a].pending).into();
        for record in pending.iter_mut() {
            record.set_time(time);
        }
        self.agents[a].batch = Some(Batch { time, limit: time + self.p.max_delay_ns, pending, cursor: 0, done: false });
    }

    /// Moves the next chunk of agent `a`'s batch into the output buffer; true when it ended.
    fn emit_chunk(&mut self, a: usize) -> bool {
        let chunk = self.p.batch_records as usize;
        let agent = &mut self.agents[a];
        let Some(batch) = agent.batch.as_mut() else {
            return true;
        };
        let mut n = 0;
        while n < chunk {
            if let Some(record) = batch.pending.pop_front() {
                self.buf.push_back(record);
                n += 1;
            } else if batch.cursor < agent.keys.len() {
                let k = &mut agent.keys[batch.cursor];
                batch.cursor += 1;
                if k.live {
                    k.dirty = false;
                    self.buf.push_back(Record::ConnStats(ConnStats {
                        time_: batch.time,
                        upid: self.procs[k.proc_ as usize].upid,
                        remote_addr: k.remote,
                        remote_port: k.port,
                        trace_role: k.role,
                        conn_open: k.open,
                        conn_close: k.close,
                        conn_active: k.active,
                        bytes_sent: k.sent,
                        bytes_recv: k.recv,
                    }));
                    n += 1;
                }
            } else {
                if !batch.done {
                    batch.done = true;
                    self.buf.push_back(Record::Progress(Progress {
                        time_: batch.time,
                        source: format!("agent-{}", agent.asid),
                        losses: Default::default(),
                    }));
                }
                return true;
            }
        }
        false
    }

    fn step(&mut self, a: u32, arrival: u64) {
        if a & REPORT != 0 {
            self.report_progress((a & !REPORT) as usize, arrival);
            return;
        }
        let a = a as usize;
        if self.agents[a].batch.is_none() {
            self.start_batch(a);
        }
        if self.emit_chunk(a) {
            let exported = self.agents[a].batch.take().map_or(0, |b| b.time);
            self.agents[a].next_period += 1;
            let period = self.agents[a].next_period;
            if period < self.p.periods {
                let delay = self.rng.random_range(0..=self.p.max_delay_ns / 2);
                self.heap.push(Reverse((self.export_time(a, period) + delay, a as u32)));
            }
            self.agents[a].next_report = exported;
            self.schedule_report(a, arrival);
        } else {
            let limit = self.agents[a].batch.as_ref().map_or(arrival, |b| b.limit);
            let gap = self.rng.random_range(1_000_000..=20_000_000);
            self.heap.push(Reverse(((arrival + gap).min(limit).max(arrival), a as u32)));
        }
    }

    /// Schedules agent `a`'s next progress report between exports, if one falls before its
    /// next export (after its last: before the fleet's last export, the stream's end): at its
    /// time, or at `arrival` if that is later.
    fn schedule_report(&mut self, a: usize, arrival: u64) {
        if self.p.progress_period_ns == 0 {
            return;
        }
        let next = self.agents[a].next_report + self.p.progress_period_ns;
        let until = match self.agents[a].next_period < self.p.periods {
            true => self.export_time(a, self.agents[a].next_period),
            false => self.end_ns,
        };
        if next < until {
            self.agents[a].next_report = next;
            self.heap.push(Reverse((next.max(arrival), a as u32 | REPORT)));
        }
    }

    /// A recording starts with the fleet already running, so every agent has been reporting
    /// progress: its reports before its first export start within one progress period of the
    /// stream's start, on the cadence that leads to that export. (Without them an agent whose
    /// export phase is late in the period is first heard from up to a period in, and a Kafka
    /// partition whose clock already runs takes its first batch as a newcomer's, late.)
    fn schedule_first_report(&mut self, a: usize) {
        let period = self.p.progress_period_ns;
        if period == 0 {
            return;
        }
        let first_export = self.export_time(a, 0);
        let reports_before = (first_export - self.p.start_time_ns) / period;
        if reports_before > 0 {
            self.agents[a].next_report = first_export - reports_before * period;
            self.heap.push(Reverse((self.agents[a].next_report, a as u32 | REPORT)));
        }
    }

    fn report_progress(&mut self, a: usize, arrival: u64) {
        let agent = &self.agents[a];
        self.buf.push_back(Record::Progress(Progress {
            time_: agent.next_report,
            source: format!("agent-{}", agent.asid),
            losses: Default::default(),
        }));
        self.schedule_report(a, arrival);
    }
}

/// Marks a heap entry as an agent's progress report between exports, not a chunk of its batch.
const REPORT: u32 = 1 << 31;

impl Iterator for Generator {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.buf.pop_front() {
                return Some(record);
            }
            let Reverse((arrival, a)) = self.heap.pop()?;
            self.step(a, arrival);
        }
    }
}
