//! Static material the fleet is built from: service archetypes, external endpoints, naming.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What role a service plays, which decides its dependencies and who calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Edge proxy: receives connections from the internet, calls the frontends.
    Ingress,
    /// Application service: calls other services and stores, some call external APIs.
    App,
    /// Data store or broker (StatefulSet): called, calls nothing (or its coordinator).
    Store,
    /// Scrapes every node's node-exporter (Prometheus).
    NodeScraper,
    /// Scrapes every node's kubelet (metrics-server).
    KubeletScraper,
}

/// A service archetype of the catalog.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Archetype {
    pub ns: &'static str,
    pub name: &'static str,
    pub port: u16,
    pub kind: Kind,
    pub cmdline: &'static str,
    /// Worker processes per pod: 1, or up to the profile's maximum (pre-fork servers).
    pub multi_worker: bool,
    /// Fixed dependencies by archetype name, within the same catalog cycle.
    pub fixed_deps: &'static [&'static str],
}

const fn a(
    ns: &'static str,
    name: &'static str,
    port: u16,
    kind: Kind,
    cmdline: &'static str,
    multi_worker: bool,
    fixed_deps: &'static [&'static str],
) -> Archetype {
    Archetype { ns, name, port, kind, cmdline, multi_worker, fixed_deps }
}

#[rustfmt::skip]
/// Thirty archetypes, ordered so that any prefix is a plausible small fleet (an ingress, apps,
/// their stores); larger fleets repeat them in further namespaces (`shop-2`, ...).
pub(crate) const ARCHETYPES: &[Archetype] = &[
    a("ingress", "ingress-nginx", 443, Kind::Ingress,
      "nginx: worker process", true, &["frontend", "auth"]),
    a("shop", "frontend", 8080, Kind::App, "node /app/server.js --cluster", true, &[]),
    a("shop", "cart", 7070, Kind::App, "/app/cartservice --port=7070", false, &[]),
    a("data", "redis", 6379, Kind::Store, "redis-server *:6379", false, &[]),
    a("shop", "checkout", 5050, Kind::App, "/app/checkoutservice", false, &[]),
    a("data", "postgres", 5432, Kind::Store,
      "postgres -D /var/lib/postgresql/data -c max_connections=400", true, &[]),
    a("shop", "catalog", 3550, Kind::App, "/app/productcatalogservice -addr=:3550", false, &[]),
    a("payments", "payments-api", 8443, Kind::App,
      "java -XX:MaxRAMPercentage=75 -jar /opt/app/payments-api.jar --server.port=8443", false, &[]),
    a("data", "kafka", 9092, Kind::Store,
      "java -Xmx4g -cp /opt/kafka/libs/* kafka.Kafka /opt/kafka/config/server.properties", false,
      &["zookeeper"]),
    a("data", "zookeeper", 2181, Kind::Store,
      "java -Xmx512m -cp /opt/zookeeper/lib/* org.apache.zookeeper.server.quorum.QuorumPeerMain /conf/zoo.cfg",
      false, &[]),
    a("identity", "auth", 8080, Kind::App,
      "/usr/local/bin/uwsgi --ini /etc/uwsgi/auth.ini --http :8080", true, &[]),
    a("monitoring", "prometheus", 9090, Kind::NodeScraper,
      "/bin/prometheus --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus",
      false, &[]),
    a("shop", "recommendation", 8080, Kind::App,
      "/usr/local/bin/python3 /usr/local/bin/gunicorn -w 3 -b 0.0.0.0:8080 recommend:app", true, &[]),
    a("shop", "currency", 7000, Kind::App, "node /usr/src/app/server.js", true, &[]),
    a("identity", "users", 8080, Kind::App, "php-fpm: pool www", true, &[]),
    a("identity", "sessions", 6379, Kind::Store, "redis-server *:6379 --appendonly no", false, &[]),
    a("shop", "shipping", 50051, Kind::App, "/app/shippingservice", false, &[]),
    a("notify", "email", 8080, Kind::App, "/usr/local/bin/python3 /usr/local/bin/gunicorn -w 2 email_server:app", true, &[]),
    a("payments", "ledger", 9090, Kind::App, "/usr/bin/ledger serve --grpc=:9090", false, &[]),
    a("data", "elasticsearch", 9200, Kind::Store,
      "/usr/share/elasticsearch/jdk/bin/java -Xms2g -Xmx2g org.elasticsearch.bootstrap.Elasticsearch",
      false, &[]),
    a("search", "search-api", 8080, Kind::App,
      "java -Xmx2g -jar /opt/search-api/search-api.jar", false, &[]),
    a("search", "indexer", 8081, Kind::App, "/app/indexer --workers=8", true, &[]),
    a("payments", "fraud-score", 8000, Kind::App,
      "/usr/local/bin/python3 /usr/local/bin/gunicorn -w 4 fraud.wsgi", true, &[]),
    a("data", "mongodb", 27017, Kind::Store, "mongod --bind_ip_all --replSet rs0", false, &[]),
    a("shop", "ad", 9555, Kind::App,
      "java -Xms256m -Xmx1g -jar /app/build/libs/adservice.jar", false, &[]),
    a("data", "memcached", 11211, Kind::Store, "memcached -m 1024 -p 11211 -c 4096", false, &[]),
    a("notify", "sms", 8080, Kind::App, "node /srv/sms/index.js", true, &[]),
    a("data", "rabbitmq", 5672, Kind::Store,
      "/opt/erlang/erts-13.2/bin/beam.smp -- -root /opt/erlang -progname erl -- -noshell", false, &[]),
    a("monitoring", "grafana", 3000, Kind::App, "grafana server --homepath=/usr/share/grafana", false,
      &["prometheus"]),
    a("kube-system", "metrics-server", 10250, Kind::KubeletScraper,
      "/metrics-server --cert-dir=/tmp --secure-port=10250 --kubelet-preferred-address-types=InternalIP",
      false, &[]),
];

