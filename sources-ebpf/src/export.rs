//! The exporter: per-socket samples in, Pixie-style records out, once per export period.
//!
//! ```text
//!  SocketSample (per cookie, cumulative) ──► key (upid, remote_addr, remote_port, role)
//!      bytes: the key's counters grow by each socket's growth since the last period, so a key
//!             stays cumulative across the many connections it aggregates (and across closes)
//!      conn_open / conn_close / conn_active: sockets seen / destroyed / alive for the key
//!  ──► conn_stats for every key with a socket seen this period (a destroyed socket's final
//!      counters included), a process record for every upid reported, and a progress record
//! ```
//!
//! Server-side keys have remote_port 0, as in Pixie. A key is remembered for `key_retention`
//! after its last socket closed, so a process that reconnects to the same peer continues its
//! counters instead of restarting them at zero (which downstream would reject as decreasing).

use crate::{KernelProcess, LossCounters, SocketSample};
use flowgraph_schema::{ConnStats, Process, Progress, Record, TraceRole, Upid};
use rustc_hash::FxHashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    upid: Upid,
    remote_addr: IpAddr,
    remote_port: u16,
    role: TraceRole,
}

#[derive(Debug, Default)]
struct KeyState {
    bytes_sent: u64,
    bytes_recv: u64,
    conn_open: u64,
    conn_close: u64,
    /// Event time of the last period in which a socket of the key was seen.
    last_seen: u64,
}

#[derive(Debug)]
struct SocketState {
    sent: u64,
    recv: u64,
}

/// Turns socket samples into records. One per agent.
#[derive(Debug)]
pub struct Exporter {
    agent_id: u32,
    source: String,
    host: String,
    /// The node name process records carry: the host name unless told otherwise (on
    /// Kubernetes, the pod's spec.nodeName), so `group_by node` works without the API.
    node: String,
    key_retention_ns: u64,
    keys: FxHashMap<Key, KeyState>,
    sockets: FxHashMap<u64, SocketState>,
    processes: FxHashMap<Upid, Process>,
}

impl Exporter {
    /// Sets the node name of the process records (default: the host name).
    pub fn set_node(&mut self, node: String) {
        self.node = node;
    }

    /// An exporter for agent `agent_id` on `host`.
    pub fn new(agent_id: u32, host: String, key_retention_ns: u64) -> Self {
        Exporter {
            agent_id,
            source: format!("agent-{agent_id}"),
            node: host.clone(),
            host,
            key_retention_ns,
            keys: FxHashMap::default(),
            sockets: FxHashMap::default(),
            processes: FxHashMap::default(),
        }
    }

    /// Connection keys remembered.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// This agent's progress at `now`: it sends no record older than `now` any more. Every
    /// export ends with one; between exports the agent sends them on their own, so that a
    /// pipeline's frontier need not wait a whole export period for this agent.
    pub fn progress(&self, now: u64, losses: &LossCounters) -> Record {
        Record::Progress(Progress {
            time_: now,
            source: self.source.clone(),
            losses: losses.named().map(|(name, value)| (name.to_string(), value)).collect(),
        })
    }

