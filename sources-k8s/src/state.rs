//! The pure core: Kubernetes objects in, container and name records out.
//!
//! [`MetadataState::apply`] takes one watch event and the wall-clock time it was observed at,
//! updates what it knows, and returns the records whose value changed, stamped with that time
//! (so the pipeline applies them from then on, never before). No I/O: the kube watchers in
//! [`crate::watch`] feed it, tests feed it objects parsed from JSON.
//!
//! Rules:
//! * a container id (from `status.*containerStatuses[].containerID`, runtime prefix stripped)
//!   belongs to its pod: [`Container`] record with pod `ns/name`, namespace, node, and every
//!   service whose EndpointSlices target the pod, `ns/name` sorted and joined by ',' (one
//!   entity per pod, so a pod behind two services is not counted twice in edge sums);
//! * an address has at most one Kubernetes name: pod IPs (`ns/pod`), service cluster IPs
//!   (`ns/service`), node InternalIPs (node name). When several objects claim one address (a
//!   pod IP reused while the old pod's deletion has not arrived yet), the newest claim wins:
//!   the one first observed latest, then the newest object. So the edge moves to the new pod
//!   when its claim is observed, and the old pod's late deletion does not withdraw it;
//! * a pod claims its IPs while it is not finished (Succeeded or Failed pods have released
//!   them) and not on the host network (those IPs are the node's);
//! * after a relist, objects of that kind which the new list lacks are deleted.

use flowgraph_schema::{Container, EventTime, Name, NameSource, Record};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