/// A third-party endpoint outside the fleet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExternalSpec {
    /// The DNS name an agent eventually learns for it, if ever.
    pub name: Option<&'static str>,
    pub addrs: &'static [IpAddr],
    pub port: u16,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
}

#[rustfmt::skip]
/// External endpoints in popularity order (Zipf rank 1 first). Documentation ranges only:
/// 203.0.113.0/24 (TEST-NET-3), 198.51.100.0/24 (TEST-NET-2), 2001:db8::/32.
pub(crate) const EXTERNALS: &[ExternalSpec] = &[
    ExternalSpec { name: Some("api.stripe.com"), addrs: &[v4(203, 0, 113, 10), v4(203, 0, 113, 11)], port: 443 },
    ExternalSpec { name: Some("s3.eu-west-1.amazonaws.com"), addrs: &[v4(198, 51, 100, 20), v4(198, 51, 100, 21)], port: 443 },
    ExternalSpec { name: Some("oauth2.googleapis.com"), addrs: &[v6(0x2001, 0xdb8, 0x4860, 0, 0, 0, 0, 0x8a)], port: 443 },
    ExternalSpec { name: None, addrs: &[v4(203, 0, 113, 177)], port: 443 },
    ExternalSpec { name: Some("smtp.sendgrid.net"), addrs: &[v4(198, 51, 100, 50)], port: 587 },
    ExternalSpec { name: Some("api.twilio.com"), addrs: &[v4(203, 0, 113, 60)], port: 443 },
    ExternalSpec { name: Some("sqs.eu-west-1.amazonaws.com"), addrs: &[v4(198, 51, 100, 30)], port: 443 },
    ExternalSpec { name: None, addrs: &[v6(0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, 0x17)], port: 8443 },
    ExternalSpec { name: Some("api.github.com"), addrs: &[v4(203, 0, 113, 40)], port: 443 },
    ExternalSpec { name: Some("o4504.ingest.sentry.io"), addrs: &[v4(198, 51, 100, 90)], port: 443 },
    ExternalSpec { name: Some("api.datadoghq.eu"), addrs: &[v6(0x2001, 0xdb8, 0xdd, 0, 0, 0, 0, 0x10)], port: 443 },
    ExternalSpec { name: None, addrs: &[v4(198, 51, 100, 233)], port: 5432 },
    ExternalSpec { name: Some("api.segment.io"), addrs: &[v4(203, 0, 113, 100)], port: 443 },
    ExternalSpec { name: None, addrs: &[v4(198, 51, 100, 7)], port: 443 },
];

