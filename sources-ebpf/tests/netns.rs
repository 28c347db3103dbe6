//! Real-kernel tests (root) over a veth pair between two network namespaces the test creates:
//! traffic that leaves a namespace through a real (virtual) device, with every send path (send,
//! sendall of a few MB, write, writev, sendmsg with several buffers, sendmmsg, sendfile, splice
//! from a pipe) and every receive path (recv, recvfrom, recvmsg, read, readv, recvmmsg) over
//! IPv4 and IPv6, sendmmsg(2) and recvmmsg(2) on TCP, and many concurrent connections.
//!
//! The agent's programs are global, so they see every namespace; the addresses in its samples
//! are the namespace-local ones (10.200.N.0/24 and fd00:200::/64, which exist only inside the
//! namespaces created here). The peers are Python processes (tests/netns_peer.py) started with
//! `ip netns exec`, which execs them in place: the pid the test spawns is the peer's pid.
//!
//! Each test creates its own pair of namespaces, named after this process's pid and a counter,
//! and deletes them when it ends, also when it fails (a guard's Drop). Namespaces left by an
//! earlier run that was killed (its pid gone) are deleted on the next run.
//!
//! The tests fail, saying why, when not run as root or when `ip` (iproute2) is missing.

mod common;

use common::{agent, collect_until};

use flowgraph_schema::TraceRole;
use flowgraph_sources_ebpf::{Agent, SocketSample};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns_peer.py");
/// Prefix of every namespace these tests create: `fgnetns-PID-N-{srv,cli}`.
const NS_PREFIX: &str = "fgnetns-";

/// Panics unless running as root with `ip` available.
fn preconditions() {
    common::require_root(
        "the netns eBPF tests load programs into the kernel and create network namespaces: they need root",
    );
    ip();
}

/// The `ip` command (iproute2), found on PATH or in the sbin directories.
fn ip() -> &'static str {
    static IP: OnceLock<String> = OnceLock::new();
    IP.get_or_init(|| {
        let ip = common::find_program("ip").unwrap_or_else(|| {
            panic!(
                "the netns tests need the `ip` command from iproute2 to create network namespaces \
                 and a veth pair, and it is not installed: apt-get install iproute2"
            )
        });
        ip.to_string_lossy().into_owned()
    })
}

