//! The reverse-DNS resolver against a real DNS server: a dnsmasq child per test, on loopback
//! and a free port, answering PTR queries from a hosts file it is given and logging every query
//! it receives, so the tests count queries from the server's side as well as the resolver's.
//! dnsmasq comes from Debian's dnsmasq-base (scripts/setup installs it).

use flowgraph_sources::reverse_dns::{Failure, Outcome, Resolved, ReverseDns, ReverseDnsConfig, ReverseDnsError};
use std::fs;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dnsmasq serving `hosts` as PTR records, authoritative for the reverse zones (an address
/// with no entry is NXDOMAIN, never forwarded), killed and its files removed on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn dnsmasq_binary() -> PathBuf {
    for candidate in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v dnsmasq"]).output() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !path.is_empty() {
            return path.into();
        }
    }
    panic!("dnsmasq not found: run scripts/setup (installs Debian's dnsmasq-base)");
}

impl Dnsmasq {
    fn start(hosts: &str) -> Self {
        Self::start_with_ttl(hosts, 0)
    }

    /// `local_ttl` is the TTL dnsmasq gives hosts-file answers (its default is 0).
    fn start_with_ttl(hosts: &str, local_ttl: u32) -> Self {
        let binary = dnsmasq_binary();
        let dir = tempfile::Builder::new().prefix("flowgraph-dnsmasq-").tempdir().expect("tempdir");
        let hosts_path = dir.path().join("hosts");
        let log = dir.path().join("queries.log");
        fs::write(&hosts_path, hosts).expect("writing the hosts file");
        // A free port can be taken between our probe and dnsmasq's bind: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--local=/in-addr.arpa/",
                    "--local=/ip6.arpa/",
                    "--log-queries",
                    "--pid-file",
                    // Root here (scripts/setup, CI); dnsmasq would drop to nobody, who cannot
                    // read the test's private directory.
                    "--user=root",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--local-ttl={local_ttl}"))
                .arg(format!("--addn-hosts={}", hosts_path.display()))
                .arg(format!("--log-facility={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().expect("waiting on dnsmasq") {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        use std::io::Read;
                        let _ = pipe.read_to_string(&mut stderr);
                    }
                    last_error = format!("dnsmasq exited ({status}): {}", stderr.trim());
                    break;
                }
                // It logs the hosts file it read once it is serving.
                let read = fs::read_to_string(&log).unwrap_or_default();
                if read.contains(&format!("read {}", hosts_path.display())) {
                    return Self { child, port, hosts: hosts_path, log, _dir: dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("dnsmasq did not start within 10 s; its log:\n{read}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start dnsmasq: {last_error}");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// PTR queries dnsmasq received for `addr`, from its query log.
    fn queries_for(&self, addr: IpAddr) -> usize {
        let name = reverse_name(addr);
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("query[PTR] ") && line.contains(&format!(" {name} from ")))
            .count()
    }

    /// PTR queries dnsmasq received in all.
    fn ptr_queries(&self) -> usize {
        fs::read_to_string(&self.log).unwrap_or_default().matches("query[PTR] ").count()
    }

    /// Rewrites the hosts file and makes dnsmasq read it again (SIGHUP).
    fn replace_hosts(&self, hosts: &str) {
        fs::write(&self.hosts, hosts).expect("rewriting the hosts file");
        let reads_before = self.hosts_reads();
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().expect("running kill");
        assert!(status.success(), "kill -HUP dnsmasq failed");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.hosts_reads() == reads_before {
            assert!(Instant::now() < deadline, "dnsmasq did not re-read its hosts file");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn hosts_reads(&self) -> usize {
        let marker = format!("read {}", self.hosts.display());
        fs::read_to_string(&self.log).unwrap_or_default().matches(&marker).count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("probing a free port").port()
}

/// The in-addr.arpa / ip6.arpa name dnsmasq logs for `addr`.
fn reverse_name(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut labels: Vec<String> =
                v6.octets().iter().flat_map(|b| [b >> 4, b & 0xf]).map(|nibble| format!("{nibble:x}")).collect();
            labels.reverse();
            format!("{}.ip6.arpa", labels.join("."))
        }
    }
}

fn config(server: SocketAddr) -> ReverseDnsConfig {
    ReverseDnsConfig { servers: Some(vec![server]), timeout: Duration::from_secs(2), ..ReverseDnsConfig::default() }
}

/// Drains until `n` records arrived, or panics after `within`.
fn drain_n(dns: &ReverseDns, n: usize, within: Duration) -> Vec<Resolved> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} lookups reported within {within:?}: {out:?}; stats {:?}",
            out.len(),
            dns.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
        dns.drain(&mut out);
    }
    out
}

