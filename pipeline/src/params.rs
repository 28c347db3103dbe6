//! Query parameters: which remote addresses, how long a window, what a node of the graph is.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// What `from_entity` is: which field of the process record names a graph node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Kubernetes pod `namespace/name` (Pixie's default).
    Pod,
    /// Kubernetes service `namespace/name`.
    Service,
    /// Kubernetes namespace.
    Namespace,
    /// Kubernetes node.
    Node,
    /// Container id.
    Container,
    /// Host name.
    Host,
    /// The process's command line.
    Process,
}

impl GroupBy {
    /// Every value, in the order the docs list them.
    pub const ALL: [GroupBy; 7] = [
        GroupBy::Pod,
        GroupBy::Service,
        GroupBy::Namespace,
        GroupBy::Node,
        GroupBy::Container,
        GroupBy::Host,
        GroupBy::Process,
    ];

    /// The name used on the command line, in config files and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Pod => "pod",
            GroupBy::Service => "service",
            GroupBy::Namespace => "namespace",
            GroupBy::Node => "node",
            GroupBy::Container => "container",
            GroupBy::Host => "host",
            GroupBy::Process => "process",
        }
    }

    /// The process record's field this grouping reads.
    pub fn entity_of(self, process: &flowgraph_schema::Process) -> &str {
        match self {
            GroupBy::Pod => &process.pod,
            GroupBy::Service => &process.service,
            GroupBy::Namespace => &process.namespace,
            GroupBy::Node => &process.node,
            GroupBy::Container => &process.container,
            GroupBy::Host => &process.host,
            GroupBy::Process => &process.cmdline,
        }
    }
}

impl GroupBy {
    /// The interned process description's field this grouping reads.
    pub(crate) fn entity_text(self, process: &crate::stage::ProcessInfo) -> &crate::graph::Text {
        match self {
            GroupBy::Pod => &process.pod,
            GroupBy::Service => &process.service,
            GroupBy::Namespace => &process.namespace,
            GroupBy::Node => &process.node,
            GroupBy::Container => &process.container,
            GroupBy::Host => &process.host,
            GroupBy::Process => &process.cmdline,
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GroupBy::ALL.into_iter().find(|g| g.as_str() == s).ok_or_else(|| {
            let all: Vec<_> = GroupBy::ALL.iter().map(|g| g.as_str()).collect();
            format!("unknown value {s:?}; expected one of {}", all.join(", "))
        })
    }
}

/// Which remote addresses the graph keeps: any address inside one of the networks, or every
/// address when the list is empty. A bare address is a /32 (IPv4) or /128 (IPv6) network.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpFilter {
    nets: Vec<IpNet>,
}

impl IpFilter {
    /// A filter that keeps every address.
    pub fn all() -> Self {
        IpFilter::default()
    }

    /// A filter from networks; duplicates and order do not matter. An IPv4-mapped IPv6
    /// network (`::ffff:10.0.0.0/104`) becomes the IPv4 network it maps (`10.0.0.0/8`), as a
    /// bare mapped address becomes its IPv4 address: remote addresses are compared in their
    /// canonical form.
    pub fn new(mut nets: Vec<IpNet>) -> Self {
        for net in &mut nets {
            *net = canonical_net(net.trunc());
        }
        nets.sort();
        nets.dedup();
        IpFilter { nets }
    }

    /// Parses a comma-separated list of addresses and CIDRs (`10.0.0.0/8,2001:db8::1`).
    pub fn parse_list(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.split_once('/') {
                Some((addr, prefix)) => item.parse::<IpNet>().map_err(|e| {
                    // ipnet says only "invalid IP address syntax": say which part is wrong.
                    match addr.parse::<IpAddr>() {
                        Err(_) => format!("invalid CIDR {item:?}: {addr:?} is not an IP address"),
                        Ok(ip) => {
                            let max = if ip.is_ipv4() { 32 } else { 128 };
                            match prefix.parse::<u8>() {
                                Ok(len) if len > max => {
                                    format!("invalid CIDR {item:?}: the prefix length {len} is longer than {max}")
                                }
                                _ => format!("invalid CIDR {item:?}: {e}"),
                            }
                        }
                    }
                })?,
                None => {
                    let addr: IpAddr = item.parse().map_err(|e| format!("invalid address {item:?}: {e}"))?;
                    IpNet::from(addr.to_canonical())
                }
            };
            nets.push(net);
        }
        Ok(IpFilter::new(nets))
    }

    /// The networks, sorted.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether the graph keeps rows for this remote address (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn matches(&self, addr: &IpAddr) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let addr = addr.to_canonical();
        self.nets.iter().any(|net| net.contains(&addr))
    }
}

/// The IPv4 network an IPv4-mapped IPv6 network (`::ffff:a.b.c.d/96+n`) stands for; any other
/// network as it is.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).expect("a prefix of at most 32 bits")),
            None => net,
        },
        _ => net,
    }
}

impl fmt::Display for IpFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nets.is_empty() {
            return f.write_str("all");
        }
        let items: Vec<String> = self.nets.iter().map(|n| n.to_string()).collect();
        f.write_str(&items.join(","))
    }
}

/// The query's parameters. Each can change while the job runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Params {
    /// Remote addresses kept.
    pub ips: IpFilter,
    /// Window length in nanoseconds: the graph at T covers samples with T - window < time_ <= T.
    pub window_ns: u64,
    /// What a graph node is.
    pub group_by: GroupBy,
}

/// Pixie's default window, 5 minutes.
pub const DEFAULT_WINDOW_NS: u64 = 5 * 60 * 1_000_000_000;

impl Default for Params {
    fn default() -> Self {
        Params { ips: IpFilter::all(), window_ns: DEFAULT_WINDOW_NS, group_by: GroupBy::Pod }
    }
}

impl Params {
    /// Checks the parameters against the job's limits; the error names the field.
    pub fn validate(&self, max_window_ns: u64) -> Result<(), String> {
        if self.window_ns == 0 {
            return Err("window: must be longer than zero".into());
        }
        if self.window_ns > max_window_ns {
            return Err(format!(
                "window: {} s is longer than the job's max_window of {} s",
                self.window_ns / 1_000_000_000,
                max_window_ns / 1_000_000_000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_cidrs() {
        let f = IpFilter::parse_list("10.0.0.0/8, 2001:db8::1,::ffff:192.168.1.1").unwrap();
        assert!(f.matches(&"10.9.8.7".parse().unwrap()));
        assert!(f.matches(&"2001:db8::1".parse().unwrap()));
        assert!(!f.matches(&"2001:db8::2".parse().unwrap()));
        assert!(f.matches(&"192.168.1.1".parse().unwrap()));
        assert!(!f.matches(&"11.0.0.1".parse().unwrap()));
        assert!(IpFilter::parse_list("").unwrap().matches(&"1.2.3.4".parse().unwrap()));
        // IPv4-mapped networks and addresses are their IPv4 forms, on either side.
        let mapped = IpFilter::parse_list("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.matches(&"10.1.2.3".parse().unwrap()));
        assert!(mapped.matches(&"::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.matches(&"11.1.2.3".parse().unwrap()));
        assert!(f.matches(&"::ffff:10.9.8.7".parse().unwrap()));
        let err = IpFilter::parse_list("10.0.0.0/33").unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
    }

    #[test]
    fn group_by_names_round_trip_and_errors_list_choices() {
        for g in GroupBy::ALL {
            assert_eq!(g.as_str().parse::<GroupBy>().unwrap(), g);
        }
        let err = "planet".parse::<GroupBy>().unwrap_err();
        assert!(err.contains("pod, service"), "{err}");
    }
}
