//! Real-kernel tests (root) of the DNS names: the socket filter on a real AF_PACKET socket, and
//! a real dnsmasq (Debian's dnsmasq-base) answering on a loopback address of its own, port 53.
//! They fail, saying why, without root or without dnsmasq.
//!
//! Each test starts its own observer ([`DnsNames`]) and dnsmasq, with names unique to the test
//! and the process, so parallel tests (and other DNS traffic on the host) do not confuse them.
//! Nothing is written to disk; dnsmasq is killed when its guard drops.

mod common;

use flowgraph_schema::{NameSource, Record};
use flowgraph_sources_ebpf::dns::{DnsCounters, DnsError, DnsNames, DnsOptions, SeenName};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const DNSMASQ_MISSING: &str = "dnsmasq not found: run scripts/setup (installs Debian's dnsmasq-base)";
const WAIT: Duration = Duration::from_secs(5);

/// Panics unless running as root: the tests open a packet socket and load a socket filter.
fn root() {
    common::require_root(
        "the DNS names tests open an AF_PACKET socket and load a socket filter: they need root \
         (or CAP_NET_RAW+CAP_BPF)",
    );
}

fn dnsmasq_path() -> PathBuf {
    common::find_program("dnsmasq").unwrap_or_else(|| panic!("{DNSMASQ_MISSING}"))
}

/// A loopback address no other test of this run uses: 127.53.<pid>.<n>.
fn loopback_addr() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8 + 1, n)
}

/// Names unique to this process and test.
fn token(test: &str) -> String {
    format!("{test}-{}.example.test", std::process::id())
}

fn start_names() -> DnsNames {
    root();
    DnsNames::start(&DnsOptions::default()).unwrap_or_else(|e| panic!("DNS names did not start: {e}"))
}

/// A dnsmasq child answering on `listen`:53 from its command line only; killed on drop.
struct Dnsmasq {
    child: Child,
    server: SocketAddr,
}

impl Dnsmasq {
    fn start(listen: IpAddr, records: &[String]) -> Dnsmasq {
        let child = Command::new(dnsmasq_path())
            .args([
                "--port=53", "--bind-interfaces", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--pid-file=", "--log-facility=-", "--local-ttl=300",
            ])
            .arg(format!("--listen-address={listen}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{DNSMASQ_MISSING} ({e})"));
        Dnsmasq { child, server: SocketAddr::new(listen, 53) }
    }

