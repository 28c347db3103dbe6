//! The names the pipeline finds itself: the static names file and reverse DNS.
//!
//! Both name addresses the job has seen in conn_stats. A static name is known at once, so it
//! goes into the job just before the first record that needs it, stamped at the earliest time
//! a record of that address can still be processed at (the record's time less the lateness, or
//! the frontier if that is later): the edge never shows the bare address first, whatever order
//! its records arrive in. Reverse DNS answers come later, from the resolver's own thread, and
//! go in stamped with the frontier: the graph renames the edge from then on. A reload of the
//! names file does the same for every address whose static name changed.
//! Kubernetes names and DNS answers arrive as records from elsewhere and outrank both (see
//! `NameSource`).

use crate::cli::NamingArgs;
use anyhow::Context;
use flowgraph_config::{ConfigFile, NamesConfig, NamingSettings};
use flowgraph_schema::{EventTime, Name, NameSource, Record};
use flowgraph_sources::names_file::NamesFile;
use flowgraph_sources::reverse_dns::{Outcome, Resolved, ReverseDns, ReverseDnsConfig};
use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the names file is checked for a change.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// An address seen in conn_stats, and what the pipeline's own sources said of it.
#[derive(Debug)]
struct Seen {
    /// The static name last put into the job ('' never sent).
    static_name: String,
    /// When reverse DNS was last asked (asked again once its TTL floor has passed, so a
    /// changed PTR record shows).
    reverse_asked: Option<Instant>,
    /// Whether a reverse-DNS name is in the job (only then does "no name" withdraw one).
    reverse_named: bool,
}

/// Counters for the note, the logs and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamingStats {
    /// Distinct remote addresses seen.
    pub addresses: usize,
    /// Static name records put into the job (withdrawals included).
    pub static_names: u64,
    /// Reverse-DNS name records put into the job (withdrawals included).
    pub reverse_names: u64,
    /// Times the names file was reread after a change.
    pub file_reloads: u64,
    /// Lines of the names file that were skipped (over all loads).
    pub file_problems: u64,
}

/// The static names file and the reverse resolver, as one source of name records.
#[derive(Debug)]
pub struct Naming {
    /// The job's lateness: how far before a record's time its address's records may still be.
    lateness_ns: u64,
    file: Option<NamesFile>,
    reverse: Option<ReverseDns>,
    reverse_again_after: Duration,
    seen: FxHashMap<IpAddr, Seen>,
    resolved: Vec<Resolved>,
    stats: NamingStats,
}

/// The `[names]` section of the config file (if any) with the flags on top, checked.
pub fn settings(config: Option<&PathBuf>, args: &NamingArgs) -> anyhow::Result<NamingSettings> {
    let mut names = match config {
        Some(path) => ConfigFile::load(path)?.names,
        None => NamesConfig::default(),
    };
    if let Some(file) = &args.names {
        names.file = file.display().to_string();
    }
    if args.reverse_dns {
        names.reverse_dns = true;
    }
    if let Some(servers) = &args.dns_server {
        if !names.reverse_dns {
            anyhow::bail!("--dns-server: only used with --reverse-dns (or [names] reverse_dns = true)");
        }
        names.reverse_dns_servers = servers.split(',').map(|s| s.trim().to_string()).collect();
    }
    names.validate().map_err(|mut e| {
        e.file = config.cloned();
        e.into()
    })
}

/// [`Naming::start`] with the config file's `[names]` and the flags, for a job under `job`.
pub fn start_for(
    config: Option<&PathBuf>,
    args: &NamingArgs,
    job: &flowgraph_pipeline::JobConfig,
) -> anyhow::Result<Naming> {
    Naming::start(&settings(config, args)?, job.lateness_ns)
}

impl Naming {
    /// Opens the names file and starts the resolver, as `settings` ask, for a job with this
    /// lateness.
    pub fn start(settings: &NamingSettings, lateness_ns: u64) -> anyhow::Result<Naming> {
        let mut stats = NamingStats::default();
        let file = match &settings.file {
            Some(path) => {
                let (file, report) = NamesFile::open(path, FILE_CHECK_INTERVAL).map_err(anyhow::Error::msg)?;
                for problem in &report.problems {
                    tracing::warn!("{problem}");
                }
                stats.file_problems += report.problems.len() as u64;
                tracing::info!(file = %path.display(), rules = report.rules, "names file loaded");
                Some(file)
            }
            None => None,
        };
        let reverse_config = ReverseDnsConfig {
            servers: (!settings.reverse_dns_servers.is_empty()).then(|| settings.reverse_dns_servers.clone()),
            timeout: settings.reverse_dns_timeout,
            max_in_flight: settings.reverse_dns_max_in_flight,
            ..ReverseDnsConfig::default()
        };
        let reverse_again_after = reverse_config.positive_min_ttl;
        let reverse = if settings.reverse_dns {
            Some(ReverseDns::start(reverse_config).context("starting reverse DNS")?)
        } else {
            None
        };
        Ok(Naming {
            lateness_ns,
            file,
            reverse,
            reverse_again_after,
            seen: FxHashMap::default(),
            resolved: Vec::new(),
            stats,
        })
    }

    /// Whether any source is configured (otherwise callers can skip the calls).
    pub fn is_active(&self) -> bool {
        self.file.is_some() || self.reverse.is_some()
    }

