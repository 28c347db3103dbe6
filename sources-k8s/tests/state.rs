//! The pure state machine, event by event, with chosen observation times.

use flowgraph_schema::{Container, Name, NameSource, Record};
use flowgraph_sources_k8s::{container_id, Event, Kind, MetadataState, Object};
use serde_json::json;

const HEX_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const HEX_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn pod(name: &str, uid: &str, ip: Option<&str>, phase: &str, container: Option<&str>) -> Object {
    let mut status = json!({ "phase": phase });
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    if let Some(id) = container {
        status["containerStatuses"] = json!([{
            "name": "app", "image": "app:1", "imageID": "", "ready": true, "restartCount": 0,
            "containerID": format!("containerd://{id}")
        }]);
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "shop", "uid": uid,
                      "creationTimestamp": "2026-03-11T09:00:00Z" },
        "spec": { "nodeName": "node-a", "containers": [{ "name": "app", "image": "app:1" }] },
        "status": status
    });
    Object::Pod(Box::new(serde_json::from_value(pod).unwrap()))
}

fn service(name: &str, uid: &str, ips: &[&str]) -> Object {
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "shop", "uid": uid },
        "spec": { "clusterIP": ips.first().copied().unwrap_or("None"), "clusterIPs": ips, "ports": [{ "port": 80 }] }
    });
    Object::Service(Box::new(serde_json::from_value(svc).unwrap()))
}

fn slice(name: &str, uid: &str, service: &str, pods: &[&str]) -> Object {
    let endpoints: Vec<_> = pods
        .iter()
        .map(|p| json!({ "addresses": ["10.244.1.1"], "targetRef": { "kind": "Pod", "namespace": "shop", "name": p } }))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": name, "namespace": "shop", "uid": uid,
                      "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4", "endpoints": endpoints
    });
    Object::EndpointSlice(Box::new(serde_json::from_value(slice).unwrap()))
}

fn node(name: &str, uid: &str, ip: &str) -> Object {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "uid": uid },
        "status": { "addresses": [{ "type": "InternalIP", "address": ip }, { "type": "Hostname", "address": name }] }
    });
    Object::Node(Box::new(serde_json::from_value(node).unwrap()))
}

fn name(time_: u64, addr: &str, name: &str) -> Record {
    Record::Name(Name { time_, addr: addr.parse().unwrap(), name: name.into(), source: NameSource::Kubernetes })
}

fn container(time_: u64, id: &str, pod: &str, service: &str) -> Record {
    let (namespace, node) = if pod.is_empty() { ("", "") } else { ("shop", "node-a") };
    Record::Container(Box::new(Container {
        time_,
        container: id.into(),
        pod: pod.into(),
        service: service.into(),
        namespace: namespace.into(),
        node: node.into(),
    }))
}

#[test]
fn reused_ip_new_pod_before_old_deletion_is_never_withdrawn() {
    let mut s = MetadataState::new();
    let a = || pod("web-a", "uid-a", Some("10.244.1.12"), "Running", Some(HEX_A));
    assert_eq!(
        s.apply(Event::Applied(a()), 10),
        vec![name(10, "10.244.1.12", "shop/web-a"), container(10, HEX_A, "shop/web-a", "")]
    );
    // B gets the IP (A's deletion not seen yet): B from 20 on.
    let b = pod("web-b", "uid-b", Some("10.244.1.12"), "Running", Some(HEX_B));
    assert_eq!(
        s.apply(Event::Applied(b), 20),
        vec![name(20, "10.244.1.12", "shop/web-b"), container(20, HEX_B, "shop/web-b", "")]
    );
    // A is modified late (terminating): an old claim does not win the address back.
    assert_eq!(s.apply(Event::Applied(a()), 25), vec![]);
    // A's deletion withdraws A's container only, not B's name.
    assert_eq!(s.apply(Event::Deleted(a()), 30), vec![container(30, HEX_A, "", "")]);
}