/// Waits until every lookup so far has settled (nothing queued or on the wire).
fn settle(dns: &ReverseDns, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let stats = dns.stats();
        if stats.queued == 0 && stats.in_flight == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "not settled within {within:?}: {stats:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

#[test]
fn a_ptr_answer_arrives_and_is_cached() {
    let server = Dnsmasq::start("192.0.2.10 web-1.example.test\n");
    let dns = ReverseDns::start(config(server.addr())).expect("start");
    let addr = ip("192.0.2.10");

    dns.want(addr);
    dns.want(addr); // already on the wire: no second query
    let got = drain_n(&dns, 1, Duration::from_secs(5));
    assert_eq!(
        got,
        vec![Resolved {
            addr,
            name: Some("web-1.example.test".into()),
            // dnsmasq gives hosts answers TTL 0; the floor applies.
            ttl: ReverseDnsConfig::default().positive_min_ttl,
            outcome: Outcome::Answered,
        }]
    );

    for _ in 0..10 {
        dns.want(addr);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut more = Vec::new();
    dns.drain(&mut more);
    assert!(more.is_empty(), "a cached name is not reported again: {more:?}");
    let stats = dns.stats();
    assert_eq!(stats.queries_sent, 1, "{stats:?}");
    assert_eq!(stats.answered, 1, "{stats:?}");
    assert_eq!(stats.cache_hits, 10, "{stats:?}");
    assert_eq!(stats.cache_entries, 1, "{stats:?}");
    assert_eq!(stats.reported, 1, "{stats:?}");
    assert_eq!(server.queries_for(addr), 1, "dnsmasq saw one query");
}

#[test]
fn an_address_without_a_ptr_record_is_negatively_cached() {
    let server = Dnsmasq::start("192.0.2.10 web-1.example.test\n");
    let dns = ReverseDns::start(config(server.addr())).expect("start");
    let addr = ip("192.0.2.99");

    dns.want(addr);
    let got = drain_n(&dns, 1, Duration::from_secs(5));
    assert_eq!(
        got,
        vec![Resolved { addr, name: None, ttl: ReverseDnsConfig::default().negative_ttl, outcome: Outcome::NoName }]
    );
    dns.want(addr);
    dns.want(addr);
    std::thread::sleep(Duration::from_millis(300));
    let stats = dns.stats();
    assert_eq!((stats.queries_sent, stats.no_name, stats.cache_hits), (1, 1, 2), "{stats:?}");
    assert_eq!(server.queries_for(addr), 1, "dnsmasq saw one query");
}

#[test]
fn ipv6_addresses_are_named_and_negatively_cached() {
    let server = Dnsmasq::start("2001:db8::1 v6-host.example.test\n");
    let dns = ReverseDns::start(config(server.addr())).expect("start");
    let named = ip("2001:db8::1");
    let unnamed = ip("2001:db8::2");

    dns.want(named);
    dns.want(unnamed);
    let mut got = drain_n(&dns, 2, Duration::from_secs(5));
    got.sort_by_key(|r| r.addr);
    assert_eq!(got[0].addr, named);
    assert_eq!(got[0].name.as_deref(), Some("v6-host.example.test"));
    assert_eq!(got[0].outcome, Outcome::Answered);
    assert_eq!((got[1].addr, got[1].name.as_deref(), &got[1].outcome), (unnamed, None, &Outcome::NoName));

    dns.want(named);
    dns.want(unnamed);
    std::thread::sleep(Duration::from_millis(300));
    let stats = dns.stats();
    assert_eq!((stats.queries_sent, stats.cache_hits), (2, 2), "{stats:?}");
    assert_eq!((server.queries_for(named), server.queries_for(unnamed)), (1, 1));
}

#[test]
fn after_the_ttl_an_address_is_asked_again_and_only_a_changed_name_is_reported() {
    let server = Dnsmasq::start_with_ttl("192.0.2.1 old.example.test\n192.0.2.2 same.example.test\n", 5);
    // Long enough that the hosts file is replaced well before it ends, even on a busy machine.
    let ttl = Duration::from_secs(1);
    let dns =
        ReverseDns::start(ReverseDnsConfig { positive_min_ttl: ttl, positive_max_ttl: ttl, ..config(server.addr()) })
            .expect("start");
    let (renamed, same) = (ip("192.0.2.1"), ip("192.0.2.2"));

    dns.want(renamed);
    dns.want(same);
    let first = drain_n(&dns, 2, Duration::from_secs(5));
    assert!(first.iter().all(|r| r.ttl == ttl), "dnsmasq's TTL of 5 s is clamped to 1 s: {first:?}");

    server.replace_hosts("192.0.2.1 new.example.test\n192.0.2.2 same.example.test\n");
    dns.want(renamed); // still fresh: no query
    assert_eq!(dns.stats().queries_sent, 2);
    std::thread::sleep(ttl + Duration::from_millis(100));
    dns.want(renamed);
    dns.want(same);
    let second = drain_n(&dns, 1, Duration::from_secs(5));
    assert_eq!(second[0].addr, renamed);
    assert_eq!(second[0].name.as_deref(), Some("new.example.test"));
    settle(&dns, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let mut rest = Vec::new();
    dns.drain(&mut rest);
    assert!(rest.is_empty(), "an unchanged renewal is not reported: {rest:?}");
    let stats = dns.stats();
    assert_eq!((stats.queries_sent, stats.answered, stats.reported), (4, 4, 3), "{stats:?}");
    assert_eq!((server.queries_for(renamed), server.queries_for(same)), (2, 2));
}

#[test]
fn a_failed_renewal_keeps_the_last_name() {
    let mut server = Dnsmasq::start("192.0.2.7 kept.example.test\n");
    // The stale copy lasts until 2 x ttl + timeout after the answer: 2.3 s; the renewal fails
    // at about 1.35 s.
    let ttl = Duration::from_secs(1);
    let dns = ReverseDns::start(ReverseDnsConfig {
        timeout: Duration::from_millis(300),
        attempts: 1,
        positive_min_ttl: ttl,
        positive_max_ttl: ttl,
        ..config(server.addr())
    })
    .expect("start");
    let addr = ip("192.0.2.7");
    dns.want(addr);
    assert_eq!(drain_n(&dns, 1, Duration::from_secs(5))[0].name.as_deref(), Some("kept.example.test"));

    // The server goes away; the renewal fails, and the graph keeps the name it has.
    let _ = server.child.kill();
    let _ = server.child.wait();
    std::thread::sleep(ttl + Duration::from_millis(50));
    dns.want(addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dns.stats().failed == 0 {
        assert!(Instant::now() < deadline, "the renewal did not fail: {:?}", dns.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = Vec::new();
    dns.drain(&mut out);
    assert!(out.is_empty(), "a failed renewal does not erase the name: {out:?}");
    dns.want(addr);
    assert_eq!(dns.stats().queries_sent, 2, "the failure is cached");

    // Past the stale copy's end the name goes, reported once.
    std::thread::sleep(Duration::from_millis(1_100));
    dns.want(addr);
    let gone = drain_n(&dns, 1, Duration::from_secs(5));
    assert_eq!((gone[0].name.as_deref(), &gone[0].outcome), (None, &Outcome::Failed(Failure::Timeout)));
    assert_eq!(dns.stats().queries_sent, 3);
}

#[test]
fn a_server_that_never_answers_fails_after_the_timeout_and_want_does_not_wait() {
    // A socket that is bound and never read: the queries go nowhere, as to a dead server.
    let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let timeout = Duration::from_millis(500);
    let dns = ReverseDns::start(ReverseDnsConfig { timeout, ..config(black_hole.local_addr().expect("addr")) })
        .expect("start");
    let addr = ip("192.0.2.50");

    let started = Instant::now();
    dns.want(addr);
    let want_took = started.elapsed();
    assert!(want_took < Duration::from_millis(50), "want took {want_took:?}");
    let got = drain_n(&dns, 1, Duration::from_secs(5));
    let settled = started.elapsed();
    assert_eq!(
        got,
        vec![Resolved {
            addr,
            name: None,
            ttl: ReverseDnsConfig::default().failed_ttl,
            outcome: Outcome::Failed(Failure::Timeout),
        }]
    );
    assert!(
        settled >= timeout && settled < timeout + Duration::from_secs(1),
        "failed after {settled:?}, the timeout is {timeout:?}"
    );
    dns.want(addr);
    let stats = dns.stats();
    assert_eq!((stats.queries_sent, stats.timeouts, stats.cache_hits), (1, 1, 1), "{stats:?}");
}

#[test]
fn a_thousand_addresses_against_a_black_hole_never_exceed_max_in_flight() {
    let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let max_in_flight = 50;
    let timeout = Duration::from_millis(200);
    let dns = ReverseDns::start(ReverseDnsConfig {
        timeout,
        attempts: 1,
        max_in_flight,
        max_queue: 2_000,
        ..config(black_hole.local_addr().expect("addr"))
    })
    .expect("start");
    let addrs: Vec<IpAddr> = (0..1_000u32).map(|i| IpAddr::from((0xC633_6400u32 + i).to_be_bytes())).collect();

    let started = Instant::now();
    for &addr in &addrs {
        dns.want(addr);
    }
    let wants_took = started.elapsed();
    assert!(wants_took < Duration::from_millis(500), "1,000 wants took {wants_took:?}");
    let mut peak_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < addrs.len() {
        let stats = dns.stats();
        assert!(stats.in_flight <= max_in_flight, "{stats:?}");
        peak_seen = peak_seen.max(stats.in_flight);
        assert!(Instant::now() < deadline, "not settled: {stats:?}");
        std::thread::sleep(Duration::from_millis(10));
        dns.drain(&mut out);
    }
    let took = started.elapsed();
    let stats = dns.stats();
    assert_eq!(stats.peak_in_flight, max_in_flight, "{stats:?}");
    assert!(peak_seen > 0 && peak_seen <= max_in_flight);
    assert_eq!((stats.queries_sent, stats.timeouts, stats.queue_drops), (1_000, 1_000, 0), "{stats:?}");
    assert!(out.iter().all(|r| r.outcome == Outcome::Failed(Failure::Timeout)));
    // 20 rounds of 50 at 200 ms each: about 4 s; the bound is what concurrency allows.
    let rounds = addrs.len().div_ceil(max_in_flight) as u32;
    assert!(took >= timeout * rounds, "settled in {took:?}, faster than {rounds} rounds of {timeout:?}");
}

#[test]
fn a_full_queue_drops_and_the_next_want_asks_again() {
    let server = Dnsmasq::start("");
    let dns =
        ReverseDns::start(ReverseDnsConfig { max_in_flight: 1, max_queue: 4, ..config(server.addr()) }).expect("start");
    let addrs: Vec<IpAddr> = (1..=50u8).map(|i| IpAddr::from([198, 51, 100, i])).collect();
    for &addr in &addrs {
        dns.want(addr);
    }
    let dropped = dns.stats().queue_drops;
    assert!(dropped > 0, "{:?}", dns.stats());
    settle(&dns, Duration::from_secs(10));
    // Everyone wanted again: the dropped ones are asked now, the settled ones are cache hits.
    for &addr in &addrs {
        dns.want(addr);
        settle(&dns, Duration::from_secs(10));
    }
    let stats = dns.stats();
    assert_eq!(stats.no_name, 50, "{stats:?}");
    assert_eq!(stats.queries_sent, 50, "{stats:?}");
    assert_eq!(server.ptr_queries(), 50);
}

#[test]
fn a_bad_configuration_is_refused_with_the_field_named() {
    let error = ReverseDns::start(ReverseDnsConfig { servers: Some(vec![]), ..ReverseDnsConfig::default() })
        .expect_err("no servers");
    assert!(matches!(error, ReverseDnsError::InvalidConfig { field: "servers", .. }), "{error:?}");
    assert!(error.to_string().contains("`servers`"), "{error}");
    let error =
        ReverseDns::start(ReverseDnsConfig { max_in_flight: 0, ..ReverseDnsConfig::default() }).expect_err("no slots");
    assert!(error.to_string().contains("`max_in_flight`"), "{error}");
}
