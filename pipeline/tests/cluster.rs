//! A cluster of workers computes what one job computes: the same updates at every time, in
//! the same order, and progress marks that each cover exactly the times before them, whichever
//! worker read which records.

use flowgraph_benches::Size;
use flowgraph_pipeline::{ClusterJob, Job, JobConfig, JobStats, Output, Params};
use flowgraph_schema::{EventTime, Record};

fn config() -> JobConfig {
    JobConfig {
        params: Params { window_ns: 60_000_000_000, ..Params::default() },
        lateness_ns: u64::MAX,
        progress_interval_ns: 1_000_000_000,
        ..JobConfig::default()
    }
}

/// The smoke fleet's records, in event-time order.
fn stream(seed: u64) -> Vec<Record> {
    let mut records = Vec::new();
    flowgraph_benches::generate(&Size::Smoke.profile(), seed, |r| records.push(r));
    records.sort_by_key(Record::time);
    records
}

/// One job, the watermark following the records (they come in time order).
fn one_job(records: &[Record]) -> Vec<Output> {
    let mut job = Job::new(config()).unwrap();
    let mut outputs = Vec::new();
    for chunk in records.chunks(700) {
        for record in chunk {
            job.push(record.clone()).unwrap();
        }
        job.advance_watermark(chunk.last().unwrap().time());
        job.drain_into(&mut outputs);
    }
    job.finish();
    job.drain_into(&mut outputs);
    outputs
}

/// Runs `work` on a thread of its own and returns its result, failing the test if it takes
/// longer than `limit`: workers that wait for each other for good would otherwise hang the
/// suite without a word.
fn within<T: Send + 'static>(limit: std::time::Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    match finished.recv_timeout(limit) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "the workers did not finish in {limit:?}: they wait for each other, or for one that panicked (above)"
            )
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("a worker failed (its panic is above)"),
    }
}

/// `workers` threads; worker w reads the records of "partitions" p with p % workers == w, where
/// a record's partition is its agent (as `flowgraph agent` keys its messages), each at its
/// own pace.
fn cluster(records: Vec<Record>, workers: usize, chunk: usize) -> Vec<Vec<Output>> {
    cluster_with(config(), records, workers, chunk, Close::AtOnce)
}

/// When the workers close, after reading their records.
#[derive(Clone, Copy)]
enum Close {
    /// At once: the cluster completes what is left at its end.
    AtOnce,
    /// Once the cluster has completed every time its watermarks allow (the least of the
    /// workers' last record times, rounded down to the interval), so that the jumps up to
    /// there happen while it runs, whichever worker reads faster.
    AfterCompleting,
}

fn cluster_with(
    config: JobConfig,
    records: Vec<Record>,
    workers: usize,
    chunk: usize,
    close: Close,
) -> Vec<Vec<Output>> {
    cluster_with_stats(config, records, workers, chunk, close).into_iter().map(|(outputs, _)| outputs).collect()
}

/// Each worker's outputs, and what its job counted.
fn cluster_with_stats(
    config: JobConfig,
    records: Vec<Record>,
    workers: usize,
    chunk: usize,
    close: Close,
) -> Vec<(Vec<Output>, JobStats)> {
    let records = std::sync::Arc::new(records);
    within(std::time::Duration::from_secs(120), move || cluster_on_threads(config, records, workers, chunk, close))
}

fn cluster_on_threads(
    config: JobConfig,
    records: std::sync::Arc<Vec<Record>>,
    workers: usize,
    chunk: usize,
    close: Close,
) -> Vec<(Vec<Output>, JobStats)> {
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mine: Vec<Record> = records.iter().filter(|r| partition(r) % peers == index).cloned().collect();
        let mut job = ClusterJob::new(worker, config.clone()).unwrap();
        let mut outputs = Vec::new();
        read_in_chunks(&mut job, &mine, chunk + index * 37, &mut outputs);
        if let Close::AfterCompleting = close {
            let last_of = |w: usize| records.iter().filter(|r| partition(r) % peers == w).map(Record::time).max();
            let least = (0..peers).filter_map(last_of).min().unwrap();
            let allowed = least - least % config.progress_interval_ns;
            while job.frontier() < allowed {
                job.step();
                job.drain_into(&mut outputs);
            }
        }
        close_and_finish(&mut job, &mut outputs);
        (outputs, job.stats().clone())
    })
    .unwrap();
    guards.join().into_iter().map(Result::unwrap).collect()
}

