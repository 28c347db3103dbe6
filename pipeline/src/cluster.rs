//! The job on a timely cluster: several workers, in one process or several.
//!
//! ```text
//!  worker w: its Kafka partitions ──► routes input (at w's watermark) ─┐
//!                                                                     │ exchange by key: conns and
//!                                                                     │ processes by upid, names by
//!                                                                     ▼ address; max-seen to all
//!  worker k: records of its keys ──► Job (stages + dataflow, every worker) ── outputs ──► worker 0
//!            routes frontier = min over workers' watermarks ──► the Job's watermark
//! ```
//!
//! Each worker reads its own partitions and feeds the records into a small routing dataflow
//! that sends every record to the worker owning its key, so a key's stage (latest sample,
//! window) sees all of the key's records wherever they were read. The routing dataflow's
//! frontier is the minimum of every worker's watermark: once it passes T, every record before T
//! has reached its owner, and each worker's [`Job`] may complete the times before T (a worker
//! whose sources have nothing to say, empty or idle, follows the others' watermark, announced
//! on the same dataflow, rather than hold it: [`ClusterJob::follow_others`]). The
//! dataflow gathers all outputs on worker 0, which alone releases updates and progress marks.
//! Every worker completes times at multiples of the progress interval, so that all complete
//! the same times whenever each sees the frontier (see [`ClusterJob::step`]). One worker,
//! several threads and several processes publish the same updates at every time; the marks
//! between them fall wherever the cluster's frontier was when it crossed an interval.

use crate::graph::Output;
use crate::job::{Job, JobConfig, JobStats, Rejection};
use flowgraph_schema::{EventTime, Record};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::input::Handle as InputHandle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Exchange, Probe};
use timely::worker::Worker;

/// What travels on the routing dataflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Routed {
    /// A record, for the worker that owns its key.
    Record(Record),
    /// A worker's largest event time read, sent to every worker `to` (the common end of a
    /// finite run).
    MaxSeen { to: usize, time: EventTime },
    /// Worker `from`'s watermark, sent to every other worker `to` when it moves: `Some` while
    /// its sources speak for themselves, `None` once they have nothing to say (see
    /// [`ClusterJob::follow_others`]).
    Watermark { from: usize, to: usize, time: Option<EventTime> },
}

/// A fixed hash of a key (every process of a cluster agrees), to route it to a worker.
pub(crate) fn route<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The worker that owns a record's key.
fn owner(record: &Record, peers: usize) -> usize {
    let hash = match record {
        // A connection key's stage and its process's stage live with the upid.
        Record::ConnStats(c) => route(&c.upid),
        Record::Process(p) => route(&p.upid),
        Record::Name(n) => route(&n.addr),
        Record::Container(c) => route(&c.container),
        Record::Progress(p) => route(&p.source),
    };
    (hash % peers as u64) as usize
}

/// One worker's share of the job.
pub struct ClusterJob<'w> {
    job: Job<&'w mut Worker>,
    /// This worker's records, at its watermark; `None` once closed by [`ClusterJob::close`].
    routes: Option<InputHandle<EventTime, Routed>>,
    routed: ProbeHandle<EventTime>,
    arrived: Rc<RefCell<Vec<Routed>>>,
    /// What arrived, being pushed into the job (kept for its capacity).
    arriving: Vec<Routed>,
    /// Largest event time read by any worker that has closed its routes.
    cluster_max_seen: Option<EventTime>,
    /// Largest event time this worker has read.
    max_read: Option<EventTime>,
    /// The latest watermark each worker announced (this worker's own included): `None` for
    /// one not heard from, or whose sources have nothing to say.
    announced: Vec<Option<EventTime>>,
    /// True while this worker's sources have nothing to say and its watermark follows the
    /// others' ([`ClusterJob::follow_others`]).
    following: bool,
    /// The job completes times at multiples of this (see [`ClusterJob::step`]).
    progress_interval_ns: EventTime,
    rejections: Vec<Rejection>,
    finished: bool,
}

impl std::fmt::Debug for ClusterJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterJob").field("job", &self.job).finish_non_exhaustive()
    }
}

