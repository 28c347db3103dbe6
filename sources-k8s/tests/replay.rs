//! The metadata source against the replaying API server (tests/api_server): kube's real
//! client and watchers, over HTTP, on the recorded-shape responses of tests/fixtures/.
//!
//! The story the fixtures tell (times in the objects are March 2026):
//! * list: nodes node-a (10.0.1.10), node-b (10.0.1.11); services default/kubernetes,
//!   kube-system/kube-dns, shop/frontend, shop/redis, shop/redis-headless (headless); pods
//!   coredns, kube-proxy (host network, the node's IP), frontend-6c9b8d7f5-k2x4p
//!   (10.244.1.12), redis-0 (10.244.2.7, selected by redis and redis-headless), a finished
//!   report job pod (10.244.2.9, released);
//! * watch: checkout is scheduled and starts (10.244.2.15), service checkout appears; the
//!   frontend rolls: the old pod terminates, the new frontend-7b4f9d6c8-m7n3r gets 10.244.1.12
//!   before the old pod's DELETED arrives (Pixie issue 885);
//! * the resumed watch is too old: ERROR 410 Gone; the relist no longer has checkout (deleted
//!   meanwhile), which must be withdrawn;
//! * watch after the relist: redis-0 is deleted and recreated with the same name and IP; the
//!   next report job's pod gets the finished one's IP.

mod api_server;

use api_server::{ApiServer, Request};
use flowgraph_schema::{Container, NameSource, Record};
use flowgraph_sources_k8s::{client, watch, Connect, Options};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the source emitted, accumulated.
#[derive(Debug, Default)]
struct Observed {
    records: Vec<Record>,
}

impl Observed {
    /// Per address, the Kubernetes names in the order they were emitted ('' = withdrawn).
    fn name_history(&self) -> BTreeMap<IpAddr, Vec<String>> {
        let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for r in &self.records {
            if let Record::Name(n) = r {
                assert_eq!(n.source, NameSource::Kubernetes, "{n:?}");
                out.entry(n.addr).or_default().push(n.name.clone());
            }
        }
        out
    }

    /// The names in force now.
    fn names(&self) -> BTreeMap<String, String> {
        self.name_history()
            .into_iter()
            .filter_map(|(a, h)| {
                let last = h.last().cloned().unwrap_or_default();
                (!last.is_empty()).then(|| (a.to_string(), last))
            })
            .collect()
    }

    /// Per container id, the records in order.
    fn container_history(&self) -> BTreeMap<String, Vec<Container>> {
        let mut out: BTreeMap<String, Vec<Container>> = BTreeMap::new();
        for r in &self.records {
            if let Record::Container(c) = r {
                out.entry(c.container.clone()).or_default().push((**c).clone());
            }
        }
        out
    }

    /// Container id -> (pod, service, namespace, node) in force now ('' pod = withdrawn).
    fn containers(&self) -> BTreeMap<String, (String, String, String, String)> {
        self.container_history()
            .into_iter()
            .map(|(id, h)| {
                let c = h.last().unwrap().clone();
                (id, (c.pod, c.service, c.namespace, c.node))
            })
            .collect()
    }
}

/// The uid of the second redis-0 (the StatefulSet recreates the pod under the same name).
const REDIS_0_NOW: &str = "f9c3e5a7-2b4d-4f6c-8e0a-3d5f7b9c1e24";

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// The container id (runtime prefix stripped) of the fixture pod whose name or uid is `pod`;
/// panics unless there is exactly one.
fn fixture_container(pod: &str) -> String {
    let mut found = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let objects: Vec<serde_json::Value> = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["items"].as_array().unwrap().clone()
            }
            Some("jsonl") => {
                text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["object"].clone()).collect()
            }
            _ => continue,
        };
        for o in objects {
            if o["metadata"]["name"] == pod || o["metadata"]["uid"] == pod {
                if let Some(id) = o["status"]["containerStatuses"][0]["containerID"].as_str() {
                    found.insert(id.split_once("://").unwrap().1.to_string());
                }
            }
        }
    }
    assert_eq!(found.len(), 1, "pod {pod}: container ids {found:?} in the fixtures");
    found.pop_first().unwrap()
}

/// The state the story converges to: address -> name.
fn expected_names() -> BTreeMap<String, String> {
    [
        ("10.0.1.10", "node-a"),
        ("10.0.1.11", "node-b"),
        ("10.96.0.1", "default/kubernetes"),
        ("10.96.0.10", "kube-system/kube-dns"),
        ("10.96.12.40", "shop/frontend"),
        ("10.96.44.7", "shop/redis"),
        ("10.96.90.21", "shop/checkout"),
        ("10.244.1.3", "kube-system/coredns-5d78c9869d-9xw2j"),
        ("10.244.1.12", "shop/frontend-7b4f9d6c8-m7n3r"),
        ("10.244.2.7", "shop/redis-0"),
        ("10.244.2.9", "shop/report-28641180-j4k8m"),
    ]
    .into_iter()
    .map(|(a, n)| (a.to_string(), n.to_string()))
    .collect()
}