/// Reads `records` in chunks: each pushed, the watermark moved to its last record, a step.
/// As `flowgraph run` does, a jump handed over in pieces is finished before more is read.
fn read_in_chunks(job: &mut ClusterJob, records: &[Record], chunk: usize, outputs: &mut Vec<Output>) {
    for part in records.chunks(chunk) {
        for record in part {
            job.push(record.clone());
        }
        job.advance_watermark(part.last().unwrap().time());
        job.step();
        job.drain_into(outputs);
        while job.jump_unfinished() {
            job.step();
            job.drain_into(outputs);
        }
    }
}

/// Closes this worker's routes and steps until the cluster has finished; no record was
/// rejected.
fn close_and_finish(job: &mut ClusterJob, outputs: &mut Vec<Output>) {
    job.close();
    while !job.finished() {
        job.step();
        job.drain_into(outputs);
    }
    assert!(job.take_rejections().is_empty());
}

fn partition(record: &Record) -> usize {
    match record {
        Record::ConnStats(c) => c.upid.asid as usize,
        Record::Process(p) => p.upid.asid as usize,
        Record::Name(n) => n.addr.to_string().len(),
        Record::Progress(p) => p.source.len(),
        Record::Container(c) => c.container.len(),
    }
}

fn updates(outputs: &[Output]) -> Vec<&Output> {
    outputs.iter().filter(|o| matches!(o, Output::Update { .. })).collect()
}

/// Marks increase, every update before a mark has a time below it, every update after it a
/// time at or above it; the last mark is `end`.
fn check_marks(outputs: &[Output], end: EventTime) {
    let mut last_mark = 0;
    for (i, output) in outputs.iter().enumerate() {
        match output {
            Output::Progress(p) => {
                assert!(*p > last_mark, "mark {p} after {last_mark}");
                last_mark = *p;
            }
            Output::Update { time, .. } => {
                assert!(*time >= last_mark, "update at {time} after mark {last_mark}");
                let next = outputs[i..].iter().find_map(|o| match o {
                    Output::Progress(p) => Some(*p),
                    _ => None,
                });
                assert!(next.is_some_and(|p| *time < p), "update at {time} not covered by the next mark {next:?}");
            }
        }
    }
    assert_eq!(last_mark, end);
}

#[test]
fn two_and_three_workers_publish_what_one_job_does() {
    let records = stream(21);
    let reference = one_job(&records);
    let end = records.iter().map(Record::time).max().unwrap() + 1;
    check_marks(&reference, end);
    assert!(updates(&reference).len() > 5_000, "a smoke stream has many updates");
    for (workers, chunk) in [(1, 500), (2, 300), (3, 1000)] {
        let outputs = cluster(records.clone(), workers, chunk);
        assert!(outputs[1..].iter().all(Vec::is_empty), "{workers} workers: only worker 0 releases");
        check_marks(&outputs[0], end);
        let marks = outputs[0].iter().filter_map(|o| match o {
            Output::Progress(p) => Some(*p),
            _ => None,
        });
        let unaligned: Vec<EventTime> = marks.filter(|p| *p != end && p % config().progress_interval_ns != 0).collect();
        assert!(unaligned.is_empty(), "{workers} workers: marks between intervals: {unaligned:?}");
        assert!(updates(&outputs[0]) == updates(&reference), "{workers} workers: different updates");
    }
}