/// The kinds of object the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1/Pod`.
    Pod,
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Node`.
    Node,
}

impl Kind {
    /// Every kind, in the order the source starts its watchers.
    pub const ALL: [Kind; 4] = [Kind::Pod, Kind::Service, Kind::EndpointSlice, Kind::Node];

    /// The resource's plural name, as in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Node => "nodes",
        }
    }
}

/// One watched object.
#[derive(Debug, Clone)]
pub enum Object {
    /// A pod.
    Pod(Box<Pod>),
    /// A service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A node.
    Node(Box<Node>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Node(_) => Kind::Node,
        }
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
        }
    }
}

/// What a watcher saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// An object was added or modified (also: listed during a relist).
    Applied(Object),
    /// An object was deleted.
    Deleted(Object),
    /// A (re)list of this kind begins: objects it does not list are gone at its end.
    RelistStarted(Kind),
    /// The (re)list of this kind is complete.
    RelistDone(Kind),
}

/// Counters of input the state could not use; they never stop it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Addresses in objects that are not IP addresses (skipped).
    pub bad_addresses: u64,
    /// Objects without a uid, name or namespace where one is needed (skipped).
    pub bad_objects: u64,
}

/// Identity of a stored object: its kind and uid.
type Key = (Kind, String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct PodEntry {
    namespace: String,
    name: String,
    node: String,
    containers: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    created: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceEntry {
    namespace: String,
    /// The service the slice belongs to (label `kubernetes.io/service-name`).
    service: String,
    /// Pod names (in `namespace`) the slice's endpoints refer to.
    pods: BTreeSet<String>,
}

/// An object's claim on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    owner: Key,
    name: String,
    /// When this claim was first observed.
    since: EventTime,
    created: Option<Timestamp>,
}

impl Claim {
    /// Newest claim wins: first observed latest, then newest object, then a fixed order.
    fn rank(&self) -> (EventTime, Option<Timestamp>, &str, &Key) {
        (self.since, self.created, &self.name, &self.owner)
    }
}

/// Every object's claims on addresses (pods, services and nodes alike).
#[derive(Debug, Clone, Default)]
struct Claims {
    by_addr: BTreeMap<IpAddr, Vec<Claim>>,
    /// The addresses each owner claims (to withdraw them on change or deletion).
    by_owner: HashMap<Key, BTreeSet<IpAddr>>,
}

impl Claims {
    /// Sets `owner`'s claims to `addrs` named `name`; adds the addresses touched to `dirty`.
    fn set(
        &mut self,
        owner: &Key,
        name: &str,
        created: Option<Timestamp>,
        addrs: BTreeSet<IpAddr>,
        now: EventTime,
        dirty: &mut BTreeSet<IpAddr>,
    ) {
        let old = self.by_owner.remove(owner).unwrap_or_default();
        for addr in old.difference(&addrs) {
            if let Some(claims) = self.by_addr.get_mut(addr) {
                claims.retain(|c| &c.owner != owner);
                if claims.is_empty() {
                    self.by_addr.remove(addr);
                }
            }
            dirty.insert(*addr);
        }
        for addr in &addrs {
            let claims = self.by_addr.entry(*addr).or_default();
            match claims.iter_mut().find(|c| &c.owner == owner) {
                // Kept: the claim keeps its first-observed time, so a later modification of
                // an old pod does not win back an address a newer pod has taken.
                Some(claim) if claim.name == name => continue,
                Some(claim) => claim.name = name.to_string(),
                None => claims.push(Claim { owner: owner.clone(), name: name.to_string(), since: now, created }),
            }
            dirty.insert(*addr);
        }
        if !addrs.is_empty() {
            self.by_owner.insert(owner.clone(), addrs);
        }
    }

    fn winner(&self, addr: &IpAddr) -> Option<&str> {
        let claims = self.by_addr.get(addr)?;
        claims.iter().max_by(|a, b| a.rank().cmp(&b.rank())).map(|c| c.name.as_str())
    }
}

/// What a container record says, less its id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerValue {
    pod: String,
    service: String,
    namespace: String,
    node: String,
}

/// Everything the source knows, and what it has emitted.
#[derive(Debug, Default)]
pub struct MetadataState {
    pods: HashMap<String, PodEntry>,
    /// Pod uids by (namespace, name), for EndpointSlice targetRefs, which name pods.
    pod_uids: HashMap<(String, String), BTreeSet<String>>,
    /// Which pod a container id belongs to.
    container_pod: HashMap<String, String>,
    slices: HashMap<String, SliceEntry>,
    /// Per (namespace, pod name): services and how many of their slices list the pod.
    pod_services: HashMap<(String, String), BTreeMap<String, u32>>,
    /// Uids of services and nodes, for relist reconciliation (their state is in `claims`).
    services: HashSet<String>,
    nodes: HashSet<String>,
    claims: Claims,
    /// Per kind being relisted: the uids listed so far.
    relisting: HashMap<Kind, HashSet<String>>,
    emitted_names: HashMap<IpAddr, String>,
    emitted_containers: HashMap<String, ContainerValue>,
    /// The latest time stamped, so stamps never go backwards even if the clock does.
    clock: EventTime,
    stats: StateStats,
}

/// Changes to turn into records at the end of one `apply`.
#[derive(Default)]
struct Dirty {
    addrs: BTreeSet<IpAddr>,
    containers: BTreeSet<String>,
}

impl MetadataState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the state could not use so far.
    pub fn stats(&self) -> StateStats {
        self.stats
    }

    /// The time the next records are stamped with at `now`: never before an earlier stamp.
    pub fn stamp(&mut self, now: EventTime) -> EventTime {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// Applies one event observed at `now` (wall-clock ns); returns the records that changed,
    /// stamped with `now` (or the latest earlier stamp, if the clock went back), sorted.
    pub fn apply(&mut self, event: Event, now: EventTime) -> Vec<Record> {
        let now = self.stamp(now);
        let mut dirty = Dirty::default();
        match event {
            Event::Applied(object) => {
                if let Some(uid) = self.uid_of(object.meta()) {
                    if let Some(seen) = self.relisting.get_mut(&object.kind()) {
                        seen.insert(uid.clone());
                    }
                    self.upsert(uid, object, now, &mut dirty);
                }
            }
            Event::Deleted(object) => {
                if let Some(uid) = self.uid_of(object.meta()) {
                    self.remove(object.kind(), &uid, now, &mut dirty);
                }
            }
            Event::RelistStarted(kind) => {
                // A relist that failed and restarts starts over too.
                self.relisting.insert(kind, HashSet::new());
            }
            Event::RelistDone(kind) => {
                if let Some(seen) = self.relisting.remove(&kind) {
                    let known: Vec<String> = match kind {
                        Kind::Pod => self.pods.keys().cloned().collect(),
                        Kind::Service => self.services.iter().cloned().collect(),
                        Kind::EndpointSlice => self.slices.keys().cloned().collect(),
                        Kind::Node => self.nodes.iter().cloned().collect(),
                    };
                    let mut gone: Vec<String> = known.into_iter().filter(|uid| !seen.contains(uid)).collect();
                    gone.sort();
                    for uid in gone {
                        self.remove(kind, &uid, now, &mut dirty);
                    }
                }
            }
        }
        self.records(dirty, now)
    }

    /// The uid identifying an object (real API objects always have one; hand-made ones fall
    /// back to namespace/name).
    fn uid_of(&mut self, meta: &ObjectMeta) -> Option<String> {
        match (&meta.uid, &meta.name) {
            (Some(uid), _) if !uid.is_empty() => Some(uid.clone()),
            (_, Some(name)) if !name.is_empty() => {
                Some(format!("{}/{name}", meta.namespace.as_deref().unwrap_or_default()))
            }
            _ => {
                self.stats.bad_objects += 1;
                None
            }
        }
    }

    fn upsert(&mut self, uid: String, object: Object, now: EventTime, dirty: &mut Dirty) {
        match object {
            Object::Pod(pod) => self.upsert_pod(uid, &pod, now, dirty),
            Object::Service(service) => {
                let meta = &service.metadata;
                let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
                    self.stats.bad_objects += 1;
                    return;
                };
                let spec = service.spec.as_ref();
                let mut texts: Vec<&String> = spec.and_then(|s| s.cluster_ips.as_ref()).into_iter().flatten().collect();
                texts.extend(spec.and_then(|s| s.cluster_ip.as_ref()));
                // "None" is a headless service: no address of its own.
                let addrs = self.parse_addrs(texts.into_iter().filter(|t| !t.is_empty() && *t != "None"));
                self.services.insert(uid.clone());
                let created = meta.creation_timestamp.as_ref().map(|t| t.0);
                let key = (Kind::Service, uid);
                self.claims.set(&key, &format!("{namespace}/{name}"), created, addrs, now, &mut dirty.addrs);
            }
            Object::Node(node) => {
                let Some(name) = node.metadata.name.clone() else {
                    self.stats.bad_objects += 1;
                    return;
                };
                let internal = node
                    .status
                    .as_ref()
                    .and_then(|s| s.addresses.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|a| a.type_ == "InternalIP")
                    .map(|a| &a.address);
                let addrs = self.parse_addrs(internal);
                self.nodes.insert(uid.clone());
                let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
                self.claims.set(&(Kind::Node, uid), &name, created, addrs, now, &mut dirty.addrs);
            }
            Object::EndpointSlice(slice) => {
                let meta = &slice.metadata;
                let Some(namespace) = meta.namespace.clone() else {
                    self.stats.bad_objects += 1;
                    return;
                };
                // Slices not managed for a service (no service-name label) name no service.
                let service = meta.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned();
                let pods: BTreeSet<String> = slice
                    .endpoints
                    .iter()
                    .filter_map(|e| e.target_ref.as_ref())
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .filter(|r| r.namespace.as_deref().is_none_or(|ns| ns == namespace))
                    .filter_map(|r| r.name.clone())
                    .collect();
                let entry = service.map(|service| SliceEntry { namespace, service, pods });
                self.set_slice(uid, entry, dirty);
            }
        }
    }

    fn upsert_pod(&mut self, uid: String, pod: &Pod, now: EventTime, dirty: &mut Dirty) {
        let meta = &pod.metadata;
        let (Some(namespace), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            self.stats.bad_objects += 1;
            return;
        };
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_default();
        let containers: BTreeSet<String> = status
            .into_iter()
            .flat_map(|s| {
                [&s.init_container_statuses, &s.container_statuses, &s.ephemeral_container_statuses]
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter_map(|c| c.container_id.as_deref().and_then(container_id))
            .collect();
        let finished = matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let ips = if finished || host_network {
            BTreeSet::new()
        } else {
            let mut texts: Vec<&String> =
                status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| &p.ip).collect();
            texts.extend(status.and_then(|s| s.pod_ip.as_ref()));
            self.parse_addrs(texts.into_iter().filter(|t| !t.is_empty()))
        };
        let entry = PodEntry {
            namespace: namespace.clone(),
            name: name.clone(),
            node,
            containers,
            ips: ips.clone(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
        };
        let old = self.pods.insert(uid.clone(), entry.clone());
        if let Some(old) = &old {
            dirty.containers.extend(old.containers.iter().cloned());
            if (&old.namespace, &old.name) != (&namespace, &name) {
                self.forget_name(&uid, &old.namespace, &old.name);
            }
        }
        self.pod_uids.entry((namespace.clone(), name.clone())).or_default().insert(uid.clone());
        for id in &entry.containers {
            self.container_pod.insert(id.clone(), uid.clone());
            dirty.containers.insert(id.clone());
        }
        if let Some(old) = old {
            for id in old.containers.difference(&entry.containers) {
                if self.container_pod.get(id) == Some(&uid) {
                    self.container_pod.remove(id);
                }
            }
        }
        let key = (Kind::Pod, uid);
        self.claims.set(&key, &format!("{namespace}/{name}"), entry.created, ips, now, &mut dirty.addrs);
    }

    fn forget_name(&mut self, uid: &str, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(uids) = self.pod_uids.get_mut(&key) {
            uids.remove(uid);
            if uids.is_empty() {
                self.pod_uids.remove(&key);
            }
        }
    }

    /// Replaces a slice (None: removes it) and marks the containers of the pods it touches.
    fn set_slice(&mut self, uid: String, entry: Option<SliceEntry>, dirty: &mut Dirty) {
        let old = match &entry {
            Some(entry) => self.slices.insert(uid, entry.clone()),
            None => self.slices.remove(&uid),
        };
        if old == entry {
            return;
        }
        let mut touched = BTreeSet::new();
        if let Some(old) = old {
            for pod in &old.pods {
                let key = (old.namespace.clone(), pod.clone());
                if let Some(services) = self.pod_services.get_mut(&key) {
                    if let Some(count) = services.get_mut(&old.service) {
                        *count -= 1;
                        if *count == 0 {
                            services.remove(&old.service);
                        }
                    }
                    if services.is_empty() {
                        self.pod_services.remove(&key);
                    }
                }
                touched.insert(key);
            }
        }
        if let Some(new) = entry {
            for pod in &new.pods {
                let key = (new.namespace.clone(), pod.clone());
                *self.pod_services.entry(key.clone()).or_default().entry(new.service.clone()).or_insert(0) += 1;
                touched.insert(key);
            }
        }
        for key in touched {
            for uid in self.pod_uids.get(&key).into_iter().flatten() {
                if let Some(pod) = self.pods.get(uid) {
                    dirty.containers.extend(pod.containers.iter().cloned());
                }
            }
        }
    }

    fn remove(&mut self, kind: Kind, uid: &str, now: EventTime, dirty: &mut Dirty) {
        let key = (kind, uid.to_string());
        match kind {
            Kind::Pod => {
                let Some(old) = self.pods.remove(uid) else { return };
                for id in &old.containers {
                    if self.container_pod.get(id).map(String::as_str) == Some(uid) {
                        self.container_pod.remove(id);
                    }
                    dirty.containers.insert(id.clone());
                }
                self.forget_name(uid, &old.namespace, &old.name);
            }
            Kind::Service => {
                self.services.remove(uid);
            }
            Kind::Node => {
                self.nodes.remove(uid);
            }
            Kind::EndpointSlice => {
                self.set_slice(uid.to_string(), None, dirty);
                return;
            }
        }
        self.claims.set(&key, "", None, BTreeSet::new(), now, &mut dirty.addrs);
    }

    fn parse_addrs<'a>(&mut self, texts: impl Iterator<Item = &'a String>) -> BTreeSet<IpAddr> {
        let mut addrs = BTreeSet::new();
        // podIP repeats podIPs[0], clusterIP clusterIPs[0]: count a bad one once.
        for text in texts.collect::<BTreeSet<_>>() {
            match text.parse::<IpAddr>() {
                Ok(addr) => {
                    addrs.insert(addr.to_canonical());
                }
                Err(_) => self.stats.bad_addresses += 1,
            }
        }
        addrs
    }

    fn container_value(&self, id: &str) -> Option<ContainerValue> {
        let pod = self.pods.get(self.container_pod.get(id)?)?;
        let service = self
            .pod_services
            .get(&(pod.namespace.clone(), pod.name.clone()))
            .map(|services| {
                // BTreeMap keys are sorted; every service is in the pod's namespace.
                services.keys().map(|s| format!("{}/{s}", pod.namespace)).collect::<Vec<_>>().join(",")
            })
            .unwrap_or_default();
        Some(ContainerValue {
            pod: format!("{}/{}", pod.namespace, pod.name),
            service,
            namespace: pod.namespace.clone(),
            node: pod.node.clone(),
        })
    }

    /// The records for what changed: names first, then containers, each sorted.
    fn records(&mut self, dirty: Dirty, now: EventTime) -> Vec<Record> {
        let mut out = Vec::new();
        for addr in dirty.addrs {
            let name = self.claims.winner(&addr).map(str::to_string);
            let emitted = self.emitted_names.get(&addr);
            if name.as_ref() == emitted {
                continue;
            }
            match name {
                Some(name) => {
                    self.emitted_names.insert(addr, name.clone());
                    out.push(Record::Name(Name { time_: now, addr, name, source: NameSource::Kubernetes }));
                }
                None => {
                    self.emitted_names.remove(&addr);
                    out.push(Record::Name(Name {
                        time_: now,
                        addr,
                        name: String::new(),
                        source: NameSource::Kubernetes,
                    }));
                }
            }
        }
        for id in dirty.containers {
            let value = self.container_value(&id);
            if value.as_ref() == self.emitted_containers.get(&id) {
                continue;
            }
            let record = match value {
                Some(value) => {
                    self.emitted_containers.insert(id.clone(), value.clone());
                    Container {
                        time_: now,
                        container: id,
                        pod: value.pod,
                        service: value.service,
                        namespace: value.namespace,
                        node: value.node,
                    }
                }
                None => {
                    self.emitted_containers.remove(&id);
                    Container { time_: now, container: id, ..Default::default() }
                }
            };
            out.push(Record::Container(Box::new(record)));
        }
        out
    }

    /// Every name and container in force, stamped at `now`, sorted: re-sent regularly so a
    /// consumer that rebuilds from a recent part of the stream (or a topic whose retention
    /// has dropped old messages) still has them. Same values, so nothing changes downstream.
    pub fn reannounce(&mut self, now: EventTime) -> Vec<Record> {
        let now = self.stamp(now);
        let names: BTreeMap<_, _> = self.emitted_names.iter().collect();
        let containers: BTreeMap<_, _> = self.emitted_containers.iter().collect();
        let mut out: Vec<Record> = names
            .into_iter()
            .map(|(addr, name)| {
                Record::Name(Name { time_: now, addr: *addr, name: name.clone(), source: NameSource::Kubernetes })
            })
            .collect();
        out.extend(containers.into_iter().map(|(id, v)| {
            Record::Container(Box::new(Container {
                time_: now,
                container: id.clone(),
                pod: v.pod.clone(),
                service: v.service.clone(),
                namespace: v.namespace.clone(),
                node: v.node.clone(),
            }))
        }));
        out
    }

    /// Addresses named now, and by what (for tests and diagnostics).
    pub fn names(&self) -> BTreeMap<IpAddr, String> {
        self.emitted_names.iter().map(|(a, n)| (*a, n.clone())).collect()
    }

    /// Container ids known now, with their pod (for tests and diagnostics).
    pub fn containers(&self) -> BTreeMap<String, Container> {
        self.emitted_containers
            .iter()
            .map(|(id, v)| {
                let c = Container {
                    time_: 0,
                    container: id.clone(),
                    pod: v.pod.clone(),
                    service: v.service.clone(),
                    namespace: v.namespace.clone(),
                    node: v.node.clone(),
                };
                (id.clone(), c)
            })
            .collect()
    }
}

/// The container id the agent reads from the cgroup path, from a status `containerID`
/// (`containerd://<id>`, `cri-o://<id>`, `docker://<id>`): the part after `://`.
pub fn container_id(status_id: &str) -> Option<String> {
    let id = status_id.split_once("://").map_or(status_id, |(_, id)| id);
    (!id.is_empty()).then(|| id.to_string())
}
