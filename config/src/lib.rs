//! Typed, validated flowgraph configuration.
//!
//! A config file is TOML (see `config/examples/flowgraph.toml`); command-line flags override
//! its values. Everything goes through [`QueryConfig::validate`] before anything starts, and an
//! error names the key (and the file, when there is one).

#![deny(missing_docs)]

use flowgraph_pipeline::{GroupBy, IpFilter, JobConfig, Params};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error: which key, in which file, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{key}: {message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct ConfigError {
    /// The file, when the value came from one.
    pub file: Option<PathBuf>,
    /// The key, as `section.name`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The query and its time model.
    #[serde(default)]
    pub query: QueryConfig,
    /// Kafka input and outputs (`flowgraph run`).
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Names for remote addresses that the pipeline finds itself (static file, reverse DNS).
    #[serde(default)]
    pub names: NamesConfig,
}

/// The `[names]` section: the sources of names the pipeline runs itself. Kubernetes names and
/// DNS answers come in as records from `flowgraph metadata` and the agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamesConfig {
    /// Static names, one `ADDRESS-OR-CIDR NAME` per line, reread when it changes; "" for none.
    #[serde(default)]
    pub file: String,
    /// Ask reverse DNS (PTR) about every remote address, asynchronously.
    #[serde(default)]
    pub reverse_dns: bool,
    /// Servers for reverse DNS as `IP:PORT`; empty uses /etc/resolv.conf.
    #[serde(default)]
    pub reverse_dns_servers: Vec<String>,
    /// Bound on one reverse lookup, retries included (`2s`).
    #[serde(default = "default_reverse_dns_timeout")]
    pub reverse_dns_timeout: String,
    /// Reverse lookups on the wire at once.
    #[serde(default = "default_reverse_dns_max_in_flight")]
    pub reverse_dns_max_in_flight: usize,
}

fn default_reverse_dns_timeout() -> String {
    "2s".into()
}
fn default_reverse_dns_max_in_flight() -> usize {
    100
}

impl Default for NamesConfig {
    fn default() -> Self {
        NamesConfig {
            file: String::new(),
            reverse_dns: false,
            reverse_dns_servers: Vec::new(),
            reverse_dns_timeout: default_reverse_dns_timeout(),
            reverse_dns_max_in_flight: default_reverse_dns_max_in_flight(),
        }
    }
}

/// The `[names]` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamingSettings {
    /// The static names file, if any.
    pub file: Option<PathBuf>,
    /// Whether to ask reverse DNS.
    pub reverse_dns: bool,
    /// Reverse-DNS servers; empty: /etc/resolv.conf.
    pub reverse_dns_servers: Vec<std::net::SocketAddr>,
    /// Bound on one reverse lookup.
    pub reverse_dns_timeout: Duration,
    /// Reverse lookups on the wire at once.
    pub reverse_dns_max_in_flight: usize,
}

impl NamesConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<NamingSettings, ConfigError> {
        let error = |key: &str, message: String| ConfigError { file: None, key: format!("names.{key}"), message };
        let mut servers = Vec::new();
        for server in &self.reverse_dns_servers {
            servers.push(server.parse().map_err(|_| {
                error("reverse_dns_servers", format!("{server:?} is not an IP:PORT such as 127.0.0.53:53"))
            })?);
        }
        let timeout_ns = parse_duration_ns("names.reverse_dns_timeout", &self.reverse_dns_timeout)?;
        if timeout_ns == 0 {
            return Err(error("reverse_dns_timeout", "must be longer than zero".into()));
        }
        if self.reverse_dns_max_in_flight == 0 {
            return Err(error("reverse_dns_max_in_flight", "must be at least 1".into()));
        }
        Ok(NamingSettings {
            file: (!self.file.trim().is_empty()).then(|| PathBuf::from(self.file.trim())),
            reverse_dns: self.reverse_dns,
            reverse_dns_servers: servers,
            reverse_dns_timeout: Duration::from_nanos(timeout_ns),
            reverse_dns_max_in_flight: self.reverse_dns_max_in_flight,
        })
    }
}