/// A worker's pass through the dataflow also ends once it holds `max_slice_events` events of
/// the worker's own keys, so workers cut their passes at different times. The output is one
/// job's all the same.
#[test]
fn workers_that_cut_their_passes_at_different_times_publish_what_one_job_does() {
    let records = stream(21);
    let reference = one_job(&records);
    let end = records.iter().map(Record::time).max().unwrap() + 1;
    for workers in [1, 2, 3] {
        let run = |config| cluster_with_stats(config, records.clone(), workers, 400, Close::AtOnce);
        let (default, cut) = (run(config()), run(JobConfig { max_slice_events: 7, ..config() }));
        check_marks(&cut[0].0, end);
        assert!(updates(&cut[0].0) == updates(&reference), "{workers} workers: different updates");
        for (w, ((_, default_stats), (_, cut_stats))) in default.iter().zip(&cut).enumerate() {
            let (default_slices, cut_slices) = (default_stats.slices, cut_stats.slices);
            // A time's events go through together: only stretches of several times are cut.
            assert!(
                cut_slices > default_slices,
                "worker {w} of {workers}: {cut_slices} passes cut, {default_slices} not"
            );
        }
    }
}

/// The marks among `outputs`.
fn marks(outputs: &[Output]) -> Vec<EventTime> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Progress(p) => Some(*p),
            _ => None,
        })
        .collect()
}

/// The frontier's first move completes the first `lateness` of a stream at once (and a
/// replay's end, or a backlog, the same): a job hands such a jump over in pieces of about
/// `max_updates_per_piece` updates, each ending at a mark on a progress interval, and goes on
/// with it at the next call once the caller has drained the last piece. The updates are the
/// same as without pieces; only the caller holds less at once.
#[test]
fn a_long_jump_is_handed_over_in_pieces_with_the_same_updates() {
    const PIECE: usize = 500;
    let records = stream(21);
    let reference = one_job(&records);
    let last = records.iter().map(Record::time).max().unwrap();
    let interval = config().progress_interval_ns;
    let mut job = Job::new(JobConfig { max_updates_per_piece: PIECE, ..config() }).unwrap();
    for record in &records {
        job.push(record.clone()).unwrap();
    }
    // One jump over the whole stream (the frontier follows the watermark alone).
    job.advance_watermark(last);
    let mut pieces = Vec::new();
    loop {
        let mut piece = Vec::new();
        job.drain_into(&mut piece);
        pieces.push(piece);
        if !job.jump_unfinished() {
            break;
        }
        assert!(job.completed() < job.frontier(), "an unfinished jump has not completed the frontier");
        // Any call into the job goes on with it.
        job.advance_watermark(last);
    }
    assert_eq!(job.completed(), last, "the jump went on to its end");
    job.finish();
    let mut end = Vec::new();
    job.drain_into(&mut end);
    pieces.push(end);

    let outputs = pieces.concat();
    check_marks(&outputs, last + 1);
    assert!(updates(&outputs) == updates(&reference), "pieces changed the updates");
    // Each piece ends at the first progress interval after it reached PIECE updates, so it
    // holds at most PIECE plus one interval's updates.
    let mut per_interval = std::collections::HashMap::<EventTime, usize>::new();
    for update in updates(&reference) {
        let Output::Update { time, .. } = update else { unreachable!() };
        *per_interval.entry(time / interval).or_default() += 1;
    }
    let largest_interval = per_interval.values().copied().max().unwrap();
    let sizes: Vec<usize> = pieces.iter().map(|piece| updates(piece).len()).collect();
    assert!(sizes.len() > 10, "the jump was not handed over in pieces: {sizes:?}");
    assert!(
        sizes.iter().all(|size| *size <= PIECE + largest_interval),
        "pieces of {sizes:?}, interval {largest_interval}"
    );
    let piece_marks: Vec<EventTime> = pieces[..pieces.len() - 2].iter().flat_map(|piece| marks(piece)).collect();
    assert!(piece_marks.iter().all(|m| m % interval == 0), "piece marks off the intervals: {piece_marks:?}");
}