/// Runs the source against a fresh replay server until `done` holds for what it emitted
/// (30 s at most, then panics with what it saw).
async fn run_until(done: impl Fn(&Observed, &[Request]) -> bool) -> (Observed, Vec<Request>) {
    run_with(None, done).await
}

/// [`run_until`], re-announcing every `reannounce`.
async fn run_with(
    reannounce: Option<Duration>,
    done: impl Fn(&Observed, &[Request]) -> bool,
) -> (Observed, Vec<Request>) {
    let server = ApiServer::start(fixture_dir()).await;
    run_against(&server, Connect::Config(Box::new(server.kube_config())), reannounce, done).await
}

async fn run_against(
    server: &ApiServer,
    connect: Connect,
    reannounce: Option<Duration>,
    done: impl Fn(&Observed, &[Request]) -> bool,
) -> (Observed, Vec<Request>) {
    let client = client(connect).await.expect("a client for the replay server");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Record>>();
    let stop = Arc::new(AtomicBool::new(false));
    let options =
        Options { progress_interval: Duration::from_millis(50), reannounce_interval: reannounce, ..Options::default() };
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { watch(client, &options, stop, move |batch| tx.send(batch)).await }
    });
    let mut observed = Observed::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&observed, &server.log()) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(batch)) => observed.records.extend(batch),
            Ok(None) => panic!("the source stopped early: {:?}", task.await),
            Err(_) => panic!(
                "not converged after 30 s.\nnames: {:#?}\ncontainers: {:#?}\nrequests: {:#?}",
                observed.names(),
                observed.containers(),
                server.log()
            ),
        }
    }
    stop.store(true, Ordering::Relaxed);
    task.await.expect("the watch task panicked").expect("the watch ended with an error");
    (observed, server.log())
}

/// Converged: the final names are in, and the relisted pods' watch has delivered its events.
fn converged(observed: &Observed, _: &[Request]) -> bool {
    observed.names() == expected_names()
        && observed.containers().get(&fixture_container("report-28641180-j4k8m")).is_some_and(|c| !c.0.is_empty())
}

#[tokio::test]
async fn adds_modifications_and_deletions_reach_the_records() {
    let (observed, _) = run_until(converged).await;
    let containers = observed.containers();
    let entry = |pod: &str, service: &str, ns: &str, node: &str| {
        (pod.to_string(), service.to_string(), ns.to_string(), node.to_string())
    };
    // Added (in the list and by watch events), with their services and nodes.
    assert_eq!(
        containers[&fixture_container("coredns-5d78c9869d-9xw2j")],
        entry("kube-system/coredns-5d78c9869d-9xw2j", "kube-system/kube-dns", "kube-system", "node-a")
    );
    assert_eq!(
        containers[&fixture_container("kube-proxy-7pq4t")],
        entry("kube-system/kube-proxy-7pq4t", "", "kube-system", "node-a")
    );
    // The rollout's new pod: added Pending (no container id yet), modified to Running.
    assert_eq!(
        containers[&fixture_container("frontend-7b4f9d6c8-m7n3r")],
        entry("shop/frontend-7b4f9d6c8-m7n3r", "shop/frontend", "shop", "node-a")
    );
    // Deleted: the old frontend pod's container is withdrawn.
    let old = &observed.container_history()[&fixture_container("frontend-6c9b8d7f5-k2x4p")];
    assert_eq!(old.first().unwrap().pod, "shop/frontend-6c9b8d7f5-k2x4p");
    assert_eq!(old.last().unwrap().pod, "", "{old:?}");
    // A finished pod still owns its containers (its processes' samples may be in the window).
    assert_eq!(
        containers[&fixture_container("report-28641120-vx2lp")],
        entry("shop/report-28641120-vx2lp", "", "shop", "node-b")
    );
    // A service added by a watch event names its cluster IP; the headless one names nothing.
    assert_eq!(observed.names().get("10.96.90.21").map(String::as_str), Some("shop/checkout"));
    assert!(!observed.names().values().any(|n| n == "shop/redis-headless"));
    // A node heartbeat (MODIFIED, nothing relevant changed) emits nothing new.
    assert_eq!(observed.name_history()[&"10.0.1.11".parse::<IpAddr>().unwrap()], vec!["node-b"]);
}