/// The `[kafka]` section: where `flowgraph run` reads records and writes the graph.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,host:port`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Topic the agents publish records to.
    #[serde(default = "default_input_topic")]
    pub input_topic: String,
    /// Topic undecodable input goes to, with the reason and origin in headers; "" disables.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Topic of graph deltas and progress marks (created with one partition if missing).
    #[serde(default = "default_deltas_topic")]
    pub deltas_topic: String,
    /// Compacted topic of the current graph, keyed by row or edge (created if missing).
    #[serde(default = "default_state_topic")]
    pub state_topic: String,
    /// Encoding of delta messages: json or bincode.
    #[serde(default = "default_delta_format")]
    pub delta_format: String,
    /// Transactional id of this pipeline instance; keep it stable across restarts.
    #[serde(default = "default_transactional_id")]
    pub transactional_id: String,
    /// Event time from one state-topic checkpoint to the next (a duration: `60s`); `0s` writes
    /// the state topic at every transaction. Longer writes less (each changed key once per
    /// checkpoint) and has consumers that bootstrap apply more deltas (docs/KAFKA.md).
    #[serde(default = "default_state_checkpoint")]
    pub state_checkpoint: String,
    /// Where to start reading when no previous run left a progress mark: beginning or end.
    #[serde(default = "default_start")]
    pub start: String,
    /// Where a restart rebuilds its state from: `beginning` (the whole retained input topic:
    /// exact whatever the sources send) or `window` (seek by timestamp to the last progress
    /// mark - window - lateness: fast, exact only if every source re-announces its process and
    /// name records at least once per window, as the agent does every export period).
    #[serde(default = "default_rebuild_from")]
    pub rebuild_from: String,
    /// A partition that has delivered nothing for this long (a duration: `10s`), with nothing
    /// left to read on the broker, stops holding the frontier until it delivers again: its
    /// agents left. Agents send progress every second, so a partition with one running agent
    /// is never quiet that long.
    #[serde(default = "default_idle_partition_after")]
    pub idle_partition_after: String,
    /// Any librdkafka option, passed to every client (security.protocol, sasl.*, ssl.*, ...).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_input_topic() -> String {
    "flowgraph.records".into()
}
fn default_dead_letter_topic() -> String {
    "flowgraph.dead_letters".into()
}
fn default_deltas_topic() -> String {
    "flowgraph.graph_deltas".into()
}
fn default_state_topic() -> String {
    "flowgraph.graph_state".into()
}
fn default_delta_format() -> String {
    "json".into()
}
fn default_transactional_id() -> String {
    "flowgraph-pipeline-0".into()
}
fn default_state_checkpoint() -> String {
    "60s".into()
}
fn default_start() -> String {
    "beginning".into()
}
fn default_rebuild_from() -> String {
    "beginning".into()
}
fn default_idle_partition_after() -> String {
    "10s".into()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            input_topic: default_input_topic(),
            dead_letter_topic: default_dead_letter_topic(),
            deltas_topic: default_deltas_topic(),
            state_topic: default_state_topic(),
            delta_format: default_delta_format(),
            transactional_id: default_transactional_id(),
            state_checkpoint: default_state_checkpoint(),
            start: default_start(),
            rebuild_from: default_rebuild_from(),
            idle_partition_after: default_idle_partition_after(),
            options: Default::default(),
        }
    }
}

impl KafkaConfig {
    /// `idle_partition_after`, parsed; it must be longer than zero.
    pub fn idle_partition_after(&self) -> Result<Duration, ConfigError> {
        let key = "kafka.idle_partition_after";
        match parse_duration_ns(key, &self.idle_partition_after)? {
            0 => Err(ConfigError {
                file: None,
                key: key.into(),
                message: "must be longer than zero (a partition would be idle between two messages)".into(),
            }),
            ns => Ok(Duration::from_nanos(ns)),
        }
    }