/// On a cluster, worker 0 (which alone releases) ends the pieces; the others go on to the
/// jump's end and wait for it in the dataflow. The updates are one job's, and every mark
/// still falls on a progress interval.
#[test]
fn a_cluster_hands_long_jumps_over_in_pieces_with_the_same_updates() {
    let records = stream(21);
    let reference = one_job(&records);
    let end = records.iter().map(Record::time).max().unwrap() + 1;
    let small_pieces = JobConfig { max_updates_per_piece: 300, ..config() };
    for (workers, chunk) in [(1, 3000), (2, 3000)] {
        let outputs = cluster_with(small_pieces.clone(), records.clone(), workers, chunk, Close::AfterCompleting);
        check_marks(&outputs[0], end);
        assert!(updates(&outputs[0]) == updates(&reference), "{workers} workers: different updates");
        let with_pieces = marks(&outputs[0]);
        let interval = config().progress_interval_ns;
        assert!(with_pieces.iter().all(|m| *m == end || m % interval == 0), "{workers} workers: {with_pieces:?}");
        let without = marks(&cluster_with(config(), records.clone(), workers, chunk, Close::AfterCompleting)[0]);
        assert!(with_pieces.len() > 2 * without.len(), "{workers} workers: {with_pieces:?} against {without:?}");
    }
}

