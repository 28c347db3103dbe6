//! Seeded generator of realistic fleet streams: what a fleet of flowgraph agents would publish,
//! in the order a Kafka consumer would read it.
//!
//! ```text
//!  FleetProfile + seed ──> fleet: nodes (agents), services (Zipf popularity), pods, processes,
//!                                 host processes, external endpoints
//!                     ──> per agent and export period (10 s): tick (restarts, label changes,
//!                         pool traffic, short connections, due names), then one batch:
//!                         process/name records, one conn_stats per live key, progress
//!                     ──> batches cut in chunks, merged by arrival time (agent phase + bounded
//!                         delay) ──> emit(Record)
//! ```
//!
//! The stream follows Pixie's `conn_stats` semantics (DESIGN.md): cumulative counters per key
//! `(upid, remote_addr, remote_port, trace_role)`, one sample per live key per period, both
//! sides of in-fleet connections (the server side with `remote_port` 0 and the client's pod IP),
//! a process record for every upid at or before its first sample, names that show up late or
//! never, and a progress record per agent and period even when the agent is idle.
//!
//! Determinism: one [`rand_chacha::ChaCha8Rng`] seeded from the seed drives everything, state
//! lives in vectors and B-trees only, so a seed and a profile give the same record sequence on
//! every machine. Memory is proportional to the live keys (Large, a million of them: about
//! 340 MB), never to the stream's length; Large generates in about 5 s on one core.
//!
//! ```
//! use flowgraph_benches::{generate, Size};
//! let mut n = 0;
//! generate(&Size::Smoke.profile(), 7, |_record| n += 1);
//! assert!(n > 10_000);
//! ```

#![deny(missing_docs)]

pub mod baseline;
mod catalog;
mod engine;

pub use engine::Generator;

use flowgraph_schema::{EventTime, Record, AGENT_PROGRESS_PERIOD_NS, MIN_AGENT_PROGRESS_PERIOD_NS};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One export period in nanoseconds: Pixie's (and the agent's) 10 s.
pub const EXPORT_PERIOD_NS: u64 = 10_000_000_000;

/// Canned fleet sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Size {
    /// About 20,000 records over 7.5 minutes, 6 nodes, 16 services: milliseconds of work, for CI.
    Smoke,
    /// About 20,000 records over 10 minutes, 4 nodes, 30 services: the terminal demo. Sized for a
    /// readable graph (about 100 edges by pod, 70-100 by service or namespace) rather than for
    /// volume: every in-fleet connection shows from both sides (client and server rows).
    Demo,
    /// About 1,000,000 records over 100 s, 60 nodes, 200 services, about 100,000 live keys.
    Medium,
    /// About 20,000,000 records over 200 s, 250 nodes, 580 services, about 1,000,000 live keys.
    Large,
}

impl Size {
    /// Every size, smallest first.
    pub const ALL: [Size; 4] = [Size::Smoke, Size::Demo, Size::Medium, Size::Large];

    /// The size's name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Size::Smoke => "smoke",
            Size::Demo => "demo",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }

    /// The fleet profile of this size.
    pub fn profile(self) -> FleetProfile {
        let base = FleetProfile::default();
        match self {
            Size::Smoke => FleetProfile {
                nodes: 6,
                services: 16,
                replicas_max: 4,
                store_replicas_max: 2,
                workers_max: 6,
                deps_max: 3,
                short_conns_per_proc: 1.0,
                periods: 45,
                ..base
            },
            Size::Demo => FleetProfile {
                nodes: 4,
                services: 30,
                replicas_max: 2,
                store_replicas_max: 2,
                workers_max: 12,
                deps_max: 2,
                cluster_ip_fraction: 0.9,
                short_conns_per_proc: 2.0,
                label_change_prob: 0.0005,
                internet_clients: 3,
                periods: 60,
                ..base
            },
            Size::Medium => FleetProfile {
                nodes: 60,
                services: 200,
                replicas_max: 30,
                store_replicas_max: 12,
                workers_max: 4,
                deps_max: 6,
                max_backends: 24,
                pool_max: 8,
                cluster_ip_fraction: 0.1,
                internet_clients: 60,
                periods: 10,
                restart_prob: 0.001,
                label_change_prob: 0.0005,
                batch_records: 1000,
                ..base
            },
            Size::Large => FleetProfile {
                nodes: 250,
                services: 580,
                replicas_max: 60,
                store_replicas_max: 24,
                workers_max: 4,
                deps_max: 6,
                max_backends: 40,
                pool_max: 8,
                cluster_ip_fraction: 0.1,
                internet_clients: 200,
                periods: 20,
                restart_prob: 0.0005,
                label_change_prob: 0.0002,
                batch_records: 2000,
                ..base
            },
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A size name that is not one of `smoke`, `demo`, `medium`, `large`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSizeError {
    text: String,
}

impl fmt::Display for ParseSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown size {:?} (expected smoke, demo, medium or large)", self.text)
    }
}