    /// `state_checkpoint`, parsed: nanoseconds of event time (0: every transaction).
    pub fn state_checkpoint_ns(&self) -> Result<u64, ConfigError> {
        parse_duration_ns("kafka.state_checkpoint", &self.state_checkpoint)
    }

    /// Checks the values that have a fixed set of choices or a form; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |key: &str, message: String| ConfigError { file: None, key: format!("kafka.{key}"), message };
        if !matches!(self.delta_format.as_str(), "json" | "bincode") {
            return Err(error(
                "delta_format",
                format!("unknown format {:?}; expected json or bincode", self.delta_format),
            ));
        }
        if !matches!(self.start.as_str(), "beginning" | "end") {
            return Err(error("start", format!("unknown start {:?}; expected beginning or end", self.start)));
        }
        if !matches!(self.rebuild_from.as_str(), "beginning" | "window") {
            return Err(error(
                "rebuild_from",
                format!("unknown value {:?}; expected beginning or window", self.rebuild_from),
            ));
        }
        self.idle_partition_after()?;
        self.state_checkpoint_ns()?;
        for (key, value) in [
            ("brokers", &self.brokers),
            ("input_topic", &self.input_topic),
            ("deltas_topic", &self.deltas_topic),
            ("state_topic", &self.state_topic),
            ("transactional_id", &self.transactional_id),
        ] {
            if value.trim().is_empty() {
                return Err(error(key, "must not be empty".into()));
            }
        }
        Ok(())
    }
}

/// The `[query]` section: the net_flow_graph parameters and how time is treated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Remote addresses or CIDRs to keep (`["10.0.0.0/8", "2001:db8::1"]`); empty keeps all.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Window length (`5m`): the graph at T covers samples with T - window < time <= T.
    #[serde(default = "default_window")]
    pub window: String,
    /// What a graph node is: pod, service, namespace, node, container, host or process.
    #[serde(default = "default_group_by")]
    pub group_by: String,
    /// How far the frontier trails the largest event time seen (`30s`).
    #[serde(default = "default_lateness")]
    pub lateness: String,
    /// How often, in event time, completed results are released (`1s`).
    #[serde(default = "default_progress_interval")]
    pub progress_interval: String,
    /// Longest window a parameter change may ask for (`1h`); bounds retained state.
    #[serde(default = "default_max_window")]
    pub max_window: String,
    /// How many updates a long jump of the frontier (start-up, catching up) holds before it
    /// hands them over, at the next progress interval (`JobConfig::max_updates_per_piece`).
    #[serde(default = "default_max_updates_per_piece")]
    pub max_updates_per_piece: usize,
}

fn default_window() -> String {
    "5m".into()
}
fn default_group_by() -> String {
    "pod".into()
}
fn default_lateness() -> String {
    "30s".into()
}
fn default_progress_interval() -> String {
    "1s".into()
}
fn default_max_window() -> String {
    "1h".into()
}
fn default_max_updates_per_piece() -> usize {
    JobConfig::default().max_updates_per_piece
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            ips: Vec::new(),
            window: default_window(),
            group_by: default_group_by(),
            lateness: default_lateness(),
            progress_interval: default_progress_interval(),
            max_window: default_max_window(),
            max_updates_per_piece: default_max_updates_per_piece(),
        }
    }
}

impl ConfigFile {
    /// Reads and parses a TOML config file. Unknown keys are errors.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            key: "cannot read the file".into(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            key: e.span().map_or("(file)".into(), |span| {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("line {line}")
            }),
            message: e.message().to_string(),
        })
    }
}

/// Parses a duration such as `5m`, `30s` or `250ms` into nanoseconds; `key` names it in errors.
pub fn parse_duration_ns(key: &str, text: &str) -> Result<u64, ConfigError> {
    let duration: Duration = humantime::parse_duration(text.trim()).map_err(|e| ConfigError {
        file: None,
        key: key.into(),
        message: format!("invalid duration {text:?}: {e} (examples: 30s, 5m, 1h)"),
    })?;
    u64::try_from(duration.as_nanos()).map_err(|_| ConfigError {
        file: None,
        key: key.into(),
        message: format!("duration {text:?} is too long"),
    })
}