fn run_ip(args: &[&str]) {
    let out = Command::new(ip()).args(args).output().expect("run ip");
    assert!(out.status.success(), "`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// Deletes namespaces left by earlier runs of these tests whose process is gone.
fn delete_stale_namespaces() {
    let Ok(out) = Command::new(ip()).args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new(ip()).args(["netns", "del", name]).output();
        }
    }
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Netns {
    srv: String,
    cli: String,
    srv_v4: IpAddr,
    cli_v4: IpAddr,
    srv_v6: IpAddr,
    cli_v6: IpAddr,
}

impl Netns {
    /// `subnet` picks 10.200.SUBNET.0/24 (distinct per test, for readability: the namespaces
    /// are separate anyway).
    fn new(subnet: u8) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        delete_stale_namespaces();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{}-{n}", std::process::id());
        let ns = Netns {
            srv: format!("{base}-srv"),
            cli: format!("{base}-cli"),
            srv_v4: format!("10.200.{subnet}.1").parse().unwrap(),
            cli_v4: format!("10.200.{subnet}.2").parse().unwrap(),
            srv_v6: "fd00:200::1".parse().unwrap(),
            cli_v6: "fd00:200::2".parse().unwrap(),
        };
        // From here on, Drop deletes whatever was created.
        run_ip(&["netns", "add", &ns.srv]);
        run_ip(&["netns", "add", &ns.cli]);
        // The veth pair is created inside the server namespace with its peer directly in the
        // client namespace: nothing appears in the host's namespace, even for a moment.
        run_ip(&["-n", &ns.srv, "link", "add", "fg0", "type", "veth", "peer", "name", "fg1", "netns", &ns.cli]);
        for (name, dev, v4, v6) in [(&ns.srv, "fg0", ns.srv_v4, ns.srv_v6), (&ns.cli, "fg1", ns.cli_v4, ns.cli_v6)] {
            run_ip(&["-n", name, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            // nodad: usable at once, no duplicate address detection delay.
            run_ip(&["-n", name, "-6", "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            run_ip(&["-n", name, "link", "set", dev, "up"]);
            run_ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// Starts the peer inside namespace `ns`.
    fn spawn(&self, ns: &str, args: &[&str]) -> Peer {
        let child = Command::new(ip())
            .args(["netns", "exec", ns, common::python(), PEER])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec python3");
        Peer::new(child, args.join(" "))
    }
}

fn peer_cmdline(args: &[&str]) -> String {
    common::peer_cmdline(PEER, args)
}

/// Checks the command line the kernel side recorded for (pid, start).
fn check_cmdline(agent: &Agent, pid: u32, start: u64, want: &str, side: &str) -> Option<String> {
    match agent.process(pid, start) {
        Some(p) if p.cmdline == want => None,
        Some(p) => Some(format!("{side} cmdline {:?} != {want:?}", p.cmdline)),
        None => Some(format!("{side} process {pid} unknown to the kernel side")),
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for name in [&self.srv, &self.cli] {
            let _ = Command::new(ip()).args(["netns", "del", name]).output();
        }
    }
}

/// A peer process; killed on drop unless it was waited for.
struct Peer {
    child: Option<Child>,
    out: BufReader<ChildStdout>,
    what: String,
}

impl Peer {
    fn new(mut child: Child, what: String) -> Peer {
        let out = BufReader::new(child.stdout.take().unwrap());
        Peer { child: Some(child), out, what }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The next line the peer prints, split on whitespace.
    fn line(&mut self) -> Vec<String> {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("peer output");
        assert!(!line.is_empty(), "peer `{}` exited without its output line", self.what);
        line.split_whitespace().map(str::to_string).collect()
    }

    /// Waits (at most 20 s) for a successful exit; returns what it printed after the last
    /// line read.
    fn wait_ok(&mut self) -> String {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut rest = String::new();
                let _ = self.out.read_to_string(&mut rest);
                assert!(status.success(), "peer `{}` failed: {status}", self.what);
                return rest;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("peer `{}` did not finish within 20 s", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How long a test waits for the samples it expects.
const WAIT: Duration = Duration::from_secs(10);

fn closed_of(seen: &HashMap<u64, SocketSample>, pids: &HashSet<u32>) -> usize {
    seen.values().filter(|s| pids.contains(&s.pid) && s.closed).count()
}

struct Transfer {
    v6: bool,
    send: &'static str,
    recv: &'static str,
    bytes: u64,
    reply: u64,
}

/// Runs one transfer: server in the server namespace, client in the client namespace; then
/// checks both sockets as the agent saw them. Returns the mismatches.
fn transfer(agent: &mut Agent, ns: &Netns, t: &Transfer) -> Vec<String> {
    let (srv_ip, cli_ip) = if t.v6 { (ns.srv_v6, ns.cli_v6) } else { (ns.srv_v4, ns.cli_v4) };
    let what = format!("{} -> {} over veth {}", t.send, t.recv, if t.v6 { "IPv6" } else { "IPv4" });
    let (srv_host, bytes, reply) = (srv_ip.to_string(), t.bytes.to_string(), t.reply.to_string());
    let server_args = ["server", &srv_host, t.recv, &bytes, &reply];
    let mut server = ns.spawn(&ns.srv, &server_args);
    let l = server.line();
    let (port, server_pid, server_start): (u16, u32, u64) =
        (l[0].parse().unwrap(), l[1].parse().unwrap(), l[2].parse().unwrap());
    assert_eq!(server_pid, server.pid(), "`ip netns exec` did not exec the peer in place");
    let port_arg = port.to_string();
    let client_args = ["client", &srv_host, &port_arg, t.send, &bytes, &reply];
    let mut client = ns.spawn(&ns.cli, &client_args);
    let l = client.line();
    let (client_pid, client_start): (u32, u64) = (l[0].parse().unwrap(), l[1].parse().unwrap());
    assert_eq!(client_pid, client.pid(), "`ip netns exec` did not exec the peer in place");
    let client_port: u16 = client.line()[0].parse().unwrap();
    client.wait_ok();
    server.wait_ok();

    let pids = HashSet::from([server_pid, client_pid]);
    let mut seen = HashMap::new();
    collect_until(agent, &mut seen, WAIT, |seen| closed_of(seen, &pids) >= 2);
    let clients: Vec<_> = seen.values().filter(|s| s.pid == client_pid).collect();
    let servers: Vec<_> = seen.values().filter(|s| s.pid == server_pid).collect();
    if clients.len() != 1 || servers.len() != 1 {
        return vec![format!(
            "{what}: expected 1 client and 1 server socket, saw {} and {}: {clients:?} {servers:?}",
            clients.len(),
            servers.len()
        )];
    }
    let (c, s) = (clients[0], servers[0]);
    eprintln!("{what}: client {c:?}\n  server {s:?}");
    let mut errors = Vec::new();
    let mut expect = |cond: bool, msg: String| {
        if !cond {
            errors.push(format!("{what}: {msg}"));
        }
    };
    let (srv_addr, cli_addr) = (SocketAddr::new(srv_ip, port), SocketAddr::new(cli_ip, client_port));
    expect(c.role == TraceRole::Client, format!("client role {:?}", c.role));
    expect(c.local == cli_addr, format!("client local {} != {cli_addr}", c.local));
    expect(c.remote == srv_addr, format!("client remote {} != {srv_addr}", c.remote));
    expect(c.bytes_sent == t.bytes, format!("client sent {} != {}", c.bytes_sent, t.bytes));
    expect(c.bytes_recv == t.reply, format!("client recv {} != {}", c.bytes_recv, t.reply));
    expect(c.start_time_ticks == client_start, format!("client start {} != {client_start}", c.start_time_ticks));
    expect(c.closed && !c.adopted, format!("client closed={} adopted={}", c.closed, c.adopted));
    expect(c.foreign_pid == 0, format!("client foreign pid {}", c.foreign_pid));
    expect(s.role == TraceRole::Server, format!("server role {:?}", s.role));
    expect(s.local == srv_addr, format!("server local {} != {srv_addr}", s.local));
    expect(s.remote == cli_addr, format!("server remote {} != {cli_addr}", s.remote));
    expect(s.bytes_recv == t.bytes, format!("server recv {} != {}", s.bytes_recv, t.bytes));
    expect(s.bytes_sent == t.reply, format!("server sent {} != {}", s.bytes_sent, t.reply));
    expect(s.start_time_ticks == server_start, format!("server start {} != {server_start}", s.start_time_ticks));
    expect(s.closed && !s.adopted, format!("server closed={} adopted={}", s.closed, s.adopted));
    expect(s.foreign_pid == 0, format!("server foreign pid {}", s.foreign_pid));
    // The kernel's own counters: payload plus one for the FIN.
    expect(s.tcp_bytes_received == t.bytes + 1, format!("server tcp_bytes_received {}", s.tcp_bytes_received));
    expect(s.tcp_bytes_read == t.bytes + 1, format!("server tcp_bytes_read {}", s.tcp_bytes_read));
    // The reconciliation at close agrees with the tracepoints on every path they see.
    expect(
        c.recv_unseen == 0 && s.recv_unseen == 0,
        format!("recv_unseen client {} server {}", c.recv_unseen, s.recv_unseen),
    );
    for (pid, start, args, side) in
        [(client_pid, client_start, &client_args[..], "client"), (server_pid, server_start, &server_args[..], "server")]
    {
        if let Some(e) = check_cmdline(agent, pid, start, &peer_cmdline(args), side) {
            expect(false, e);
        }
    }
    errors
}

const SENDS: [&str; 8] = ["send", "sendall", "write", "writev", "sendmsg", "sendmmsg", "sendfile", "splice"];
const RECVS: [&str; 6] = ["recv", "recvfrom", "recvmsg", "read", "readv", "recvmmsg"];

/// Known transfers between two namespaces over a veth pair, IPv4 and IPv6, both directions:
/// every send path and every receive path in each family (send i with receive i + 3 x family,
/// so the two families pair them differently), plus a one-byte reply.
#[test]
fn veth_transfers_between_namespaces() {
    preconditions();
    let ns = Netns::new(1);
    let mut agent = agent();
    let mut errors = Vec::new();
    for (family, v6) in [false, true].into_iter().enumerate() {
        for (i, send) in SENDS.into_iter().enumerate() {
            let recv = RECVS[(i + 3 * family) % RECVS.len()];
            // A few MB for sendall, odd sizes elsewhere, replies of a few KB.
            let bytes = if send == "sendall" { 3_000_017 } else { 200_003 + i as u64 * 1_001 };
            let reply = 4_097 + i as u64;
            errors.extend(transfer(&mut agent, &ns, &Transfer { v6, send, recv, bytes, reply }));
        }
        errors.extend(transfer(&mut agent, &ns, &Transfer { v6, send: "send", recv: "recv", bytes: 65_537, reply: 1 }));
    }
    let loss = agent.loss_counters().expect("counters");
    assert_eq!(loss.lossy(), 0, "loss counters moved: {loss:?}");
    assert!(errors.is_empty(), "mismatches:\n{}", errors.join("\n"));
}

/// sendmmsg(2) on TCP: several messages of several iovecs per call, each message one
/// sendmsg for the kernel. (recvmmsg(2) on a TCP socket is exercised by the receive side of
/// `veth_transfers_between_namespaces`: on a stream it reads a few chunks per call, and with
/// MSG_WAITFORONE its later reads may fail with EAGAIN, which must not count.)
#[test]
fn sendmmsg_over_tcp() {
    preconditions();
    let ns = Netns::new(2);
    let mut agent = agent();
    let mut errors = Vec::new();
    for v6 in [false, true] {
        // 1 MB: many calls of 8 messages; 3 bytes: one call, one message of three 1-byte iovecs.
        for (bytes, reply) in [(1_000_033, 77), (131_071, 5), (3, 2)] {
            errors.extend(transfer(&mut agent, &ns, &Transfer { v6, send: "sendmmsg", recv: "recv", bytes, reply }));
        }
    }
    let loss = agent.loss_counters().expect("counters");
    assert_eq!(loss.lossy(), 0, "loss counters moved: {loss:?}");
    assert!(errors.is_empty(), "mismatches:\n{}", errors.join("\n"));
}

/// 50 client processes, all connected before any sends, then all sending at once, each a
/// different byte count, to one threaded server; IPv4 then IPv6.
#[test]
fn concurrent_connections_from_many_processes() {
    preconditions();
    const N: u64 = 50;
    let ns = Netns::new(3);
    let mut agent = agent();
    let dir = std::env::temp_dir().join(format!("fgnetns-{}-conc", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let mut errors = Vec::new();
    for v6 in [false, true] {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let (srv_ip, cli_ip) = if v6 { (ns.srv_v6, ns.cli_v6) } else { (ns.srv_v4, ns.cli_v4) };
        let srv_host = srv_ip.to_string();
        let go = dir.join(format!("go-{fam}"));
        let server_args = ["conc_server", &srv_host, &N.to_string()].map(str::to_string);
        let mut server = ns.spawn(&ns.srv, &server_args.each_ref().map(String::as_str));
        let l = server.line();
        let (port, server_pid, server_start): (u16, u32, u64) =
            (l[0].parse().unwrap(), l[1].parse().unwrap(), l[2].parse().unwrap());
        // Sizes: all different, from 1 byte to a few hundred KB.
        let sizes: Vec<u64> = (0..N).map(|i| 1 + i * i * 97 + i * 1_013).collect();
        let mut clients = Vec::new();
        for size in &sizes {
            let args = ["conc_client", &srv_host, &port.to_string(), &size.to_string(), go.to_str().unwrap()]
                .map(str::to_string);
            let peer = ns.spawn(&ns.cli, &args.each_ref().map(String::as_str));
            clients.push((peer, *size, args));
        }
        // Every client connected: now let them all send at once.
        let mut expected = HashMap::new(); // pid -> (size, local port, start, cmdline)
        for (peer, size, args) in &mut clients {
            let l = peer.line();
            let (pid, start, port): (u32, u64, u16) =
                (l[0].parse().unwrap(), l[1].parse().unwrap(), l[2].parse().unwrap());
            assert_eq!(pid, peer.pid());
            expected.insert(pid, (*size, port, start, peer_cmdline(&args.each_ref().map(String::as_str))));
        }
        std::fs::write(&go, b"").unwrap();
        for (peer, _, _) in &mut clients {
            peer.wait_ok();
        }
        server.wait_ok();
        let mut pids: HashSet<u32> = expected.keys().copied().collect();
        pids.insert(server_pid);
        let mut seen = HashMap::new();
        collect_until(&mut agent, &mut seen, WAIT, |seen| closed_of(seen, &pids) as u64 >= 2 * N);
        let servers: Vec<_> = seen.values().filter(|s| s.pid == server_pid).collect();
        let mut expect = |cond: bool, msg: String| {
            if !cond {
                errors.push(format!("concurrent {fam}: {msg}"));
            }
        };
        expect(servers.len() as u64 == N, format!("{} server sockets, expected {N}", servers.len()));
        let server_cmdline = peer_cmdline(&server_args.each_ref().map(String::as_str));
        if let Some(e) = check_cmdline(&agent, server_pid, server_start, &server_cmdline, "server") {
            expect(false, e);
        }
        let mut counted = Vec::new();
        for (pid, (size, local_port, start, cmdline)) in &expected {
            let reply = size / 10 + 1;
            let mine: Vec<_> = seen.values().filter(|s| s.pid == *pid).collect();
            if mine.len() != 1 {
                expect(false, format!("client pid {pid} ({size} bytes): {} sockets: {mine:?}", mine.len()));
                continue;
            }
            let c = mine[0];
            let cli_addr = SocketAddr::new(cli_ip, *local_port);
            expect(c.role == TraceRole::Client, format!("client {pid} role {:?}", c.role));
            expect(c.local == cli_addr, format!("client {pid} local {} != {cli_addr}", c.local));
            expect(c.remote == SocketAddr::new(srv_ip, port), format!("client {pid} remote {}", c.remote));
            expect(
                (c.bytes_sent, c.bytes_recv) == (*size, reply),
                format!("client {pid} sent/recv {}/{} != {size}/{reply}", c.bytes_sent, c.bytes_recv),
            );
            expect(c.closed && !c.adopted, format!("client {pid} closed={} adopted={}", c.closed, c.adopted));
            expect(c.start_time_ticks == *start, format!("client {pid} start {} != {start}", c.start_time_ticks));
            if let Some(e) = check_cmdline(&agent, *pid, *start, cmdline, &format!("client {pid}")) {
                expect(false, e);
            }
            counted.push(c.bytes_sent);
            match servers.iter().find(|s| s.remote == cli_addr) {
                Some(s) => {
                    expect(s.role == TraceRole::Server, format!("server socket for {cli_addr}: role {:?}", s.role));
                    expect(s.local == SocketAddr::new(srv_ip, port), format!("server socket local {}", s.local));
                    expect(
                        (s.bytes_recv, s.bytes_sent) == (*size, reply),
                        format!(
                            "server socket for {cli_addr} recv/sent {}/{} != {size}/{reply}",
                            s.bytes_recv, s.bytes_sent
                        ),
                    );
                    expect(
                        s.closed && !s.adopted,
                        format!("server socket for {cli_addr}: closed={} adopted={}", s.closed, s.adopted),
                    );
                }
                None => expect(false, format!("no server socket with remote {cli_addr}")),
            }
        }
        counted.sort_unstable();
        let mut want = sizes.clone();
        want.sort_unstable();
        expect(counted == want, format!("client byte counts {counted:?} != {want:?}"));
        eprintln!("concurrent {fam}: {N} clients checked");
    }
    let loss = agent.loss_counters().expect("counters");
    assert_eq!(loss.lossy(), 0, "loss counters moved: {loss:?}");
    assert!(errors.is_empty(), "mismatches:\n{}", errors.join("\n"));
}