impl std::error::Error for ParseSizeError {}

impl FromStr for Size {
    type Err = ParseSizeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Size::ALL
            .into_iter()
            .find(|size| size.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| ParseSizeError { text: text.chars().take(64).collect() })
    }
}

/// The knobs of a generated fleet. [`Size::profile`] gives tuned sets; start from one and
/// change fields with struct update syntax. Out-of-range values are clamped by the generator
/// (see [`FleetProfile::validate`] to reject them instead).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetProfile {
    /// Nodes, one agent each (asid 1..=nodes); each also runs sshd, containerd, kubelet and
    /// node-exporter as host processes (no pod).
    pub nodes: u32,
    /// Services. The 30 archetypes (ingress, shop, payments, identity, data stores, monitoring,
    /// ...) repeat in further namespaces (`shop-2`, ...) past 30.
    pub services: u32,
    /// Application services run 1..=replicas_max pods.
    pub replicas_max: u32,
    /// Stores (StatefulSets: postgres-0, ...) run 1..=store_replicas_max pods.
    pub store_replicas_max: u32,
    /// Pre-fork services (gunicorn, nginx, postgres) run 2..=workers_max processes per pod,
    /// each with its own upid and connections.
    pub workers_max: u32,
    /// Application services call 1..=deps_max other services, drawn by Zipf popularity.
    pub deps_max: u32,
    /// Zipf exponent of service (and external endpoint) popularity as destinations.
    pub zipf_exponent: f64,
    /// A client that balances on its own side keeps pools to at most this many pods of each
    /// dependency (one connection key per pod IP).
    pub max_backends: u32,
    /// Connections per pool (one key): 1..=pool_max, counted in conn_open/conn_active.
    pub pool_max: u32,
    /// Fraction of client services that connect through the service's ClusterIP (the key's
    /// remote_addr is then the service IP) instead of pod IPs.
    pub cluster_ip_fraction: f64,
    /// Fraction of services reached over IPv6 (their pods' fd00:10:244::/48 addresses).
    pub ipv6_service_fraction: f64,
    /// Probability that an application service also calls 1-2 external endpoints.
    pub external_dep_prob: f64,
    /// Mean short connections (opened and closed within one or two periods) per client
    /// process and period.
    pub short_conns_per_proc: f64,
    /// Mean connections from internet clients per ingress process and period.
    pub ingress_conns_per_proc: f64,
    /// Distinct internet client addresses (Zipf popularity) the ingress sees, never named.
    pub internet_clients: u32,
    /// Median bytes per period (sent plus received) of a pool; rates are log-normal.
    pub pool_rate_median_bytes: f64,
    /// Sigma of the log-normal pool rates: the tail's heaviness (2.0: the top 1% of pools
    /// move about 100 times the median).
    pub pool_rate_sigma: f64,
    /// Probability per process and period that it restarts (new upid, its keys stop).
    pub restart_prob: f64,
    /// Probability per pod process and period that its service label changes
    /// (`ns/svc` <-> `ns/svc-canary`: a new process record for the same upid).
    pub label_change_prob: f64,
    /// Pod and service IP names are published 0..=name_lag_periods periods after the start
    /// (most at once); named external endpoints up to this long after their first sample.
    pub name_lag_periods: u32,
    /// Export periods generated (the stream spans periods × export_period_ns of event time).
    pub periods: u32,
    /// Export period in event-time nanoseconds.
    pub export_period_ns: u64,
    /// How often each agent reports progress between its exports, as `flowgraph agent
    /// --progress-period` does (0: with exports only; at least 100 ms otherwise). The reports
    /// of a period follow its export's last record; before an agent's first export they start
    /// within one progress period of the stream's start (the fleet was already running);
    /// after its last export they go on until the fleet's last export, the stream's last
    /// event time.
    pub progress_period_ns: u64,
    /// Largest arrival delay of a record after its event time: the stream's disorder bound.
    pub max_delay_ns: u64,
    /// Event time of the first period (ns since the Unix epoch).
    pub start_time_ns: EventTime,
    /// Records per chunk (a Kafka message); agents' chunks interleave in arrival order.
    pub batch_records: u32,
}