    /// One export period: the records for the samples collected at `now` (wall-clock ns).
    /// `kernel` tells what the kernel recorded of a (pid, start ticks) that /proc no longer
    /// shows (a process that lived less than a period).
    pub fn export(
        &mut self,
        samples: &[SocketSample],
        now: u64,
        kernel: &dyn Fn(u32, u64) -> Option<KernelProcess>,
        losses: &LossCounters,
        out: &mut Vec<Record>,
    ) {
        let mut reported: Vec<Key> = Vec::new();
        for sample in samples {
            if sample.pid == 0 {
                // A server socket that has moved no bytes yet: its owner is not known. If it
                // is closed, it is never reported; the kernel side counts those
                // (LossCounters::closed_without_owner, in the progress record's losses).
                continue;
            }
            let upid = Upid { asid: self.agent_id, pid: sample.pid, start_ticks: sample.start_time_ticks };
            let remote_addr = sample.remote.ip().to_canonical();
            let key = Key {
                upid,
                remote_addr,
                remote_port: if sample.role == TraceRole::Server { 0 } else { sample.remote.port() },
                role: sample.role,
            };
            let state = self.keys.entry(key).or_default();
            let socket = self.sockets.entry(sample.cookie).or_insert_with(|| {
                state.conn_open += 1;
                SocketState { sent: 0, recv: 0 }
            });
            // At close, bytes the process read by paths the recv tracepoint misses (splice)
            // join the socket's count, so the final row holds everything it consumed.
            let recv = sample.bytes_recv + sample.recv_unseen;
            state.bytes_sent += sample.bytes_sent.saturating_sub(socket.sent);
            state.bytes_recv += recv.saturating_sub(socket.recv);
            socket.sent = socket.sent.max(sample.bytes_sent);
            socket.recv = socket.recv.max(recv);
            if state.last_seen != now {
                state.last_seen = now;
                reported.push(key);
            }
            if sample.closed {
                state.conn_close += 1;
                self.sockets.remove(&sample.cookie);
            }
        }
        reported.sort_unstable_by_key(|k| (k.upid, k.remote_addr, k.remote_port, u8::from(k.role)));
        let mut upids: Vec<Upid> = reported.iter().map(|k| k.upid).collect();
        upids.dedup();
        for upid in upids {
            let process =
                self.processes.entry(upid).or_insert_with(|| describe_process(upid, &self.host, &self.node, kernel));
            let mut record = process.clone();
            record.time_ = now;
            out.push(Record::Process(Box::new(record)));
        }
        for key in reported {
            let state = &self.keys[&key];
            out.push(Record::ConnStats(ConnStats {
                time_: now,
                upid: key.upid,
                remote_addr: key.remote_addr,
                remote_port: key.remote_port,
                trace_role: key.role,
                conn_open: state.conn_open,
                conn_close: state.conn_close,
                conn_active: state.conn_open - state.conn_close,
                bytes_sent: state.bytes_sent,
                bytes_recv: state.bytes_recv,
            }));
        }
        out.push(self.progress(now, losses));
        // Forget keys idle for the retention, and processes with no key left.
        let horizon = now.saturating_sub(self.key_retention_ns);
        self.keys.retain(|_, s| s.last_seen >= horizon || s.conn_open > s.conn_close);
        let keys = &self.keys;
        if self.processes.len() > keys.len() {
            let live: rustc_hash::FxHashSet<Upid> = keys.keys().map(|k| k.upid).collect();
            self.processes.retain(|upid, _| live.contains(upid));
        }
    }
}

/// What /proc says about a process, if it is still the process of the upid; otherwise what
/// the kernel recorded at its first socket event.
fn describe_process(upid: Upid, host: &str, node: &str, kernel: &dyn Fn(u32, u64) -> Option<KernelProcess>) -> Process {
    let proc_dir = format!("/proc/{}", upid.pid);
    let same_process = std::fs::read_to_string(format!("{proc_dir}/stat")).ok().and_then(|stat| start_ticks(&stat))
        == Some(upid.start_ticks);
    let mut process = Process { time_: 0, upid, host: host.to_string(), node: node.to_string(), ..Default::default() };
    if !same_process {
        // Gone (or its pid reused) before the first export.
        if let Some(seen) = kernel(upid.pid, upid.start_ticks) {
            process.cmdline = seen.cmdline;
            process.comm = seen.comm;
        }
        return process;
    }
    if let Ok(raw) = std::fs::read(format!("{proc_dir}/cmdline")) {
        let args: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        process.cmdline = truncate(args.join(" "));
    }
    if let Ok(comm) = std::fs::read_to_string(format!("{proc_dir}/comm")) {
        process.comm = comm.trim_end().to_string();
    }
    if let Ok(cgroup) = std::fs::read_to_string(format!("{proc_dir}/cgroup")) {
        process.container = container_id(&cgroup).unwrap_or_default();
    }
    process
}

/// Field 22 of /proc/PID/stat, after the parenthesised comm (which may hold spaces).
fn start_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// A container runtime's 64-hex-digit id in a cgroup path (docker, containerd, cri-o).
fn container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        path.split(['/', '-', '.', ':'])
            .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
    })
}

