//! The reverse-DNS resolver under many unknown addresses: time to settle, queries sent, peak
//! concurrency, cache size and memory, then the same addresses again (all from the cache).
//!
//! `sources/examples/reverse_dns_load.sh` starts a dnsmasq with the names and runs this against
//! it, or against a black hole (a UDP socket that never answers). By hand:
//!
//! ```sh
//! cargo run --release -p flowgraph-sources --example reverse_dns_load -- --write-hosts HOSTS
//! dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
//!     --listen-address=127.0.0.1 --port=53535 --local=/in-addr.arpa/ --pid-file --user=root \
//!     --addn-hosts=HOSTS --log-queries --log-facility=LOG &
//! target/release/examples/reverse_dns_load --server 127.0.0.1:53535 --dnsmasq-log LOG
//! target/release/examples/reverse_dns_load --black-hole
//! ```
//!
//! Addresses are 198.18.0.0/15 (RFC 2544's benchmarking range); the first `--named` of them
//! have names in the hosts file, the rest have none.

use anyhow::{bail, Context};
use clap::Parser;
use flowgraph_sources::reverse_dns::{Outcome, ReverseDns, ReverseDnsConfig, ReverseDnsStats};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Load the reverse-DNS resolver with unknown addresses")]
struct Args {
    /// The DNS server to ask.
    #[arg(long, conflicts_with = "black_hole", required_unless_present_any = ["black_hole", "write_hosts"])]
    server: Option<SocketAddr>,
    /// Ask a UDP socket of our own that never answers (every lookup times out).
    #[arg(long)]
    black_hole: bool,
    /// Write the hosts file for dnsmasq (the named addresses) to this path and exit.
    #[arg(long)]
    write_hosts: Option<PathBuf>,
    /// dnsmasq's query log, to count the queries it received.
    #[arg(long)]
    dnsmasq_log: Option<PathBuf>,
    /// Distinct unknown addresses to want.
    #[arg(long, default_value_t = 10_000)]
    addresses: u32,
    /// How many of them have a name (the first ones).
    #[arg(long, default_value_t = 1_000)]
    named: u32,
    /// Lookups on the wire at once (default: the resolver's).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Timeout of one lookup in milliseconds (default: the resolver's).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// How long a failure is cached, in seconds (default: the resolver's).
    #[arg(long)]
    failed_ttl_s: Option<u64>,
    /// Give up waiting for the addresses to settle after this many seconds.
    #[arg(long, default_value_t = 900)]
    deadline_s: u64,
}

