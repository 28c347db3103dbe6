//! The differential dataflow of the query, mode `total`.
//!
//! ```text
//!  conns (upid, addr) -> (max sent, max recv)   windowed by the stage, max folded by the job
//!         │                                   ips ─┐
//!         │   addresses seen ── distinct ── join ─┴─ filter: kept addresses
//!         │      names (addr, source) -> name ─ reduce FirstNameBySource ─┐
//!         │                                         └─ left join ─────────┴─> addr -> to_entity
//!         ├─ peers (upid, addr), distinct ── join by addr ───────────┘
//!         │        │   procs ── left join containers (by container id) ──> filled processes
//!         │        └─ join by upid with  filled processes × group_by ──> labels:
//!         │             (upid, addr) -> (from_entity, cmdline, to_entity; loopback: from_entity)
//!         └─ join by (upid, addr) with labels ──> rows ── sums as differences, count_total ──> edges
//! ```
//!
//! Every input is a collection (the stage turns samples into "value in force at T"), so a
//! change of `ips` or `group_by` moves only what it touches: one address or process at a time.

use crate::graph::{Edge, GraphRecord, Row, Text};
use crate::stage::{ContainerInfo, ProcessInfo};
use crate::params::{GroupBy, IpFilter};
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use flowgraph_schema::{EventTime, NameSource, Upid};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::worker::Worker;

/// The max bytes of one (upid, addr) over its connection keys in force.
pub(crate) type ConnData = ((Upid, IpAddr), (u64, u64));

/// Where the dataflow leaves its output for the job to release.
pub(crate) type OutputBuffer = Rc<RefCell<Vec<(GraphRecord, EventTime, isize)>>>;

/// The dataflow's input handles.
pub(crate) struct Inputs {
    pub(crate) conns: InputSession<EventTime, ConnData, isize>,
    pub(crate) procs: InputSession<EventTime, (Upid, ProcessInfo), isize>,
    pub(crate) names: InputSession<EventTime, ((IpAddr, NameSource), Text), isize>,
    pub(crate) containers: InputSession<EventTime, (Text, ContainerInfo), isize>,
    pub(crate) ips: InputSession<EventTime, IpFilter, isize>,
    pub(crate) group_by: InputSession<EventTime, GroupBy, isize>,
}

impl Inputs {
    pub(crate) fn advance_to(&mut self, time: EventTime) {
        self.conns.advance_to(time);
        self.procs.advance_to(time);
        self.names.advance_to(time);
        self.containers.advance_to(time);
        self.ips.advance_to(time);
        self.group_by.advance_to(time);
    }

    pub(crate) fn flush(&mut self) {
        self.conns.flush();
        self.procs.flush();
        self.names.flush();
        self.containers.flush();
        self.ips.flush();
        self.group_by.flush();
    }
}

/// Builds the dataflow on `worker`; its output updates are appended to `output`.
pub(crate) fn build(worker: &mut Worker, output: OutputBuffer) -> (Inputs, ProbeHandle<EventTime>) {
    worker.dataflow_named::<EventTime, _, _>("net_flow_graph", move |scope| {
        let (conns_in, conns) = scope.new_collection::<ConnData, isize>();
        let (procs_in, procs) = scope.new_collection::<(Upid, ProcessInfo), isize>();
        let (names_in, names) = scope.new_collection::<((IpAddr, NameSource), Text), isize>();
        let (containers_in, containers) = scope.new_collection::<(Text, ContainerInfo), isize>();
        let (ips_in, ips) = scope.new_collection::<IpFilter, isize>();
        let (group_by_in, group_by) = scope.new_collection::<GroupBy, isize>();

        let rows = rows(conns, procs, containers, names, ips, group_by);
        let edges = edges(rows.clone());

        // Every output goes to worker 0, which releases and publishes them (one sink for a
        // cluster); on one worker this is a local hand-over.
        let gathered = rows
            .map(GraphRecord::Row)
            .concat(edges.map(GraphRecord::Edge))
            .inner
            .exchange(|_| 0);
        let (probe, _) = gathered
            .inspect_core(move |event| {
                if let Ok((_stamp, updates)) = event {
                    output.borrow_mut().extend(updates.iter().cloned());
                }
            })
            .probe();

        let inputs = Inputs {
            conns: conns_in,
            procs: procs_in,
            names: names_in,
            containers: containers_in,
            ips: ips_in,
            group_by: group_by_in,
        };
        (inputs, probe)
    })
}

type Coll<'s, D> = VecCollection<'s, EventTime, D, isize>;

