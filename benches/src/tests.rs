//! Properties of generated streams: determinism, Pixie conn_stats semantics, arrival order.

use super::*;
use flowgraph_schema::{binary, ConnStats, TraceRole, Upid};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

const SECOND: u64 = 1_000_000_000;

fn collect(profile: &FleetProfile, seed: u64) -> Vec<Record> {
    let mut out = Vec::new();
    generate(profile, seed, |record| out.push(record));
    out
}

/// FNV-1a over the binary encoding, in frames of 1000 records.
fn fingerprint(records: &[Record]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut frame = Vec::new();
    for chunk in records.chunks(1000) {
        frame.clear();
        binary::encode_frame(chunk, &mut frame);
        for byte in &frame {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

type KeyId = (Upid, IpAddr, u16, TraceRole);

fn key_of(c: &ConnStats) -> KeyId {
    (c.upid, c.remote_addr, c.remote_port, c.trace_role)
}

/// Every key's samples, in event-time order.
fn samples_by_key(records: &[Record]) -> BTreeMap<KeyId, Vec<&ConnStats>> {
    let mut by_key: BTreeMap<KeyId, Vec<&ConnStats>> = BTreeMap::new();
    for record in records {
        if let Record::ConnStats(c) = record {
            by_key.entry(key_of(c)).or_default().push(c);
        }
    }
    for samples in by_key.values_mut() {
        samples.sort_by_key(|c| c.time_);
    }
    by_key
}

fn smoke() -> (FleetProfile, Vec<Record>) {
    let profile = Size::Smoke.profile();
    let records = collect(&profile, 42);
    (profile, records)
}

#[test]
fn sizes_parse_and_print() {
    for size in Size::ALL {
        assert_eq!(size.to_string().parse::<Size>(), Ok(size));
        assert_eq!(size.profile().validate(), Ok(()), "{size}");
    }
    assert_eq!("Demo".parse::<Size>(), Ok(Size::Demo));
    assert!("huge".parse::<Size>().is_err());
}

#[test]
fn out_of_range_profiles_are_clamped_not_fatal() {
    let wild = FleetProfile {
        nodes: 0,
        services: 0,
        replicas_max: 0,
        zipf_exponent: f64::NAN,
        restart_prob: 7.0,
        pool_rate_sigma: -1.0,
        short_conns_per_proc: f64::INFINITY,
        max_delay_ns: u64::MAX,
        periods: 3,
        batch_records: 0,
        ..FleetProfile::default()
    };
    assert!(wild.validate().is_err());
    let s = summary(&wild, 1);
    assert_eq!(s.agents, 1);
    // One report per export (3), and nine between each export and the next (10 s, 1 s); one
    // agent, so none after its last export (the stream's end).
    assert_eq!(s.progress, 3 + 2 * 9);
    // A progress period under 100 ms is an error, and clamped to 100 ms; 0 turns reports
    // between exports off.
    let hasty = FleetProfile { progress_period_ns: 1, ..FleetProfile::default() };
    assert!(hasty.validate().is_err());
    assert_eq!(hasty.clamped().progress_period_ns, 100_000_000);
    let quiet = FleetProfile { progress_period_ns: 0, periods: 3, ..FleetProfile::default() };
    assert!(quiet.validate().is_ok());
    assert_eq!(summary(&quiet, 1).progress, 3 * u64::from(quiet.nodes));
}

#[test]
fn same_seed_same_stream_other_seed_other_stream() {
    let profile = Size::Smoke.profile();
    let a = collect(&profile, 42);
    let b = collect(&profile, 42);
    let c = collect(&profile, 43);
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_eq!(a, b);
    assert_ne!(fingerprint(&a), fingerprint(&c));
    // The iterator is the same stream.
    let pulled: Vec<Record> = Generator::new(&profile, 42).collect();
    assert_eq!(fingerprint(&pulled), fingerprint(&a));
}

#[test]
fn counters_are_cumulative_per_key() {
    let (_, records) = smoke();
    let mut closed_keys = 0;
    for (key, samples) in samples_by_key(&records) {
        for c in &samples {
            assert_eq!(c.conn_active + c.conn_close, c.conn_open, "active = open - close for {key:?}");
        }
        for pair in samples.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(a.time_ < b.time_, "two samples of {key:?} at one time");
            assert!(
                b.bytes_sent >= a.bytes_sent
                    && b.bytes_recv >= a.bytes_recv
                    && b.conn_open >= a.conn_open
                    && b.conn_close >= a.conn_close,
                "counters went down for {key:?}: {a:?} -> {b:?}"
            );
            if a.conn_active == 0 {
                // A key that reported its last connection closed stops, unless it reopens.
                assert!(b.conn_open > a.conn_open, "{key:?} sampled again after closing");
            }
        }
        if samples.last().is_some_and(|c| c.conn_active == 0 && c.conn_close > 0) {
            closed_keys += 1;
        }
    }
    assert!(closed_keys > 50, "only {closed_keys} keys closed");
}

#[test]
fn every_upid_is_described_at_or_before_its_first_sample() {
    let (_, records) = smoke();
    let mut described: BTreeMap<Upid, u64> = BTreeMap::new();
    for record in &records {
        if let Record::Process(p) = record {
            let t = described.entry(p.upid).or_insert(p.time_);
            *t = (*t).min(p.time_);
        }
    }
    for record in &records {
        if let Record::ConnStats(c) = record {
            let Some(&t) = described.get(&c.upid) else {
                panic!("no process record for {}", c.upid);
            };
            assert!(t <= c.time_, "process record for {} after its sample", c.upid);
        }
    }
}

#[test]
fn every_agent_reports_progress_every_period() {
    let (profile, records) = smoke();
    let mut progress: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut sample_times: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for record in &records {
        match record {
            Record::Progress(p) => progress.entry(p.source.clone()).or_default().push(p.time_),
            Record::ConnStats(c) => {
                sample_times.entry(c.upid.asid).or_default().insert(c.time_);
            }
            _ => {}
        }
    }
    assert_eq!(progress.len(), profile.nodes as usize);
    let (export, report) = (profile.export_period_ns, profile.progress_period_ns);
    assert!(report > 0 && report < export, "the smoke profile reports between exports");
    let reports_between = (export - 1) / report;
    // An agent's exports are its reports a whole number of periods after its first export,
    // the time of its first samples (its reports before that are the fleet running before
    // the recording began).
    let exports_of = |asid: u32, times: &[u64]| -> Vec<u64> {
        let first = *sample_times[&asid].first().unwrap();
        times.iter().copied().filter(|t| *t >= first && (t - first).is_multiple_of(export)).collect()
    };
    let stream_end = (1..=profile.nodes)
        .map(|asid| *exports_of(asid, &progress[&format!("agent-{asid}")]).last().unwrap())
        .max()
        .unwrap();
    for asid in 1..=profile.nodes {
        let times = &progress[&format!("agent-{asid}")];
        let exports = exports_of(asid, times);
        assert_eq!(exports.len(), profile.periods as usize);
        for pair in exports.windows(2) {
            assert_eq!(pair[1] - pair[0], export);
        }
        // Between two exports, one report every progress period; after the last export, the
        // same until the stream's end (the fleet's last export).
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap == report || gap == export - reports_between * report, "agent {asid}: reports {pair:?}");
        }
        let last = *times.last().unwrap();
        assert!(
            last == stream_end || (last < stream_end && last + report >= stream_end),
            "agent {asid} stops at {last}"
        );
        // Heard from within one progress period of the stream's start, before its first
        // export, on the cadence that leads to it.
        let start = profile.start_time_ns;
        assert!(times[0] >= start && times[0] < start + report, "agent {asid} first heard at {}", times[0] - start);
        assert!(exports[0] - times[0] < export && (exports[0] - times[0]).is_multiple_of(report));
        // Samples are stamped at the agent's export instants, each covered by its progress.
        for t in sample_times.get(&asid).into_iter().flatten() {
            assert!(exports.binary_search(t).is_ok(), "agent {asid} sample at {t}");
        }
    }
    // Nothing of an agent arrives after its progress for that time.
    let mut watermark: BTreeMap<u32, u64> = BTreeMap::new();
    for record in &records {
        let asid = match record {
            Record::ConnStats(c) => c.upid.asid,
            Record::Process(p) => p.upid.asid,
            Record::Progress(p) => {
                let asid = p.source.trim_start_matches("agent-").parse().unwrap_or(0);
                watermark.insert(asid, p.time_);
                continue;
            }
            Record::Name(_) | Record::Container(_) => continue,
        };
        if let Some(&w) = watermark.get(&asid) {
            assert!(record.time() > w, "agent {asid} sent {record:?} after progress {w}");
        }
    }
}

