//! The differential dataflow of the query, mode `total`.
//!
//! ```text
//!  addresses of conn keys in force ── distinct ─────────┐  ips ─┐
//!                                                       └─ join ─┴─ filter: kept addresses
//!  names (addr, source) -> name ── reduce FirstNameBySource ─┐          │
//!                                        left join ─────────┴──────────┴─> addr -> to_entity ──┐
//!  procs ── left join containers (by container id) ── × group_by ──> upid -> (from_entity,    │
//!                                                                              cmdline) ──────┤
//!  conns (upid, addr) -> ((port, role), (sent, recv)): conn keys in force, windowed by the stage ┤
//!                                                                                             ▼
//!   current::rows (max per (upid, addr), hash join as of the frontier) ──> rows ──>
//!   current::rows_and_edges (sums per edge; the rows passed on) ──> rows and edges
//! ```
//!
//! The labels (names, processes, parameters) are differential collections; the churn of bytes
//! meets them only in `current::rows`, which keeps the current state instead of a history.
//!
//! Every input is a collection (the stage turns samples into "value in force at T"), so a
//! change of `ips` or `group_by` moves only what it touches: one address or process at a time.

use crate::graph::{GraphRecord, Text};
use crate::order::append_or_swap;
use crate::params::{GroupBy, IpFilter};
use crate::stage::{ContainerInfo, ProcessInfo};
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::VecCollection;
use flowgraph_schema::{EventTime, NameSource, TraceRole, Upid};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Exchange, Probe};
use timely::worker::Worker;

/// A connection key of a peer: (remote port, role).
pub(crate) type Member = (u16, TraceRole);

/// A connection key in force, by its peer (upid, addr): (its member, (bytes sent, bytes
/// received) of its latest sample in the window).
pub(crate) type ConnData = ((Upid, IpAddr), (Member, (u64, u64)));

/// Where the dataflow leaves its output for the job to release.
pub(crate) type OutputBuffer = Rc<RefCell<Vec<(GraphRecord, EventTime, isize)>>>;

/// The dataflow's input handles.
pub(crate) struct Inputs {
    pub(crate) conns: InputSession<EventTime, ConnData, isize>,
    /// The remote address of every connection key in force (one per key): changes only when
    /// a key appears or expires, not with its bytes.
    pub(crate) present: InputSession<EventTime, IpAddr, isize>,
    pub(crate) procs: InputSession<EventTime, (Upid, ProcessInfo), isize>,
    pub(crate) names: InputSession<EventTime, ((IpAddr, NameSource), Text), isize>,
    pub(crate) containers: InputSession<EventTime, (Text, ContainerInfo), isize>,
    pub(crate) ips: InputSession<EventTime, IpFilter, isize>,
    pub(crate) group_by: InputSession<EventTime, GroupBy, isize>,
}

impl Inputs {
    pub(crate) fn advance_to(&mut self, time: EventTime) {
        self.conns.advance_to(time);
        self.present.advance_to(time);
        self.procs.advance_to(time);
        self.names.advance_to(time);
        self.containers.advance_to(time);
        self.ips.advance_to(time);
        self.group_by.advance_to(time);
    }

    pub(crate) fn flush(&mut self) {
        self.conns.flush();
        self.present.flush();
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
        let (present_in, present) = scope.new_collection::<IpAddr, isize>();
        let (procs_in, procs) = scope.new_collection::<(Upid, ProcessInfo), isize>();
        let (names_in, names) = scope.new_collection::<((IpAddr, NameSource), Text), isize>();
        let (containers_in, containers) = scope.new_collection::<(Text, ContainerInfo), isize>();
        let (ips_in, ips) = scope.new_collection::<IpFilter, isize>();
        let (group_by_in, group_by) = scope.new_collection::<GroupBy, isize>();

        let rows = rows(conns, present, procs, containers, names, ips, group_by);
        let graph = crate::current::rows_and_edges(rows);

        // Every output goes to worker 0, which releases and publishes them (one sink for a
        // cluster); on one worker this is a local hand-over.
        let gathered = graph.inner.exchange(|_| 0);
        // Appended to the job's buffer: swapped in whole, not copied, when that is empty (as
        // after every release). The probe after it passes a time only once every update
        // before it is in the buffer.
        let (probe, _) = gathered
            .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Output", move |_, _| {
                move |input, _| input.for_each(|_, updates| append_or_swap(&mut output.borrow_mut(), updates))
            })
            .probe();

        let inputs = Inputs {
            conns: conns_in,
            present: present_in,
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

/// The table rows of the graph (as [`GraphRecord::Row`]s).
fn rows<'s>(
    conns: Coll<'s, ConnData>,
    present: Coll<'s, IpAddr>,
    procs: Coll<'s, (Upid, ProcessInfo)>,
    containers: Coll<'s, (Text, ContainerInfo)>,
    names: Coll<'s, ((IpAddr, NameSource), Text)>,
    ips: Coll<'s, IpFilter>,
    group_by: Coll<'s, GroupBy>,
) -> Coll<'s, GraphRecord> {
    // The ips filter and the naming both depend on the address alone: decide them once per
    // distinct address, so a parameter change costs O(addresses), not O(rows).
    let addresses = present.distinct();
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
    let named = kept.clone().map(|addr| (addr, ())).join(best_name.clone()).map(|(addr, ((), name))| (addr, name));
    let unnamed = kept
        .map(|addr| (addr, ()))
        .antijoin(best_name.map(|(addr, _)| addr))
        .map(|(addr, ())| (addr, Text::from(addr.to_string())));
    let to_entity = named.concat(unnamed);

    // A process's empty Kubernetes fields come from its container's pod, when the metadata
    // source knows it (a left join by container id).
    let pods = containers.filter(|(_, pod)| !pod.pod.is_empty());
    let by_container = procs.map(|(upid, process)| (process.container.clone(), (upid, process)));
    let filled =
        by_container.clone().join(pods.clone()).map(|(_, ((upid, process), pod))| (upid, process.filled_from(&pod)));
    let unfilled =
        by_container.antijoin(pods.map(|(container, _)| container)).map(|(_, (upid, process))| (upid, process));
    let procs = filled.concat(unfilled);

    // from_entity and cmdline per upid under the current grouping; '' entities drop out here.
    let entities = procs.map(|(upid, process)| ((), (upid, process))).join(group_by.map(|g| ((), g))).flat_map(
        |((), ((upid, process), group_by))| {
            let entity = group_by.entity_text(&process);
            (!entity.is_empty()).then(|| (upid, (entity.clone(), process.cmdline.clone())))
        },
    );

    // The churn of bytes meets the labels in one operator that keeps only the current state.
    crate::current::rows(conns, entities, to_entity)
}