/// The table rows of the graph.
fn rows<'s>(
    conns: Coll<'s, ConnData>,
    procs: Coll<'s, (Upid, ProcessInfo)>,
    containers: Coll<'s, (Text, ContainerInfo)>,
    names: Coll<'s, ((IpAddr, NameSource), Text)>,
    ips: Coll<'s, IpFilter>,
    group_by: Coll<'s, GroupBy>,
) -> Coll<'s, Row> {
    // Already the max per (upid, addr) over its connection keys in force (the job folds it).
    let maxed = conns;

    // The ips filter and the naming both depend on the address alone: decide them once per
    // distinct address, so a parameter change costs O(addresses), not O(rows).
    let addresses = maxed.clone().map(|((_, addr), _)| addr).distinct();
    let kept = addresses
        .map(|addr| ((), addr))
        .join(ips.map(|filter| ((), filter)))
        .filter(|(_, (addr, filter))| filter.matches(addr))
        .map(|(_, (addr, _))| addr);
    // One name per address: the first source in NameSource order that names it ('' is a
    // source withdrawing its name). The reduce sees its values sorted, source first.
    let best_name = names
        .filter(|(_, name)| !name.is_empty())
        .map(|((addr, source), name)| (addr, (source, name)))
        .reduce_named("FirstNameBySource", |_addr, names, out| {
            let ((_, name), _) = names[0];
            out.push((name.clone(), 1));
        });
    let named = kept
        .clone()
        .map(|addr| (addr, ()))
        .join(best_name.clone())
        .map(|(addr, ((), name))| (addr, name));
    let unnamed = kept
        .map(|addr| (addr, ()))
        .antijoin(best_name.map(|(addr, _)| addr))
        .map(|(addr, ())| (addr, Text::from(addr.to_string())));
    let to_entity = named.concat(unnamed);

    // A process's empty Kubernetes fields come from its container's pod, when the metadata
    // source knows it (a left join by container id).
    let pods = containers.filter(|(_, pod)| !pod.pod.is_empty());
    let by_container = procs.map(|(upid, process)| (process.container.clone(), (upid, process)));
    let filled = by_container
        .clone()
        .join(pods.clone())
        .map(|(_, ((upid, process), pod))| (upid, process.filled_from(&pod)));
    let unfilled = by_container
        .antijoin(pods.map(|(container, _)| container))
        .map(|(_, (upid, process))| (upid, process));
    let procs = filled.concat(unfilled);

    // from_entity and cmdline per upid under the current grouping; '' entities drop out here.
    let entities = procs
        .map(|(upid, process)| ((), (upid, process)))
        .join(group_by.map(|g| ((), g)))
        .flat_map(|((), ((upid, process), group_by))| {
            let entity = group_by.entity_text(&process);
            (!entity.is_empty()).then(|| (upid, (entity.clone(), process.cmdline.clone())))
        });

    // Each (upid, addr)'s labels, from the set of peers alone: bytes change every export
    // period, the peer set and its names rarely, so only the last join sees the churn of bytes.
    let peers = maxed.clone().map(|(peer, _)| peer).distinct();
    let labels = peers
        .map(|(upid, addr)| (addr, upid))
        .join(to_entity)
        .map(|(addr, (upid, to_entity))| (upid, (addr, to_entity)))
        .join(entities)
        .map(|(upid, ((addr, to_entity), (from_entity, cmdline)))| {
            // Loopback traffic stays inside the process's own entity (Pixie's sidecar
            // rule): a name for 127.0.0.1 would merge every host's loopback into one node.
            let to_entity = if addr.is_loopback() { from_entity.clone() } else { to_entity };
            ((upid, addr), (from_entity, cmdline, to_entity))
        });

    maxed.join(labels).map(
        |((upid, remote_addr), ((bytes_sent, bytes_recv), (from_entity, cmdline, to_entity)))| Row {
            from_entity,
            upid,
            cmdline,
            remote_addr,
            to_entity,
            bytes_sent,
            bytes_recv,
        },
    )
}

/// The graph edges: rows summed per (from_entity, to_entity).
///
/// The sums ride in the difference type, (rows, bytes sent, bytes received), so a changed row
/// costs an addition to its edge's accumulation (`count_total`, for totally ordered times)
/// instead of a reduce that re-reads every row of the edge. The row count keeps an edge whose
/// rows all have zero bytes from summing to "absent".
fn edges(rows: Coll<'_, Row>) -> Coll<'_, Edge> {
    rows.explode(|row| {
        let sums = (1isize, row.bytes_sent as isize, row.bytes_recv as isize);
        Some(((row.from_entity, row.to_entity), sums))
    })
    .count_total()
    .map(|((from_entity, to_entity), (_rows, bytes_sent, bytes_recv))| Edge {
        from_entity,
        to_entity,
        bytes_sent: bytes_sent as u64,
        bytes_recv: bytes_recv as u64,
    })
}