/// The container registry that containerd pulls from on restarts.
pub(crate) const REGISTRY: ExternalSpec = ExternalSpec {
    name: Some("registry-1.docker.io"),
    addrs: &[v6(0x2001, 0xdb8, 0x1d0c, 0, 0, 0, 0, 0x5), v4(203, 0, 113, 80)],
    port: 443,
};

/// The Kubernetes API server, reached through the `default/kubernetes` service IP.
pub(crate) const APISERVER: IpAddr = v4(10, 96, 0, 1);
/// Its name.
pub(crate) const APISERVER_NAME: &str = "default/kubernetes";

/// Addresses administrators ssh in from.
pub(crate) const ADMIN_ADDRS: &[IpAddr] = &[v4(203, 0, 113, 250), v6(0x2001, 0xdb8, 0xad, 0, 0, 0, 0, 1)];

/// `n` internet clients of the ingress (NAT gateways, proxies, browsers), in Zipf popularity
/// order: one in six IPv6, the rest alternating between the two IPv4 documentation ranges.
pub(crate) fn internet_clients(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let host = (i / 2 % 120) as u8;
            match i % 6 {
                5 => v6(0x2001, 0xdb8, 0xc0ff, 0, 0, 0, 0, 0x100 + i as u16),
                k if k % 2 == 0 => v4(198, 51, 100, 128 + host),
                _ => v4(203, 0, 113, 130 + host),
            }
        })
        .collect()
}

/// Kubernetes' name-suffix alphabet (no vowels, no look-alikes).
const ALNUM: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random string over the Kubernetes suffix alphabet.
pub(crate) fn k8s_suffix(rng: &mut impl rand::Rng, len: usize) -> String {
    (0..len).map(|_| char::from(ALNUM[rng.random_range(0..ALNUM.len())])).collect()
}

/// A 64-hex-digit container id.
pub(crate) fn container_id(rng: &mut impl rand::Rng) -> String {
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        let word: u64 = rng.random();
        s.push_str(&format!("{word:016x}"));
    }
    s
}

/// The short command name the kernel reports: the executable's base name, at most 15 bytes.
pub(crate) fn comm_of(cmdline: &str) -> String {
    // Servers that rewrite their title keep the executable's name as comm.
    if cmdline.starts_with("nginx: ") {
        return "nginx".to_string();
    }
    if cmdline.starts_with("php-fpm: ") {
        return "php-fpm8.2".to_string();
    }
    let exe = cmdline.split_whitespace().next().unwrap_or("");
    let base = exe.rsplit('/').next().unwrap_or(exe);
    let base = if base == "python3" {
        // `python3 /usr/local/bin/gunicorn ...` shows as gunicorn once it set its title.
        cmdline
            .split_whitespace()
            .nth(1)
            .filter(|arg| !arg.starts_with('-'))
            .map(|arg| arg.rsplit('/').next().unwrap_or(arg))
            .unwrap_or(base)
    } else {
        base
    };
    base.chars().take(15).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_the_base_name() {
        assert_eq!(comm_of("/app/productcatalogservice -addr=:3550"), "productcatalogs");
        assert_eq!(comm_of("redis-server *:6379"), "redis-server");
        assert_eq!(comm_of("nginx: worker process"), "nginx");
        assert_eq!(comm_of("/usr/local/bin/python3 /usr/local/bin/gunicorn -w 3 x:app"), "gunicorn");
        assert_eq!(comm_of("/usr/local/bin/python3 -m email_server"), "python3");
        assert_eq!(comm_of("php-fpm: pool www"), "php-fpm8.2");
    }

    #[test]
    fn archetype_names_are_unique_and_fixed_deps_exist() {
        for (i, x) in ARCHETYPES.iter().enumerate() {
            for y in &ARCHETYPES[..i] {
                assert!(x.name != y.name, "duplicate archetype {}", x.name);
            }
            for dep in x.fixed_deps {
                assert!(ARCHETYPES.iter().any(|z| z.name == *dep), "unknown dep {dep}");
            }
        }
    }
}