fn address(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.addresses > 1 << 17 {
        bail!("--addresses: at most 131072 (the size of 198.18.0.0/15)");
    }
    if let Some(path) = &args.write_hosts {
        let hosts: String =
            (0..args.named.min(args.addresses)).map(|i| format!("{} host-{i}.load.test\n", address(i))).collect();
        std::fs::write(path, hosts).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} names to {}", args.named, path.display());
        return Ok(());
    }
    // Held for the whole run: bound, never read.
    let black_hole = args.black_hole.then(|| UdpSocket::bind("127.0.0.1:0")).transpose()?;
    let server = match (&black_hole, args.server) {
        (Some(socket), _) => socket.local_addr()?,
        (None, Some(server)) => server,
        (None, None) => bail!("give --server ADDR or --black-hole"),
    };
    let defaults = ReverseDnsConfig::default();
    let config = ReverseDnsConfig {
        servers: Some(vec![server]),
        max_in_flight: args.max_in_flight.unwrap_or(defaults.max_in_flight),
        timeout: args.timeout_ms.map_or(defaults.timeout, Duration::from_millis),
        failed_ttl: args.failed_ttl_s.map_or(defaults.failed_ttl, Duration::from_secs),
        ..defaults
    };
    println!(
        "server {server}{}: {} addresses ({} named), max_in_flight {}, timeout {:?} ({} attempts), max_queue {}, failed_ttl {:?}",
        if args.black_hole { " (black hole)" } else { "" },
        args.addresses,
        args.named.min(args.addresses),
        config.max_in_flight,
        config.timeout,
        config.attempts,
        config.max_queue,
        config.failed_ttl,
    );
    let log_before = dnsmasq_queries(args.dnsmasq_log.as_ref())?;
    let rss_start = rss_kib()?;
    let dns = ReverseDns::start(config).context("starting the resolver")?;
    let rss_started = rss_kib()?;

    let addrs: Vec<IpAddr> = (0..args.addresses).map(address).collect();
    let started = Instant::now();
    for &addr in &addrs {
        dns.want(addr);
    }
    let wants_took = started.elapsed();
    let mut out = Vec::with_capacity(addrs.len());
    let deadline = started + Duration::from_secs(args.deadline_s);
    let mut next_progress = started + Duration::from_secs(10);
    while out.len() < addrs.len() {
        std::thread::sleep(Duration::from_millis(2));
        dns.drain(&mut out);
        let now = Instant::now();
        if now > deadline {
            bail!("only {} of {} settled within {} s: {:?}", out.len(), addrs.len(), args.deadline_s, dns.stats());
        }
        if now > next_progress {
            eprintln!("  {:>6.1} s: {} settled", started.elapsed().as_secs_f64(), out.len());
            next_progress += Duration::from_secs(10);
        }
    }
    let settled_in = started.elapsed();
    let first = dns.stats();
    let rss_settled = rss_kib()?;
    let log_after_first = dnsmasq_queries(args.dnsmasq_log.as_ref())?;
    let named = out.iter().filter(|r| r.outcome == Outcome::Answered).count();
    let no_name = out.iter().filter(|r| r.outcome == Outcome::NoName).count();
    let failed = out.iter().filter(|r| matches!(r.outcome, Outcome::Failed(_))).count();

    println!("first pass: {} unknown addresses", addrs.len());
    println!(
        "  wants returned in        {:>10.3} ms ({:.2} us each)",
        ms(wants_took),
        ms(wants_took) * 1e3 / addrs.len() as f64
    );
    println!("  all settled in           {:>10.3} s", settled_in.as_secs_f64());
    println!("  outcomes                 {named} named, {no_name} no name, {failed} failed");
    print_stats(&first);
    if let (Some(before), Some(after)) = (log_before, log_after_first) {
        println!("  dnsmasq query log        {:>10} PTR queries", after - before);
    }
    println!("  RSS                      {rss_start} KiB at start, {rss_started} KiB resolver started, {rss_settled} KiB settled (+{} KiB)", rss_settled - rss_started);

    // The same addresses again: every one fresh in the cache, no query.
    let again = Instant::now();
    for &addr in &addrs {
        dns.want(addr);
    }
    let wants_again_took = again.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let mut more = Vec::new();
    dns.drain(&mut more);
    let second = dns.stats();
    let log_after_second = dnsmasq_queries(args.dnsmasq_log.as_ref())?;
    println!("second pass: the same {} addresses", addrs.len());
    println!(
        "  wants returned in        {:>10.3} ms ({:.2} us each)",
        ms(wants_again_took),
        ms(wants_again_took) * 1e3 / addrs.len() as f64
    );
    let asked_again = second.queries_sent - first.queries_sent + second.queued as u64;
    println!("  queries sent             {:>10}", second.queries_sent - first.queries_sent);
    println!("  asked again (TTL ended)  {asked_again:>10} (sent or queued)");
    println!("  cache hits               {:>10}", second.cache_hits - first.cache_hits);
    println!("  records reported         {:>10}", more.len());
    if let (Some(before), Some(after)) = (log_after_first, log_after_second) {
        println!("  dnsmasq query log        {:>10} PTR queries", after - before);
    }
    println!("  RSS                      {} KiB; peak {} KiB", rss_kib()?, peak_rss_kib()?);
    // Every answer still fresh must come from the cache; answers whose TTL ran out during a
    // long first pass (a black hole's failures, kept `failed_ttl`) are rightly asked again.
    let shortest_ttl = out.iter().map(|r| r.ttl).min().unwrap_or_default();
    if asked_again > 0 && settled_in + Duration::from_millis(500) < shortest_ttl {
        bail!("the second pass asked again about {asked_again} addresses still fresh");
    }
    Ok(())
}

fn print_stats(stats: &ReverseDnsStats) {
    println!("  queries sent (resolver)  {:>10}", stats.queries_sent);
    println!(
        "  answered/no name/failed  {:>10} / {} / {} ({} timeouts)",
        stats.answered, stats.no_name, stats.failed, stats.timeouts
    );
    println!("  queue drops              {:>10}", stats.queue_drops);
    println!("  peak in flight           {:>10}", stats.peak_in_flight);
    println!("  cache entries            {:>10}", stats.cache_entries);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn status_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

fn rss_kib() -> anyhow::Result<u64> {
    status_kib("VmRSS:")
}

fn peak_rss_kib() -> anyhow::Result<u64> {
    status_kib("VmHWM:")
}

/// PTR queries in dnsmasq's log so far, if a log was given.
fn dnsmasq_queries(log: Option<&PathBuf>) -> anyhow::Result<Option<usize>> {
    let Some(log) = log else { return Ok(None) };
    let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(Some(text.matches("query[PTR] ").count()))
}