#[test]
fn arrival_disorder_is_bounded() {
    let (profile, records) = smoke();
    let mut max_seen = 0;
    let mut late = 0;
    for record in &records {
        let t = record.time();
        assert!(t + 15 * SECOND >= max_seen, "{record:?} is more than 15 s behind");
        assert!(t + profile.max_delay_ns >= max_seen);
        if t < max_seen {
            late += 1;
        }
        max_seen = max_seen.max(t);
    }
    // Agents interleave: plenty of records are behind the newest one seen.
    assert!(late > records.len() / 20, "only {late} out-of-order records");
}

#[test]
fn smoke_size_is_in_range() {
    let started = Instant::now();
    let s = summary(&Size::Smoke.profile(), 42);
    println!("smoke: {s:?} in {:?}", started.elapsed());
    assert!((15_000..=30_000).contains(&s.records), "{s:?}");
}

#[test]
fn stream_has_the_features_of_a_real_fleet() {
    let (profile, records) = smoke();
    let in_fleet = |a: &IpAddr| match a {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.segments()[0] == 0xfd00,
    };
    let mut processes: BTreeMap<Upid, Vec<&flowgraph_schema::Process>> = BTreeMap::new();
    let mut names: BTreeMap<IpAddr, (u64, &str)> = BTreeMap::new();
    let mut first_sample: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let (mut clients, mut servers, mut v6, mut host_samples, mut short) = (0, 0, 0, 0, 0);
    for record in &records {
        match record {
            Record::Process(p) => processes.entry(p.upid).or_default().push(p),
            Record::Name(n) => {
                names.entry(n.addr).or_insert((n.time_, &n.name));
            }
            Record::ConnStats(c) => {
                let first = first_sample.entry(c.remote_addr).or_insert(c.time_);
                *first = (*first).min(c.time_);
                match c.trace_role {
                    TraceRole::Client => {
                        clients += 1;
                        assert_ne!(c.remote_port, 0);
                    }
                    TraceRole::Server => {
                        servers += 1;
                        assert_eq!(c.remote_port, 0);
                    }
                    TraceRole::Unknown => panic!("unknown role"),
                }
                v6 += usize::from(c.remote_addr.is_ipv6());
                short += usize::from(c.conn_open == 1 && c.conn_close == 1);
            }
            Record::Progress(_) => {}
            Record::Container(_) => panic!("the generator makes no container records"),
        }
    }
    for record in &records {
        if let Record::ConnStats(c) = record {
            if processes[&c.upid][0].pod.is_empty() {
                host_samples += 1;
            }
        }
    }
    assert!(clients > 1000 && servers > 1000, "{clients} client, {servers} server samples");
    assert!(v6 > 100, "{v6} IPv6 samples");
    assert!(host_samples > 100, "{host_samples} host-process samples");
    assert!(short > 50, "{short} short-connection samples");

    // Process records: pods and host processes, restarts (same or new pid), label changes.
    let pods: BTreeSet<&str> = processes.values().map(|p| p[0].pod.as_str()).collect();
    assert!(pods.contains(""), "no host process");
    for p in processes.values().flatten() {
        assert_eq!(p.container.is_empty(), p.pod.is_empty());
        assert!(p.container.is_empty() || p.container.len() == 64);
        assert!(!p.host.is_empty() && !p.node.is_empty() && !p.comm.is_empty());
        assert!(p.comm.len() <= 15);
    }
    let relabelled = processes.values().filter(|p| p.iter().any(|q| q.service != p[0].service)).count();
    let mut starts: BTreeMap<(u32, &str, &str), BTreeSet<u64>> = BTreeMap::new();
    for p in processes.values() {
        if !p[0].pod.is_empty() {
            starts
                .entry((p[0].upid.asid, p[0].pod.as_str(), p[0].cmdline.as_str()))
                .or_default()
                .insert(p[0].upid.start_ticks);
        }
    }
    let late_processes =
        processes.values().filter(|p| p[0].time_ > profile.start_time_ns + profile.export_period_ns).count();
    println!("processes {} (started during the run: {late_processes}), relabelled {relabelled}", processes.len());
    assert!(late_processes >= 2, "no restarts");
    assert!(relabelled >= 1, "no label change");
    assert!(starts.values().any(|s| s.len() > 1));

    // Names: pods and services under their Kubernetes names; externals late or never.
    let pod_names: BTreeSet<&str> = processes.values().flatten().map(|p| p.pod.as_str()).collect();
    let mut named_late = 0;
    let mut never_named = 0;
    for (addr, first) in &first_sample {
        match names.get(addr) {
            Some((t, name)) if in_fleet(addr) => {
                assert!(name.contains('/') || name.ends_with(".internal"), "{addr} {name}");
                let _ = t;
            }
            Some((t, _)) => named_late += usize::from(t > first),
            None => never_named += usize::from(!in_fleet(addr)),
        }
    }
    for (addr, (_, name)) in &names {
        if let IpAddr::V4(v4) = addr {
            if v4.octets()[..2] == [10, 64] {
                assert!(pod_names.contains(name), "{addr} named {name}, no such pod");
            }
        }
    }
    assert!(named_late >= 1, "no external named after its first sample");
    assert!(never_named >= 1, "every external address got a name");
}