impl QueryConfig {
    /// Checks every value and builds the job's configuration.
    pub fn validate(&self) -> Result<JobConfig, ConfigError> {
        let error = |key: &str, message: String| ConfigError { file: None, key: format!("query.{key}"), message };
        let ips = IpFilter::parse_list(&self.ips.join(",")).map_err(|m| error("ips", m))?;
        let group_by: GroupBy = self.group_by.parse().map_err(|m| error("group_by", m))?;
        let duration = |key: &str, text: &str| parse_duration_ns(&format!("query.{key}"), text);
        let window_ns = duration("window", &self.window)?;
        let config = JobConfig {
            params: Params { ips, window_ns, group_by },
            lateness_ns: duration("lateness", &self.lateness)?,
            progress_interval_ns: duration("progress_interval", &self.progress_interval)?,
            max_window_ns: duration("max_window", &self.max_window)?,
            max_updates_per_piece: self.max_updates_per_piece,
            // Internal tuning, not a setting: it changes memory, never the output.
            max_slice_events: JobConfig::default().max_slice_events,
        };
        if config.progress_interval_ns == 0 {
            return Err(error("progress_interval", "must be longer than zero".into()));
        }
        if config.max_updates_per_piece == 0 {
            return Err(error("max_updates_per_piece", "must be 1 or more".into()));
        }
        config.params.validate(config.max_window_ns).map_err(|m| {
            let (key, message) = m.split_once(": ").unwrap_or(("window", &m));
            error(key, message.to_string())
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flowgraph.toml");
        let config = ConfigFile::load(&path).unwrap().query.validate().unwrap();
        assert_eq!(config.params.window_ns, 5 * 60 * 1_000_000_000);
        assert_eq!(
            config.max_updates_per_piece,
            JobConfig::default().max_updates_per_piece,
            "the example's is the default"
        );
    }

    /// The error `validate` gives for a default section after `edit`.
    fn error_after<C: Default, T: std::fmt::Debug>(
        edit: fn(&mut C),
        validate: fn(&C) -> Result<T, ConfigError>,
    ) -> String {
        let mut section = C::default();
        edit(&mut section);
        validate(&section).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |edit: fn(&mut QueryConfig)| error_after(edit, QueryConfig::validate);
        assert!(bad(|c| c.window = "5 parsecs".into()).starts_with("query.window: invalid duration"));
        assert!(bad(|c| c.window = "0s".into()).starts_with("query.window: must be longer"));
        assert!(bad(|c| c.window = "2h".into()).contains("max_window"));
        assert!(bad(|c| c.group_by = "planet".into()).starts_with("query.group_by: unknown value"));
        assert!(bad(|c| c.ips = vec!["10.0.0.0/40".into()]).starts_with("query.ips: invalid CIDR"));
        assert!(bad(|c| c.max_updates_per_piece = 0).starts_with("query.max_updates_per_piece: must be 1 or more"));
    }

    #[test]
    fn kafka_errors_name_the_key() {
        let bad = |edit: fn(&mut KafkaConfig)| error_after(edit, KafkaConfig::validate);
        assert!(
            bad(|c| c.idle_partition_after = "soon".into()).starts_with("kafka.idle_partition_after: invalid duration")
        );
        assert!(bad(|c| c.idle_partition_after = "0s".into())
            .starts_with("kafka.idle_partition_after: must be longer than zero"));
        assert!(bad(|c| c.rebuild_from = "yesterday".into()).starts_with("kafka.rebuild_from: unknown value"));
        assert_eq!(KafkaConfig::default().idle_partition_after().unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("flowgraph-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[query]\nwindow = \"5m\"\nwindw = \"1m\"\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("bad.toml: line 3: unknown field `windw`"), "{err}");
    }
}