#[test]
fn reused_ip_after_deletion_is_withdrawn_then_renamed() {
    let mut s = MetadataState::new();
    s.apply(Event::Applied(pod("web-a", "uid-a", Some("10.244.1.12"), "Running", None)), 10);
    assert_eq!(
        s.apply(Event::Deleted(pod("web-a", "uid-a", Some("10.244.1.12"), "Running", None)), 20),
        vec![name(20, "10.244.1.12", "")]
    );
    assert_eq!(
        s.apply(Event::Applied(pod("web-b", "uid-b", Some("10.244.1.12"), "Running", None)), 30),
        vec![name(30, "10.244.1.12", "shop/web-b")]
    );
}

#[test]
fn a_finished_pod_releases_its_ip_and_keeps_its_containers() {
    let mut s = MetadataState::new();
    s.apply(Event::Applied(pod("job-a", "uid-a", Some("10.244.2.9"), "Running", Some(HEX_A))), 10);
    assert_eq!(
        s.apply(Event::Applied(pod("job-a", "uid-a", Some("10.244.2.9"), "Succeeded", Some(HEX_A))), 20),
        vec![name(20, "10.244.2.9", "")]
    );
    assert_eq!(
        s.apply(Event::Applied(pod("job-b", "uid-b", Some("10.244.2.9"), "Running", None)), 30),
        vec![name(30, "10.244.2.9", "shop/job-b")]
    );
    assert_eq!(s.containers()[HEX_A].pod, "shop/job-a");
}

#[test]
fn services_from_endpoint_slices_sorted_and_joined() {
    let mut s = MetadataState::new();
    s.apply(Event::Applied(pod("redis-0", "uid-r", Some("10.244.2.7"), "Running", Some(HEX_A))), 10);
    assert_eq!(
        s.apply(Event::Applied(slice("redis-x", "es-1", "redis", &["redis-0"])), 20),
        vec![container(20, HEX_A, "shop/redis-0", "shop/redis")]
    );
    assert_eq!(
        s.apply(Event::Applied(slice("redis-headless-y", "es-2", "redis-headless", &["redis-0"])), 30),
        vec![container(30, HEX_A, "shop/redis-0", "shop/redis,shop/redis-headless")]
    );
    // A second slice of the same service listing the pod changes nothing; removing one of
    // the two still leaves the pod in the service.
    assert_eq!(s.apply(Event::Applied(slice("redis-z", "es-3", "redis", &["redis-0"])), 40), vec![]);
    assert_eq!(s.apply(Event::Deleted(slice("redis-x", "es-1", "redis", &["redis-0"])), 50), vec![]);
    // The pod leaves the headless service's slice.
    assert_eq!(
        s.apply(Event::Applied(slice("redis-headless-y", "es-2", "redis-headless", &[])), 60),
        vec![container(60, HEX_A, "shop/redis-0", "shop/redis")]
    );
    // Slices seen before their pod count too.
    s.apply(Event::Applied(slice("cart-1", "es-4", "cart", &["cart-0"])), 70);
    assert_eq!(
        s.apply(Event::Applied(pod("cart-0", "uid-c", None, "Pending", Some(HEX_B))), 80),
        vec![container(80, HEX_B, "shop/cart-0", "shop/cart")]
    );
}

#[test]
fn service_cluster_ips_dual_stack_and_headless() {
    let mut s = MetadataState::new();
    assert_eq!(
        s.apply(Event::Applied(service("web", "svc-1", &["10.96.0.20", "fd00:10:96::20"])), 10),
        vec![name(10, "10.96.0.20", "shop/web"), name(10, "fd00:10:96::20", "shop/web")]
    );
    assert_eq!(s.apply(Event::Applied(service("web-headless", "svc-2", &[])), 20), vec![]);
    assert_eq!(
        s.apply(Event::Deleted(service("web", "svc-1", &["10.96.0.20", "fd00:10:96::20"])), 30),
        vec![name(30, "10.96.0.20", ""), name(30, "fd00:10:96::20", "")]
    );
}

#[test]
fn node_internal_ip_names_the_node() {
    let mut s = MetadataState::new();
    assert_eq!(s.apply(Event::Applied(node("node-a", "n-1", "10.0.1.10")), 10), vec![name(10, "10.0.1.10", "node-a")]);
    assert_eq!(s.apply(Event::Applied(node("node-a", "n-1", "10.0.1.10")), 20), vec![]);
}