/// Workers see the cluster's watermark at different moments. If each completed times wherever
/// its own view of the watermark happened to cross a progress interval, two workers' job
/// frontiers could drift apart, and one could wait inside its job for a time the other would
/// start only once the first moved its watermark: a deadlock (seen in CI). This drives three
/// workers, in a fixed order, into exactly those views; they must all finish.
#[test]
fn workers_that_see_the_watermark_at_different_moments_complete_the_same_times() {
    const S: EventTime = 1_000_000_000;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let outputs = within(std::time::Duration::from_secs(60), move || {
        let guards = timely::execute(timely::Config::process(3), move |worker| {
            let index = worker.index();
            let mut job = ClusterJob::new(worker, config()).unwrap();
            let step_until = |job: &mut ClusterJob, frontier: EventTime| {
                while job.frontier() < frontier {
                    job.step();
                }
            };
            let pause = |ms| std::thread::sleep(std::time::Duration::from_millis(ms));
            // Workers 0 and 1 at 1.5 s, worker 2 (holding the cluster back) at 0.
            if index < 2 {
                job.advance_watermark(3 * S / 2);
            }
            (0..10).for_each(|_| job.step());
            barrier.wait();
            match index {
                // Sees 1.0 s and completes it, waiting for the others' jobs to get there.
                0 => step_until(&mut job, S),
                // Steps only after worker 2 has moved twice: sees 1.2 s, never 1.0 s.
                1 => {
                    pause(600);
                    step_until(&mut job, S);
                }
                _ => {
                    job.advance_watermark(S);
                    job.step();
                    pause(300);
                    job.advance_watermark(6 * S / 5);
                    step_until(&mut job, S);
                }
            }
            barrier.wait();
            if index > 0 {
                // Worker 1 at 2.1 s and worker 2 at 3 s, while worker 0 stays at 1.5 s.
                job.advance_watermark(if index == 1 { 21 * S / 10 } else { 3 * S });
            }
            (0..10).for_each(|_| job.step());
            barrier.wait();
            if index == 0 {
                // Sees 2.1 s: an interval past its own frontier, not past worker 1's.
                job.advance_watermark(43 * S / 20);
                step_until(&mut job, 2 * S);
            } else {
                pause(300);
                job.advance_watermark(5 * S);
                (0..10).for_each(|_| job.step());
            }
            job.close();
            let mut outputs = Vec::new();
            while !job.finished() {
                job.step();
                job.drain_into(&mut outputs);
            }
            outputs
        })
        .unwrap();
        guards.join().into_iter().map(Result::unwrap).collect::<Vec<Vec<Output>>>()
    });
    let marks: Vec<EventTime> = outputs[0]
        .iter()
        .filter_map(|o| match o {
            Output::Progress(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert!(marks.starts_with(&[S, 2 * S]), "worker 0's marks: {marks:?}");
    assert!(marks.iter().all(|m| m % S == 0) && marks.is_sorted(), "worker 0's marks: {marks:?}");
    assert!(outputs[1..].iter().all(Vec::is_empty), "only worker 0 releases");
}

/// A worker whose sources carry nothing (its Kafka partitions are empty) has no watermark of
/// its own. It must not hold the cluster's frontier at the start for good: it follows the
/// watermark of the worker that reads the stream, and the cluster completes the stream's
/// times while running, before any worker closes. A record it reads later, behind that
/// watermark, is re-stamped to it, and the run still finishes with it.
#[test]
fn a_worker_whose_sources_carry_nothing_does_not_hold_the_cluster_back() {
    let records = stream(21);
    let reference = one_job(&records);
    let last = records.iter().map(Record::time).max().unwrap();
    let interval = config().progress_interval_ns;
    let target = last - last % interval;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A connection of a process the stream has not seen (a known key's first sample, re-stamped
    // past its later ones, would be rejected: its counters would go backwards).
    let mut straggler = records.iter().find(|r| matches!(r, Record::ConnStats(_))).unwrap().clone();
    if let Record::ConnStats(c) = &mut straggler {
        c.upid.pid = u32::MAX;
    }
    let results = within(std::time::Duration::from_secs(60), move || {
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let index = worker.index();
            let mut job = ClusterJob::new(worker, config()).unwrap();
            let mut outputs = Vec::new();
            if index == 0 {
                for chunk in records.chunks(500) {
                    for record in chunk {
                        job.push(record.clone());
                    }
                    job.advance_watermark(chunk.last().unwrap().time().saturating_sub(60 * interval));
                    job.step();
                    job.drain_into(&mut outputs);
                }
                // One last move, announced once: it must reach worker 1 although nothing else
                // is sent after it (timely's exchange holds a partial batch until the sender's
                // time moves on).
                job.advance_watermark(last);
                // Neither worker has closed: the frontier moves only if worker 1 follows.
                while job.frontier() < target {
                    job.step();
                    job.drain_into(&mut outputs);
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            } else {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    job.follow_others();
                    job.step();
                }
                // Its partition delivers at last: a record from the stream's start, late,
                // re-stamped to this worker's watermark as its source does.
                assert!(job.watermark() >= target, "worker 1 followed to {}, not {target}", job.watermark());
                let mut straggler = straggler.clone();
                straggler.set_time(job.watermark());
                job.push(straggler);
            }
            let completed_while_running = job.frontier();
            job.close();
            while !job.finished() {
                job.step();
                job.drain_into(&mut outputs);
            }
            assert!(job.take_rejections().is_empty());
            (outputs, completed_while_running)
        })
        .unwrap();
        guards.join().into_iter().map(Result::unwrap).collect::<Vec<_>>()
    });
    let (outputs, completed) = &results[0];
    assert!(*completed >= target, "completed {completed} while running, the stream reaches {target}");
    assert!(results[1].0.is_empty(), "only worker 0 releases");
    // Every update before the straggler's re-stamped time is the one job's.
    let before = |outputs: &[Output]| -> Vec<Output> {
        outputs.iter().filter(|o| matches!(o, Output::Update { time, .. } if *time < target)).cloned().collect()
    };
    assert!(before(outputs) == before(&reference), "the cluster's updates before {target} differ from one job's");
    check_marks(outputs, last + 1);
}

/// A worker alone completes in one `step` every time its watermark allows, with the records
/// before it: the run loop polls its source between steps, and a time left for the next step
/// would wait for the next poll (docs/KAFKA.md, "The routed frontier a step late").
#[test]
fn a_worker_alone_completes_what_its_watermark_allows_in_one_step() {
    let records = stream(5);
    let reference = one_job(&records);
    let outputs = within(std::time::Duration::from_secs(60), move || {
        let guards = timely::execute(timely::Config::process(1), move |worker| {
            let mut job = ClusterJob::new(worker, config()).unwrap();
            let interval = config().progress_interval_ns;
            let mut outputs = Vec::new();
            for part in records.chunks(400) {
                for record in part {
                    job.push(record.clone());
                }
                let watermark = part.last().unwrap().time();
                job.advance_watermark(watermark);
                job.step();
                let expected = watermark - watermark % interval;
                assert_eq!(job.frontier(), expected, "one step after the watermark {watermark}");
                job.drain_into(&mut outputs);
            }
            job.close();
            while !job.finished() {
                job.step();
                job.drain_into(&mut outputs);
            }
            outputs
        })
        .unwrap();
        guards.join().into_iter().map(Result::unwrap).collect::<Vec<_>>()
    });
    assert!(updates(&outputs[0]) == updates(&reference), "different updates from one job's");
}

/// A progress record of a made-up source: it changes no output, and the many sources spread
/// a run of them over the workers.
fn chatter(n: usize, time: EventTime) -> Record {
    Record::Progress(flowgraph_schema::Progress {
        time_: time,
        source: format!("chatter-{n}"),
        losses: Default::default(),
    })
}

/// Worker 0 goes on with a jump handed over in pieces inside `push` of a record routed to it,
/// and the next piece waits for worker 1 (its view of the watermark lags). Worker 1 meanwhile
/// sends records without stepping, so they reach worker 0 while it steps inside that push. In
/// CI this panicked ("RefCell already borrowed"): `ClusterJob::step` held the routed records'
/// buffer while it pushed them into the job, and the routing operator appended to it.
#[test]
fn records_routed_while_a_piece_goes_on_inside_push_are_kept() {
    use std::sync::{Arc, Barrier};
    let records = stream(21);
    let reference = one_job(&records);
    let end = records.iter().map(Record::time).max().unwrap() + 1;
    let interval = config().progress_interval_ns;
    let on_interval = |share: usize| {
        let t = records[records.len() * share / 10].time();
        t - t % interval
    };
    // Worker 1 sees the watermark at `first` while worker 0 sees it at `second`.
    let (first, second) = (on_interval(4), on_interval(7));
    let pieces = JobConfig { max_updates_per_piece: 1, ..config() };
    let barrier = Arc::new(Barrier::new(2));
    let records = Arc::new(records);
    let outputs = within(std::time::Duration::from_secs(60), move || {
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let index = worker.index();
            let mine: Vec<Record> = records.iter().filter(|r| partition(r) % 2 == index).cloned().collect();
            let (before, after): (Vec<Record>, Vec<Record>) = mine.into_iter().partition(|r| r.time() < second);
            let mut job = ClusterJob::new(worker, pieces.clone()).unwrap();
            let mut outputs = Vec::new();
            // Both route what comes before `second`, the watermarks at the start.
            before.into_iter().for_each(|record| job.push(record));
            job.step();
            barrier.wait();
            (0..3).for_each(|_| job.step());
            barrier.wait();
            if index == 0 {
                // Worker 0's watermark at `first`: both see `first` and jump to it. Its first
                // piece completes only once worker 1 has started its jump, to `first`.
                job.advance_watermark(first);
                while !job.jump_unfinished() {
                    job.step();
                    job.drain_into(&mut outputs);
                }
                // Now worker 0 sees `second`; worker 1, in its jump, will not until it steps
                // again. Records routed to itself each pass make worker 0 go on with the jump
                // inside `push`; past `first` it waits there for worker 1. (A thousand: the
                // exchange holds a partial batch until the time moves.)
                job.advance_watermark(second);
                let mut n = 0;
                while job.frontier() < second {
                    for _ in 0..1000 {
                        job.push(chatter(n, second));
                        n += 1;
                    }
                    job.step();
                    job.drain_into(&mut outputs);
                }
            } else {
                job.advance_watermark(second);
                while job.frontier() < first {
                    job.step();
                }
                // Out of its jump, not stepping: what it sends reaches worker 0 while it waits.
                let started = std::time::Instant::now();
                let mut n = 0;
                while started.elapsed() < std::time::Duration::from_millis(300) {
                    job.push(chatter(n, second));
                    n += 1;
                }
            }
            read_in_chunks(&mut job, &after, 500, &mut outputs);
            close_and_finish(&mut job, &mut outputs);
            outputs
        })
        .unwrap();
        guards.join().into_iter().map(Result::unwrap).collect::<Vec<Vec<Output>>>()
    });
    check_marks(&outputs[0], end);
    assert!(updates(&outputs[0]) == updates(&reference), "different updates");
}