fn truncate(mut text: String) -> String {
    if text.len() > flowgraph_schema::MAX_STRING_LEN {
        let mut end = flowgraph_schema::MAX_STRING_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cookie: u64, sent: u64, recv: u64, closed: bool) -> SocketSample {
        SocketSample {
            cookie,
            pid: 4242,
            start_time_ticks: 77,
            local: "127.0.0.1:5555".parse().unwrap(),
            remote: "10.1.2.3:6379".parse().unwrap(),
            role: TraceRole::Client,
            bytes_sent: sent,
            bytes_recv: recv,
            tcp_bytes_acked: 0,
            tcp_bytes_received: 0,
            tcp_bytes_read: 0,
            recv_unseen: 0,
            established: true,
            tcp_closed: closed,
            closed,
            adopted: false,
            tcp_state: 1,
            foreign_pid: 0,
            open_time_ns: 0,
            close_time_ns: None,
        }
    }

    fn conn(out: &[Record]) -> Vec<(u64, u64, u64, u64, u64)> {
        out.iter()
            .filter_map(|r| match r {
                Record::ConnStats(c) => Some((c.bytes_sent, c.bytes_recv, c.conn_open, c.conn_close, c.conn_active)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_key_stays_cumulative_across_its_connections() {
        let mut exporter = Exporter::new(9, "h".into(), 3_600_000_000_000);
        let mut out = Vec::new();
        exporter.export(&[sample(1, 100, 10, false)], 1, &|_, _| None, &LossCounters::default(), &mut out);
        assert_eq!(conn(&out), vec![(100, 10, 1, 0, 1)]);
        out.clear();
        // The first connection closes at 150/20; a second one to the same peer moves 5/5.
        exporter.export(
            &[sample(1, 150, 20, true), sample(2, 5, 5, false)],
            2,
            &|_, _| None,
            &LossCounters::default(),
            &mut out,
        );
        assert_eq!(conn(&out), vec![(155, 25, 2, 1, 1)]);
        assert!(matches!(out.last(), Some(Record::Progress(p)) if p.source == "agent-9"));
        assert!(out.iter().any(|r| matches!(r, Record::Process(p) if p.upid.pid == 4242)));
    }

    #[test]
    fn unseen_bytes_join_the_final_row_and_unowned_sockets_are_not_reported() {
        let mut exporter = Exporter::new(9, "h".into(), 3_600_000_000_000);
        let mut out = Vec::new();
        exporter.export(&[sample(1, 100, 10, false)], 1, &|_, _| None, &LossCounters::default(), &mut out);
        assert_eq!(conn(&out), vec![(100, 10, 1, 0, 1)]);
        out.clear();
        // Closed: 30 more bytes seen by the tracepoint, 4,000 read by splice (unseen).
        let mut closed = sample(1, 100, 40, true);
        closed.recv_unseen = 4_000;
        // A server socket that closed before any send or receive: no owner, no row.
        let mut unowned = sample(2, 0, 0, true);
        unowned.pid = 0;
        unowned.role = TraceRole::Server;
        let losses = LossCounters { closed_without_owner: 1, recv_unseen_bytes: 4_000, ..Default::default() };
        exporter.export(&[closed, unowned], 2, &|_, _| None, &losses, &mut out);
        assert_eq!(conn(&out), vec![(100, 4_040, 1, 1, 0)]);
        let Some(Record::Progress(progress)) = out.last() else { panic!("no progress record: {out:?}") };
        assert_eq!(progress.losses.get("closed_without_owner"), Some(&1));
        assert_eq!(progress.losses.get("recv_unseen_bytes"), Some(&4_000));
        assert_eq!(progress.losses.get("proc_evicted"), Some(&0));
    }

    #[test]
    fn server_keys_have_port_zero_and_proc_parsing_works() {
        let mut exporter = Exporter::new(1, "h".into(), 1);
        let mut s = sample(3, 1, 1, false);
        s.role = TraceRole::Server;
        let mut out = Vec::new();
        exporter.export(&[s], 5, &|_, _| None, &LossCounters::default(), &mut out);
        assert!(out
            .iter()
            .any(|r| matches!(r, Record::ConnStats(c) if c.remote_port == 0 && c.trace_role == TraceRole::Server)));
        assert_eq!(start_ticks("12 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20"), Some(999));
        let cgroup = "0::/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n";
        assert_eq!(container_id(cgroup).unwrap().len(), 64);
        assert_eq!(container_id("0::/user.slice/user-0.slice/session-1.scope\n"), None);
    }
}