impl Default for FleetProfile {
    /// A small fleet (4 nodes, 14 services, 30 periods) with the rates every size starts from.
    fn default() -> Self {
        FleetProfile {
            nodes: 4,
            services: 14,
            replicas_max: 2,
            store_replicas_max: 2,
            workers_max: 3,
            deps_max: 3,
            zipf_exponent: 1.1,
            max_backends: 4,
            pool_max: 4,
            cluster_ip_fraction: 0.4,
            ipv6_service_fraction: 0.15,
            external_dep_prob: 0.35,
            short_conns_per_proc: 0.6,
            ingress_conns_per_proc: 3.0,
            internet_clients: 6,
            pool_rate_median_bytes: 48_000.0,
            pool_rate_sigma: 2.0,
            restart_prob: 0.002,
            label_change_prob: 0.001,
            name_lag_periods: 4,
            periods: 30,
            export_period_ns: EXPORT_PERIOD_NS,
            progress_period_ns: AGENT_PROGRESS_PERIOD_NS,
            max_delay_ns: 3_000_000_000,
            // 2024-06-01T00:00:00Z
            start_time_ns: 1_717_200_000_000_000_000,
            batch_records: 200,
        }
    }
}

/// A profile value out of its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fleet profile field `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ProfileError {}

impl FleetProfile {
    /// Checks every field's range; the generator clamps instead of failing.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let err = |field, message: &str| Err(ProfileError { field, message: message.to_string() });
        let counts = [
            ("nodes", self.nodes, 1, 8192),
            ("services", self.services, 1, 100_000),
            ("replicas_max", self.replicas_max, 1, 500),
            ("store_replicas_max", self.store_replicas_max, 1, 500),
            ("workers_max", self.workers_max, 1, 64),
            ("deps_max", self.deps_max, 1, 64),
            ("max_backends", self.max_backends, 1, 10_000),
            ("pool_max", self.pool_max, 1, 10_000),
            ("periods", self.periods, 1, u32::MAX),
            ("batch_records", self.batch_records, 1, 100_000),
            ("internet_clients", self.internet_clients, 1, 200),
        ];
        for (field, value, lo, hi) in counts {
            if value < lo || value > hi {
                return err(field, &format!("{value} is outside {lo}..={hi}"));
            }
        }
        let probs = [
            ("cluster_ip_fraction", self.cluster_ip_fraction),
            ("ipv6_service_fraction", self.ipv6_service_fraction),
            ("external_dep_prob", self.external_dep_prob),
            ("restart_prob", self.restart_prob),
            ("label_change_prob", self.label_change_prob),
        ];
        for (field, value) in probs {
            if !(0.0..=1.0).contains(&value) {
                return err(field, &format!("{value} is not a probability in 0..=1"));
            }
        }
        let rates = [
            ("zipf_exponent", self.zipf_exponent, 0.0, 10.0),
            ("short_conns_per_proc", self.short_conns_per_proc, 0.0, 1e4),
            ("ingress_conns_per_proc", self.ingress_conns_per_proc, 0.0, 1e4),
            ("pool_rate_median_bytes", self.pool_rate_median_bytes, 1.0, 1e12),
            ("pool_rate_sigma", self.pool_rate_sigma, 0.0, 5.0),
        ];
        for (field, value, lo, hi) in rates {
            if !(lo..=hi).contains(&value) {
                return err(field, &format!("{value} is outside {lo}..={hi}"));
            }
        }
        if self.export_period_ns < 1_000_000 {
            return err("export_period_ns", "must be at least 1 ms");
        }
        if self.progress_period_ns != 0 && self.progress_period_ns < MIN_AGENT_PROGRESS_PERIOD_NS {
            let least_ms = MIN_AGENT_PROGRESS_PERIOD_NS / 1_000_000;
            return err("progress_period_ns", &format!("must be 0 (with exports only) or at least {least_ms} ms"));
        }
        if self.max_delay_ns >= self.export_period_ns {
            return err("max_delay_ns", "must be shorter than export_period_ns");
        }
        let span = u64::from(self.periods).checked_mul(self.export_period_ns);
        if span
            .and_then(|span| span.checked_add(self.start_time_ns))
            .and_then(|end| end.checked_add(self.export_period_ns))
            .is_none()
        {
            return err("periods", "the stream would end past the year 2554");
        }
        Ok(())
    }

    /// The profile with every field forced into its valid range.
    pub fn clamped(&self) -> FleetProfile {
        let prob = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        let range = |v: f64, lo: f64, hi: f64| if v.is_nan() { lo } else { v.clamp(lo, hi) };
        let export_period_ns = self.export_period_ns.max(1_000_000);
        let start_time_ns = self.start_time_ns.min(u64::MAX / 2);
        let max_periods = ((u64::MAX / 2 - start_time_ns) / export_period_ns).saturating_sub(2);
        FleetProfile {
            nodes: self.nodes.clamp(1, 8192),
            services: self.services.clamp(1, 100_000),
            replicas_max: self.replicas_max.clamp(1, 500),
            store_replicas_max: self.store_replicas_max.clamp(1, 500),
            workers_max: self.workers_max.clamp(1, 64),
            deps_max: self.deps_max.clamp(1, 64),
            zipf_exponent: range(self.zipf_exponent, 0.0, 10.0),
            max_backends: self.max_backends.clamp(1, 10_000),
            pool_max: self.pool_max.clamp(1, 10_000),
            cluster_ip_fraction: prob(self.cluster_ip_fraction),
            ipv6_service_fraction: prob(self.ipv6_service_fraction),
            external_dep_prob: prob(self.external_dep_prob),
            short_conns_per_proc: range(self.short_conns_per_proc, 0.0, 1e4),
            ingress_conns_per_proc: range(self.ingress_conns_per_proc, 0.0, 1e4),
            internet_clients: self.internet_clients.clamp(1, 200),
            pool_rate_median_bytes: range(self.pool_rate_median_bytes, 1.0, 1e12),
            pool_rate_sigma: range(self.pool_rate_sigma, 0.0, 5.0),
            restart_prob: prob(self.restart_prob),
            label_change_prob: prob(self.label_change_prob),
            name_lag_periods: self.name_lag_periods.min(1_000_000),
            periods: self.periods.clamp(1, u32::try_from(max_periods).unwrap_or(u32::MAX).max(1)),
            export_period_ns,
            progress_period_ns: match self.progress_period_ns {
                0 => 0,
                period => period.max(MIN_AGENT_PROGRESS_PERIOD_NS),
            },
            max_delay_ns: self.max_delay_ns.min(export_period_ns - 1),
            start_time_ns,
            batch_records: self.batch_records.clamp(1, 100_000),
        }
    }
}

