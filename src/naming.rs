//! The names the pipeline finds itself: the static names file and reverse DNS.
//!
//! Both name addresses the job has seen in conn_stats. A static name is known at once, so it
//! goes into the job just before the first record that needs it, with that record's time: the
//! edge never shows the bare address first. Reverse DNS answers come later, from the resolver's
//! own thread, and go in stamped with the job's frontier: the graph renames the edge from then
//! on. A reload of the names file does the same for every address whose static name changed.
//! Kubernetes names and DNS answers arrive as records from elsewhere and outrank both (see
//! `NameSource`).

use crate::cli::NamingArgs;
use anyhow::Context;
use flowgraph_config::{ConfigFile, NamingSettings, NamesConfig};
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
        names.reverse_dns_servers = servers.split(',').map(|s| s.trim().to_string()).collect();
    }
    names.validate().map_err(|mut e| {
        e.file = config.cloned();
        e.into()
    })
}

impl Naming {
    /// Opens the names file and starts the resolver, as `settings` ask.
    pub fn start(settings: &NamingSettings) -> anyhow::Result<Naming> {
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
        Ok(Naming { file, reverse, reverse_again_after, seen: FxHashMap::default(), resolved: Vec::new(), stats })
    }

    /// Whether any source is configured (otherwise callers can skip the calls).
    pub fn is_active(&self) -> bool {
        self.file.is_some() || self.reverse.is_some()
    }

    /// Looks at a record about to go into the job. For a conn_stats record whose address is
    /// new, appends its static name (stamped with the record's time) to `out`, to be pushed
    /// first, and asks reverse DNS about it.
    pub fn observe(&mut self, record: &Record, out: &mut Vec<Record>) {
        let Record::ConnStats(conn) = record else { return };
        let addr = conn.remote_addr;
        // Loopback peers are the process's own entity whatever they are called.
        if addr.is_loopback() {
            return;
        }
        let now = Instant::now();
        let file = &self.file;
        let stats = &mut self.stats;
        let seen = self.seen.entry(addr).or_insert_with(|| {
            stats.addresses += 1;
            let static_name = file.as_ref().and_then(|f| f.lookup(addr)).unwrap_or_default().to_string();
            if !static_name.is_empty() {
                stats.static_names += 1;
                out.push(name_record(conn.time_, addr, &static_name, NameSource::Static));
            }
            Seen { static_name, reverse_asked: None }
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
                let name = match (&resolved.outcome, resolved.name) {
                    (Outcome::Answered, Some(name)) => name,
                    // The PTR record is gone: withdraw the earlier name.
                    (Outcome::NoName, _) => String::new(),
                    // A failure says nothing about the name: keep what the graph shows.
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