/// The graph of DESIGN.md (mode total) at `at`: its edges for one grouping.
fn edges(records: &[Record], at: u64, window: u64, group_by: &str) -> BTreeSet<(String, String)> {
    let mut process: BTreeMap<Upid, (u64, &flowgraph_schema::Process)> = BTreeMap::new();
    let mut names: BTreeMap<IpAddr, (u64, &str)> = BTreeMap::new();
    let mut rows = BTreeSet::new();
    for record in records {
        match record {
            Record::Process(p) if p.time_ <= at => {
                let e = process.entry(p.upid).or_insert((p.time_, p));
                if p.time_ >= e.0 {
                    *e = (p.time_, p);
                }
            }
            Record::Name(n) if n.time_ <= at => {
                let e = names.entry(n.addr).or_insert((n.time_, &n.name));
                if n.time_ >= e.0 {
                    *e = (n.time_, &n.name);
                }
            }
            Record::ConnStats(c) if c.time_ <= at && c.time_ + window > at => {
                rows.insert((c.upid, c.remote_addr));
            }
            _ => {}
        }
    }
    rows.into_iter()
        .filter_map(|(upid, addr)| {
            let p = process.get(&upid)?.1;
            let from = match group_by {
                "pod" => &p.pod,
                "service" => &p.service,
                "namespace" => &p.namespace,
                "node" => &p.node,
                _ => &p.host,
            };
            let to = names.get(&addr).map_or(addr.to_string(), |n| n.1.to_string());
            (!from.is_empty()).then(|| (from.clone(), to))
        })
        .collect()
}

#[test]
fn demo_graph_is_readable() {
    let profile = Size::Demo.profile();
    let records = collect(&profile, 1);
    let s = summary(&profile, 1);
    println!("demo: {s:?}");
    let end = records.iter().map(Record::time).max().unwrap_or(0);
    for group_by in ["pod", "service", "namespace", "node"] {
        let n = edges(&records, end, 300 * SECOND, group_by).len();
        println!("demo edges by {group_by}: {n}");
        assert!(n >= 5, "{group_by}: {n}");
    }
    let services = edges(&records, end, 300 * SECOND, "service");
    for (from, to) in services.iter().take(80) {
        println!("  {from} -> {to}");
    }
    assert!((10_000..=40_000).contains(&s.records), "{s:?}");
}