/// Generates the stream of `profile` with `seed`, calling `emit` with each record in arrival
/// order. Deterministic: the same profile and seed give the same sequence.
pub fn generate(profile: &FleetProfile, seed: u64, emit: impl FnMut(Record)) {
    Generator::new(profile, seed).for_each(emit);
}

/// Counts describing a generated stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenSummary {
    /// Records of every kind.
    pub records: u64,
    /// conn_stats records.
    pub conn_stats: u64,
    /// process records.
    pub processes: u64,
    /// name records.
    pub names: u64,
    /// progress records.
    pub progress: u64,
    /// container (Kubernetes metadata) records; the generator makes none.
    pub containers: u64,
    /// Most conn_stats samples in one export period: the peak number of live keys.
    pub live_keys_max: u64,
    /// Agents (nodes).
    pub agents: u32,
    /// Event time from the earliest to the latest record, in ns.
    pub span_ns: u64,
}

/// Generates the stream and counts it (no record is kept).
pub fn summary(profile: &FleetProfile, seed: u64) -> GenSummary {
    let profile = profile.clamped();
    let mut out = GenSummary { agents: profile.nodes, ..GenSummary::default() };
    let (mut lo, mut hi) = (u64::MAX, 0);
    let mut per_period: BTreeMap<u64, u64> = BTreeMap::new();
    generate(&profile, seed, |record| {
        out.records += 1;
        let time = record.time();
        lo = lo.min(time);
        hi = hi.max(time);
        match record {
            Record::ConnStats(_) => {
                out.conn_stats += 1;
                let period = time.saturating_sub(profile.start_time_ns) / profile.export_period_ns;
                *per_period.entry(period).or_default() += 1;
            }
            Record::Process(_) => out.processes += 1,
            Record::Name(_) => out.names += 1,
            Record::Progress(_) => out.progress += 1,
            Record::Container(_) => out.containers += 1,
        }
    });
    out.live_keys_max = per_period.values().copied().max().unwrap_or(0);
    out.span_ns = hi.saturating_sub(lo);
    out
}

#[cfg(test)]
mod tests;