    /// Looks at a record about to go into the job. For a conn_stats record whose address is
    /// new, appends its static name to `out`, to be pushed first, and asks reverse DNS about
    /// it. `floor` is the earliest time the job takes a record at now (its frontier).
    pub fn observe(&mut self, record: &Record, floor: EventTime, out: &mut Vec<Record>) {
        let Record::ConnStats(conn) = record else { return };
        let addr = conn.remote_addr;
        // Loopback peers are the process's own entity whatever they are called.
        if addr.is_loopback() {
            return;
        }
        let now = Instant::now();
        let file = &self.file;
        let stats = &mut self.stats;
        // Any later record of this address is processed at or after this time.
        let stamp = floor.max(conn.time_.saturating_sub(self.lateness_ns));
        let seen = self.seen.entry(addr).or_insert_with(|| {
            stats.addresses += 1;
            let static_name = file.as_ref().and_then(|f| f.lookup(addr)).unwrap_or_default().to_string();
            if !static_name.is_empty() {
                stats.static_names += 1;
                out.push(name_record(stamp, addr, &static_name, NameSource::Static));
            }
            Seen { static_name, reverse_asked: None, reverse_named: false }
        });
        if let Some(reverse) = &self.reverse {
            if seen.reverse_asked.is_none_or(|asked| now.duration_since(asked) >= self.reverse_again_after) {
                seen.reverse_asked = Some(now);
                reverse.want(addr);
            }
        }
    }

    /// Collects what changed since the last call: static names after the file changed, and
    /// finished reverse lookups. Appends name records stamped `now` (the job's frontier).
    pub fn poll(&mut self, now: EventTime, out: &mut Vec<Record>) {
        if let Some(file) = &mut self.file {
            match file.reload_if_changed() {
                Ok(None) => {}
                Ok(Some(report)) => {
                    for problem in &report.problems {
                        tracing::warn!("{problem}");
                    }
                    self.stats.file_reloads += 1;
                    self.stats.file_problems += report.problems.len() as u64;
                    tracing::info!(file = %file.path().display(), rules = report.rules, "names file reloaded");
                    for (addr, seen) in &mut self.seen {
                        let name = file.lookup(*addr).unwrap_or_default();
                        if name != seen.static_name {
                            // '' withdraws the old static name.
                            out.push(name_record(now, *addr, name, NameSource::Static));
                            seen.static_name = name.to_string();
                            self.stats.static_names += 1;
                        }
                    }
                }
                Err(problem) => {
                    self.stats.file_problems += 1;
                    tracing::warn!("{problem}");
                }
            }
        }
        if let Some(reverse) = &self.reverse {
            reverse.drain(&mut self.resolved);
            for resolved in self.resolved.drain(..) {
                let Some(seen) = self.seen.get_mut(&resolved.addr) else { continue };
                let name = match (&resolved.outcome, resolved.name) {
                    (Outcome::Answered, Some(name)) => {
                        seen.reverse_named = true;
                        name
                    }
                    // The PTR record is gone: withdraw the earlier name, if one went in (an
                    // address that never had one needs no record, and no state in the job).
                    (Outcome::NoName, _) if seen.reverse_named => {
                        seen.reverse_named = false;
                        String::new()
                    }
                    // No name, or a failure, which says nothing about the name: keep what
                    // the graph shows.
                    _ => continue,
                };
                out.push(name_record(now, resolved.addr, &name, NameSource::ReverseDns));
                self.stats.reverse_names += 1;
            }
        }
        metrics::gauge!("flowgraph_names_addresses").set(self.stats.addresses as f64);
        metrics::gauge!("flowgraph_names_static_records").set(self.stats.static_names as f64);
        metrics::gauge!("flowgraph_names_reverse_dns_records").set(self.stats.reverse_names as f64);
        metrics::gauge!("flowgraph_names_file_problems").set(self.stats.file_problems as f64);
    }

    /// Waits, at most `limit`, until reverse DNS has no lookup queued or on the wire (the end
    /// of a finite input, so that its answers still go in).
    pub fn settle(&self, limit: Duration) {
        let Some(reverse) = &self.reverse else { return };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let stats = reverse.stats();
            if stats.in_flight == 0 && stats.queued == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!("reverse DNS: lookups still open after {limit:?}; their names are not in the result");
    }

    /// How long [`Naming::settle`] may take for what is queued now: every wave of lookups
    /// takes at most the timeout.
    pub fn settle_limit(&self) -> Duration {
        match &self.reverse {
            None => Duration::ZERO,
            Some(reverse) => {
                let (stats, config) = (reverse.stats(), reverse.config());
                let waves = (stats.queued + stats.in_flight).div_ceil(config.max_in_flight) as u32 + 1;
                config.timeout * waves
            }
        }
    }

    /// Name records handed out so far (static and reverse DNS, withdrawals included): what
    /// the job counted beyond its input.
    pub fn records_added(&self) -> u64 {
        self.stats.static_names + self.stats.reverse_names
    }

    /// One line for the end of a run: what the sources did (nothing when none is set up).
    pub fn summary(&self) -> Option<String> {
        if !self.is_active() {
            return None;
        }
        let s = self.stats;
        let mut line = format!(
            "names: {} addresses seen; {} static name records ({} file reloads, {} skipped lines)",
            s.addresses, s.static_names, s.file_reloads, s.file_problems
        );
        if let Some(reverse) = &self.reverse {
            let r = reverse.stats();
            line += &format!(
                "; reverse DNS: {} name records, {} queries ({} answered, {} no name, {} failed), {} cache hits, {} dropped, {} in flight",
                s.reverse_names, r.queries_sent, r.answered, r.no_name, r.failed, r.cache_hits, r.queue_drops, r.in_flight
            );
        }
        Some(line)
    }
}

fn name_record(time: EventTime, addr: IpAddr, name: &str, source: NameSource) -> Record {
    Record::Name(Name { time_: time, addr, name: name.to_string(), source })
}