#[tokio::test]
async fn gone_410_forces_a_relist_and_withdraws_what_vanished_meanwhile() {
    let (observed, log) = run_until(converged).await;
    let pods: Vec<(&str, &str)> =
        log.iter().filter(|r| r.resource == "pods").map(|r| (r.verb, r.resource_version.as_str())).collect();
    // list, watch from the list, resume from the bookmark (-> 410), relist, watch from it.
    assert_eq!(
        pods,
        vec![("list", ""), ("watch", "48213"), ("watch", "48300"), ("list", ""), ("watch", "48391")],
        "{log:#?}"
    );
    // Lists are consistent reads (no resourceVersion=0 from the watch cache).
    assert!(log.iter().filter(|r| r.verb == "list").all(|r| r.resource_version.is_empty()));
    // checkout was deleted while the watch was out of date: the relist withdraws it.
    let checkout = fixture_container("checkout-5f7d8c9b6-q8w2z");
    let history = &observed.container_history()[&checkout];
    assert_eq!(history.first().unwrap().pod, "shop/checkout-5f7d8c9b6-q8w2z");
    assert_eq!(history.first().unwrap().service, "shop/checkout");
    assert_eq!(history.last().unwrap().pod, "", "{history:?}");
    assert_eq!(
        observed.name_history()[&"10.244.2.15".parse::<IpAddr>().unwrap()],
        vec!["shop/checkout-5f7d8c9b6-q8w2z", ""]
    );
    // Everything else survived the relist unchanged: no withdrawal and re-add.
    assert_eq!(observed.name_history()[&"10.244.1.3".parse::<IpAddr>().unwrap()].len(), 1);
    // The source counts the desync in its progress records.
    let desyncs = observed
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Progress(p) => p.losses.get("desyncs").copied(),
            _ => None,
        })
        .max();
    assert_eq!(desyncs, Some(1));
}

#[tokio::test]
async fn a_reused_ip_moves_to_the_new_pod_and_is_never_withdrawn_in_between() {
    let (observed, _) = run_until(converged).await;
    let history = observed.name_history();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // New pod's claim observed before the old pod's deletion: straight from old to new.
    assert_eq!(history[&ip("10.244.1.12")], vec!["shop/frontend-6c9b8d7f5-k2x4p", "shop/frontend-7b4f9d6c8-m7n3r"]);
    // Deletion first, then the recreated pod: withdrawn in between.
    assert_eq!(history[&ip("10.244.2.7")], vec!["shop/redis-0", "", "shop/redis-0"]);
    // A finished pod's IP is free: only the new job pod is ever named.
    assert_eq!(history[&ip("10.244.2.9")], vec!["shop/report-28641180-j4k8m"]);
    // Times never go backwards.
    let times: Vec<u64> = observed.records.iter().map(Record::time).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[tokio::test]
async fn a_pod_behind_two_services_is_one_entity_naming_both() {
    let (observed, _) = run_until(converged).await;
    let redis = observed.containers()[&fixture_container(REDIS_0_NOW)].clone();
    assert_eq!(redis.0, "shop/redis-0");
    assert_eq!(redis.1, "shop/redis,shop/redis-headless");
    assert_eq!((redis.2.as_str(), redis.3.as_str()), ("shop", "node-b"));
}

#[tokio::test]
async fn node_internal_ips_name_the_nodes_not_their_host_network_pods() {
    let (observed, _) = run_until(converged).await;
    let history = observed.name_history();
    assert_eq!(history[&"10.0.1.10".parse::<IpAddr>().unwrap()], vec!["node-a"]);
    assert_eq!(history[&"10.0.1.11".parse::<IpAddr>().unwrap()], vec!["node-b"]);
    // Progress from the source's name, regularly.
    let progress: Vec<_> = observed
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Progress(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(!progress.is_empty());
    assert!(progress.iter().all(|p| p.source == "k8s-metadata"));
}

#[tokio::test]
async fn everything_in_force_is_announced_again_regularly() {
    // Converged, then at least one re-announcement with every name and live container.
    let (observed, _) = run_with(Some(Duration::from_millis(300)), |o, log| {
        converged(o, log) && {
            let names = o.records.iter().filter(|r| matches!(r, Record::Name(n) if n.name == "shop/redis-0")).count();
            names >= 3 // listed, recreated, re-announced
        }
    })
    .await;
    let last_redis = observed
        .records
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Container(c) if c.container == fixture_container(REDIS_0_NOW) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_redis.service, "shop/redis,shop/redis-headless");
}

#[tokio::test]
async fn a_kubeconfig_file_reaches_the_api_server_it_names() {
    let server = ApiServer::start(fixture_dir()).await;
    let path = std::env::temp_dir().join(format!("flowgraph-k8s-test-{}.kubeconfig", std::process::id()));
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: replay\nclusters:\n- name: replay\n  cluster:\n    server: {}\n\
         contexts:\n- name: replay\n  context:\n    cluster: replay\n    user: reader\nusers:\n- name: reader\n  user: {{}}\n",
        server.url
    );
    std::fs::write(&path, kubeconfig).unwrap();
    let (observed, _) = run_against(&server, Connect::Kubeconfig(path.clone()), None, |o, _| {
        o.names().get("10.0.1.10").is_some_and(|n| n == "node-a")
    })
    .await;
    std::fs::remove_file(&path).unwrap();
    assert!(!observed.records.is_empty());
}