    /// Asks for `name`, retrying until dnsmasq is up; panics with its output when it is not.
    fn query(&mut self, name: &str, rtype: RecordType) -> Message {
        let local: SocketAddr = if self.server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse().unwrap();
        let socket = UdpSocket::bind(local).expect("bind the client socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut message = Message::query();
        message.metadata.id = (std::process::id() as u16) ^ 0x5a5a;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        let wire = message.to_vec().unwrap();
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("dnsmasq exited ({status}) before answering: {stderr}");
            }
            socket.send_to(&wire, self.server).expect("send the query");
            if let Ok((len, _)) = socket.recv_from(&mut buf) {
                let answer = Message::from_vec(&buf[..len]).expect("dnsmasq's answer parses");
                if answer.metadata.id == message.metadata.id && answer.metadata.message_type == MessageType::Response {
                    return answer;
                }
            }
        }
        panic!("dnsmasq at {} did not answer {name} within {WAIT:?}", self.server);
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drains names until `done` holds for all drained so far, or panics after [`WAIT`].
fn names_until(dns: &DnsNames, what: &str, done: impl Fn(&[SeenName]) -> bool) -> Vec<SeenName> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        dns.drain(&mut seen);
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {WAIT:?}; names seen: {seen:?}; counters: {:?}",
            dns.counters()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has(seen: &[SeenName], addr: &str, name: &str) -> bool {
    let addr: IpAddr = addr.parse().unwrap();
    seen.iter().any(|s| s.answer.addr == addr && s.answer.name == name)
}

fn counters(dns: &DnsNames) -> DnsCounters {
    dns.counters().expect("read the DNS counters")
}

#[test]
fn answers_name_their_addresses_through_cnames_with_their_ttls() {
    let dns = start_names();
    let domain = token("names");
    let (api, db, www, v6, sentinel) = (
        format!("api.{domain}"),
        format!("db.{domain}"),
        format!("www.{domain}"),
        format!("v6.{domain}"),
        format!("sentinel.{domain}"),
    );
    let mut server = Dnsmasq::start(
        IpAddr::V4(loopback_addr()),
        &[
            format!("--address=/{api}/10.9.8.7"), // TTL: --local-ttl=300
            format!("--host-record={db},10.9.8.8,120"),
            format!("--cname={www},{db},60"),
            format!("--host-record={v6},fd00:53::7,90"),
            format!("--address=/{sentinel}/10.9.8.9"),
        ],
    );
    let before = Instant::now();
    let answer = server.query(&api, RecordType::A);
    assert!(matches!(answer.answers.first().map(|r| &r.data), Some(RData::A(_))), "dnsmasq answered {answer:?}");
    server.query(&format!("{}.", www.to_uppercase()), RecordType::A); // names are case-insensitive
    server.query(&v6, RecordType::AAAA);

    let seen = names_until(&dns, "names for api, www and v6", |seen| {
        has(seen, "10.9.8.7", &api) && has(seen, "10.9.8.8", &www) && has(seen, "fd00:53::7", &v6)
    });
    let ttl = |addr: &str| {
        let addr: IpAddr = addr.parse().unwrap();
        seen.iter().find(|s| s.answer.addr == addr).map(|s| s.answer.ttl).unwrap()
    };
    assert_eq!(ttl("10.9.8.7"), 300, "--local-ttl");
    // The question's name, not the CNAME target's; the chain's smallest TTL (CNAME 60, A 120).
    assert_eq!(ttl("10.9.8.8"), 60);
    assert!(!has(&seen, "10.9.8.8", &db), "the CNAME target is not what the client asked for");
    assert_eq!(ttl("fd00:53::7"), 90);
    let wall = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let now = wall(std::time::SystemTime::now());
    for s in &seen {
        let Record::Name(record) = s.to_record() else { unreachable!() };
        assert_eq!(record.source, NameSource::Dns);
        assert_eq!((record.addr, &record.name), (s.answer.addr, &s.answer.name));
        let started = now - before.elapsed().as_nanos() as u64;
        assert!(record.time_ >= started && record.time_ <= now, "time {} outside [{started}, {now}]", record.time_);
    }

    // Asked again within its TTL, an unchanged mapping is not emitted again. Answers are read
    // in order: once the sentinel's name is out, the repeated answer was handled.
    server.query(&api, RecordType::A);
    server.query(&sentinel, RecordType::A);
    let again = names_until(&dns, "the sentinel's name", |seen| has(seen, "10.9.8.9", &sentinel));
    assert!(!has(&again, "10.9.8.7", &api), "an unchanged mapping was emitted twice: {again:?}");

    let c = counters(&dns);
    assert!(c.answers >= 5 && c.names >= 4 && c.packets >= 5 && c.kernel_passed >= c.packets, "{c:?}");
    assert_eq!(c.unavailable, 0);
}

#[test]
fn garbage_from_port_53_is_a_parse_failure_and_names_go_on() {
    let dns = start_names();
    let start = counters(&dns);
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = receiver.local_addr().unwrap();
    // A DNS header promising a question and an answer, then nothing valid.
    let garbage = b"\x12\x34\x81\x80\x00\x01\x00\x01\xff\xff\xff";
    let source = loopback_addr();
    let from_53 = UdpSocket::bind((source, 53)).expect("bind a test address, port 53");
    from_53.send_to(garbage, target).unwrap();
    // The same from another port: the filter drops these in the kernel.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..200 {
        other.send_to(garbage, target).unwrap();
    }
    // Datagrams are read in order: once this second one is counted, all the above were handled.
    from_53.send_to(garbage, target).unwrap();
    let deadline = Instant::now() + WAIT;
    while counters(&dns).parse_failures < start.parse_failures + 2 {
        assert!(Instant::now() < deadline, "the garbage was not counted: {:?}", counters(&dns));
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = counters(&dns);
    assert!(
        after.packets - start.packets < 200 && after.kernel_passed - start.kernel_passed < 200,
        "datagrams from another port reached the socket: the filter let them through ({after:?})"
    );

    // The observer goes on: a later answer is still named.
    let domain = token("after-garbage");
    let name = format!("later.{domain}");
    let mut server = Dnsmasq::start(IpAddr::V4(loopback_addr()), &[format!("--host-record={name},10.9.8.20,45")]);
    server.query(&name, RecordType::A);
    let seen = names_until(&dns, "the name after the garbage", |seen| has(seen, "10.9.8.20", &name));
    assert!(seen.iter().any(|s| s.answer.ttl == 45));
}

#[test]
fn ipv6_answers_pass_the_filter() {
    // Over IPv6 transport (the filter's other branch): dnsmasq on [::1]:53.
    let dns = start_names();
    let domain = token("over-v6");
    let name = format!("six.{domain}");
    let mut server =
        Dnsmasq::start("::1".parse().unwrap(), &[format!("--host-record={name},10.9.8.30,fd00:53::30,75")]);
    server.query(&name, RecordType::AAAA);
    server.query(&name, RecordType::A);
    let seen = names_until(&dns, "names answered over IPv6", |seen| {
        has(seen, "fd00:53::30", &name) && has(seen, "10.9.8.30", &name)
    });
    assert!(seen.iter().all(|s| s.answer.ttl == 75 || s.answer.name != name), "{seen:?}");
}

/// Without privileges the observer refuses to start with an error that says what to grant.
/// Runs itself again as `nobody` (setpriv, from util-linux) to check that.
#[test]
fn without_privileges_the_error_says_what_is_needed() {
    if std::env::var_os("FG_DNS_UNPRIVILEGED_CHILD").is_some() {
        match DnsNames::start(&DnsOptions::default()) {
            Err(e @ DnsError::Permission { .. }) => {
                let text = e.to_string();
                assert!(text.contains("CAP_NET_RAW") && text.contains("root"), "{text}");
            }
            other => panic!("expected a permission error, got {other:?}"),
        }
        return;
    }
    root();
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&exe)
        .args(["--exact", "without_privileges_the_error_says_what_is_needed", "--test-threads=1"])
        .env("FG_DNS_UNPRIVILEGED_CHILD", "1")
        .output()
        .unwrap_or_else(|e| panic!("setpriv (util-linux) is needed to run this test unprivileged: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the unprivileged run failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