impl<'w> ClusterJob<'w> {
    /// Builds the routing dataflow and the job's dataflow on this worker. Every worker of the
    /// cluster must call it, with the same configuration. The configuration's lateness is not
    /// used: records come re-stamped by their source (per partition), and the watermark moves
    /// the frontier.
    pub fn new(worker: &'w mut Worker, config: JobConfig) -> Result<ClusterJob<'w>, String> {
        let arrived: Rc<RefCell<Vec<Routed>>> = Rc::default();
        let sink = arrived.clone();
        let peers = worker.peers();
        let (routes, routed) = worker.dataflow_named::<EventTime, _, _>("route_records", move |scope| {
            let (routes, records) = scope.new_input::<Routed>();
            // Moved into `arrived`, not copied (a record with its strings); the probe after it
            // passes a time only once every record before it has arrived.
            let (routed, _) = records
                .exchange(move |item| match item {
                    Routed::Record(record) => owner(record, peers) as u64,
                    Routed::MaxSeen { to, .. } | Routed::Watermark { to, .. } => *to as u64,
                })
                .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Arrive", move |_, _| {
                    move |input, _| input.for_each(|_, items| sink.borrow_mut().append(items))
                })
                .probe();
            (routes, routed)
        });
        let progress_interval_ns = config.progress_interval_ns;
        let job = Job::in_worker(worker, JobConfig { lateness_ns: u64::MAX, ..config })?;
        Ok(ClusterJob {
            job,
            routes: Some(routes),
            routed,
            arrived,
            arriving: Vec::new(),
            cluster_max_seen: None,
            max_read: None,
            announced: vec![None; peers],
            following: false,
            progress_interval_ns,
            rejections: Vec::new(),
            finished: false,
        })
    }

    /// This worker's index and the number of workers.
    pub fn worker_index(&mut self) -> (usize, usize) {
        let worker = self.job.worker();
        (worker.index(), worker.peers())
    }

    /// Sends a record read by this worker to the worker owning its key. Its time must be at
    /// or after this worker's watermark (sources re-stamp late records to it).
    pub fn push(&mut self, record: Record) {
        let routes = self.routes.as_mut().expect("push after close");
        debug_assert!(record.time() >= *routes.time(), "record before the watermark");
        let time = record.time();
        self.max_read = Some(self.max_read.map_or(time, |m| m.max(time)));
        routes.send(Routed::Record(record));
    }

    /// The earliest time [`ClusterJob::push`] takes a record at now: this worker's watermark.
    pub fn watermark(&self) -> EventTime {
        self.routes.as_ref().map_or(self.job.frontier(), |routes| *routes.time())
    }

    /// This worker's sources promise nothing before `watermark` will come.
    pub fn advance_watermark(&mut self, watermark: EventTime) {
        self.following = false;
        let Some(routes) = self.routes.as_mut() else { return };
        let watermark = watermark.max(*routes.time());
        // Announced before the routes move: moving them sends what was sent at the old time on
        // to the other workers (timely's exchange holds a partial batch until then).
        self.announce(Some(watermark));
        if let Some(routes) = self.routes.as_mut() {
            routes.advance_to(watermark);
        }
    }

    /// This worker's sources have nothing to say: none has carried a record, or all have gone
    /// idle (a worker whose Kafka partitions are empty, or whose agents left). Its watermark
    /// then follows the least watermark of the workers whose sources speak (announced as they
    /// move), so that it does not hold the cluster's frontier for good; with none speaking, it
    /// stays where it is. Records it reads later behind that watermark are late: its sources
    /// re-stamp them to [`ClusterJob::watermark`]. Call it where
    /// [`ClusterJob::advance_watermark`] would be called; one call to that ends following.
    /// True when this call starts following (for the caller to say so once).
    pub fn follow_others(&mut self) -> bool {
        let starts = !self.following;
        self.following = true;
        self.announce(None);
        self.follow();
        starts
    }

    /// Tells the other workers this worker's watermark, if it changed since last told.
    fn announce(&mut self, time: Option<EventTime>) {
        let (index, peers) = self.worker_index();
        let Some(routes) = self.routes.as_mut() else { return };
        if self.announced[index] != time {
            self.announced[index] = time;
            for to in (0..peers).filter(|to| *to != index) {
                routes.send(Routed::Watermark { from: index, to, time });
            }
        }
    }

    /// While following: moves the routes to the least watermark of the workers whose sources
    /// speak, if that is further.
    fn follow(&mut self) {
        let (Some(routes), true) = (self.routes.as_mut(), self.following) else { return };
        if let Some(least) = self.announced.iter().flatten().min() {
            if *least > *routes.time() {
                routes.advance_to(*least);
            }
        }
    }

    /// Runs the worker a little: routed records go into this worker's job, and the job
    /// completes every time before the whole cluster's watermark rounded down to the progress
    /// interval. One worker alone completes, in one call, every time its own watermark allows.
    pub fn step(&mut self) {
        if let Some(routes) = self.routes.as_mut() {
            routes.flush();
        }
        self.job.worker().step();
        // A worker reads its own progress messages at the start of its next step, so the
        // routed frontier reaches this worker's watermark a step after its records. Stepping
        // again here completes those times in this call, not on the caller's next pass, which
        // waits for its next poll first (through Kafka: ~7 ms at p50, docs/KAFKA.md). Once
        // only (a worker alone needs no more, as a test in pipeline/tests/cluster.rs checks):
        // in a cluster the frontier may wait on other workers, and this must not spin.
        if let Some(own) = self.routes.as_ref().map(|routes| *routes.time()) {
            if self.routed.with_frontier(|f| f.first().copied()) < Some(own) {
                self.job.worker().step();
            }
        }
        // Swapped out before any is pushed: a push may run the worker (a jump handed over in
        // pieces goes on at any call into the job), and the routing operator then appends
        // what arrives to `arrived`, for the next step.
        std::mem::swap(&mut self.arriving, &mut *self.arrived.borrow_mut());
        for item in self.arriving.drain(..) {
            match item {
                Routed::Record(record) => {
                    if let Err(rejection) = self.job.push(record) {
                        self.rejections.push(rejection);
                    }
                }
                Routed::MaxSeen { time, .. } => {
                    self.cluster_max_seen = Some(self.cluster_max_seen.map_or(time, |m| m.max(time)));
                }
                Routed::Watermark { from, time, .. } => self.announced[from] = time,
            }
        }
        self.follow();
        match self.routed.with_frontier(|f| f.first().copied()) {
            // Rounded down to the progress interval, so that every worker completes the same
            // times whenever it happens to see the watermark. A job waits inside its advance
            // until every worker's job reaches that time; if each completed wherever its own
            // view crossed an interval, one could wait for a time that another would start
            // only once the first moved its watermark, and neither would (seen in CI).
            Some(frontier) => self.job.advance_watermark(frontier - frontier % self.progress_interval_ns),
            None if !self.finished => {
                // Every worker has closed its routes: every MaxSeen has arrived, so all agree
                // on the end.
                self.finished = true;
                if let Some(end) = self.cluster_max_seen {
                    self.job.finish_at(end + 1);
                }
            }
            None => {}
        }
    }

    /// This worker has read all it will: tells the others how far it read and stops routing.
    /// Keep calling [`ClusterJob::step`] until [`ClusterJob::finished`].
    pub fn close(&mut self) {
        let peers = self.job.worker().peers();
        if let Some(mut routes) = self.routes.take() {
            if let Some(time) = self.max_read {
                for to in 0..peers {
                    routes.send(Routed::MaxSeen { to, time });
                }
            }
            routes.close();
        }
    }

    /// True once every worker has closed and the job has completed the cluster's last event
    /// time.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Moves the released outputs into `out` (only worker 0 has any).
    pub fn drain_into(&mut self, out: &mut Vec<Output>) {
        self.job.drain_into(out);
    }

    /// Records this worker's job rejected since the last call.
    pub fn take_rejections(&mut self) -> Vec<Rejection> {
        std::mem::take(&mut self.rejections)
    }

    /// The time before which this worker's job has completed everything.
    pub fn frontier(&self) -> EventTime {
        self.job.completed()
    }

    /// True while worker 0's job has handed over a piece of a long jump and goes on with it
    /// at the next [`ClusterJob::step`], once the piece is drained: the caller should drain
    /// and step again before reading more (see `JobConfig::max_updates_per_piece`).
    pub fn jump_unfinished(&self) -> bool {
        self.job.jump_unfinished()
    }

    /// What this worker's job has processed (the records of the keys it owns).
    pub fn stats(&self) -> &JobStats {
        self.job.stats()
    }
}