#[test]
fn a_relist_withdraws_what_it_no_longer_lists_and_nothing_else() {
    let mut s = MetadataState::new();
    s.apply(Event::RelistStarted(Kind::Pod), 1);
    s.apply(Event::Applied(pod("a", "uid-a", Some("10.244.1.1"), "Running", Some(HEX_A))), 1);
    s.apply(Event::Applied(pod("b", "uid-b", Some("10.244.1.2"), "Running", Some(HEX_B))), 1);
    assert_eq!(s.apply(Event::RelistDone(Kind::Pod), 1), vec![]);
    // After a 410: the relist lists a (unchanged) but not b.
    assert_eq!(s.apply(Event::RelistStarted(Kind::Pod), 10), vec![]);
    assert_eq!(s.apply(Event::Applied(pod("a", "uid-a", Some("10.244.1.1"), "Running", Some(HEX_A))), 11), vec![]);
    assert_eq!(
        s.apply(Event::RelistDone(Kind::Pod), 12),
        vec![name(12, "10.244.1.2", ""), container(12, HEX_B, "", "")]
    );
    // A relist of another kind leaves pods alone.
    s.apply(Event::RelistStarted(Kind::Node), 20);
    assert_eq!(s.apply(Event::RelistDone(Kind::Node), 21), vec![]);
    assert_eq!(s.names().len(), 1);
}

#[test]
fn bad_input_is_counted_never_a_panic_and_times_never_go_back() {
    let mut s = MetadataState::new();
    let nameless: Object = Object::Pod(Box::new(serde_json::from_value(json!({"metadata": {}})).unwrap()));
    assert_eq!(s.apply(Event::Applied(nameless.clone()), 5), vec![]);
    assert_eq!(s.apply(Event::Deleted(nameless), 5), vec![]);
    assert_eq!(s.stats().bad_objects, 2);
    let records = s.apply(Event::Applied(pod("a", "uid-a", Some("not-an-ip"), "Running", None)), 10);
    assert_eq!(records, vec![]);
    assert_eq!(s.stats().bad_addresses, 1);
    // The clock went back: the stamp stays at the latest time used.
    let records = s.apply(Event::Applied(pod("b", "uid-b", Some("10.244.1.5"), "Running", None)), 3);
    assert_eq!(records, vec![name(10, "10.244.1.5", "shop/b")]);
    // A deletion for something never seen is nothing.
    assert_eq!(s.apply(Event::Deleted(pod("zz", "uid-zz", None, "Running", None)), 11), vec![]);
}

#[test]
fn container_ids_lose_their_runtime_prefix() {
    for prefix in ["containerd://", "cri-o://", "docker://", ""] {
        assert_eq!(container_id(&format!("{prefix}{HEX_A}")).as_deref(), Some(HEX_A));
    }
    assert_eq!(container_id("containerd://"), None);
}

/// The agent reads the id from the cgroup path (sources-ebpf/src/export.rs: the first
/// 64-hex-digit component); these are the paths each runtime and cgroup driver creates for
/// the container whose status says `<runtime>://<id>`.
#[test]
fn the_forms_match_the_cgroup_paths_the_agent_parses() {
    let paths = [
        format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b0e4f8a_2c1d_4e7b_9a3f_5d8c1b2e7f40.slice/cri-containerd-{HEX_A}.scope"),
        format!("0::/kubepods/burstable/pod6b0e4f8a-2c1d-4e7b-9a3f-5d8c1b2e7f40/{HEX_A}"),
        format!("0::/kubepods.slice/kubepods-pod6b0e4f8a_2c1d_4e7b_9a3f_5d8c1b2e7f40.slice/crio-{HEX_A}.scope"),
        format!("0::/system.slice/docker-{HEX_A}.scope"),
    ];
    for path in paths {
        // The agent's rule, restated: a path component of exactly 64 hex digits.
        let from_cgroup = path
            .rsplit(':')
            .next()
            .unwrap()
            .split(['/', '-', '.', ':'])
            .find(|p| p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(from_cgroup, container_id(&format!("containerd://{HEX_A}")).as_deref(), "{path}");
    }
}
