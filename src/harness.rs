//! `flowgraph bench`: the benchmark harness (docs/BENCHMARKS.md).
//!
//! One recording, one query, measured side by side in one process so that ratios hold even
//! when the machine's speed drifts:
//!
//! 1. the in-process job at full speed: records/s, CPU per second of stream, memory per live
//!    connection key (resident memory it added by the last record, the steady state of a
//!    running job, over the keys in force at the end; after `finish` printed too) and the
//!    peak resident memory it added (the kernel's high-water mark, reset at its start);
//! 2. the hash-map baseline (`flowgraph_benches::baseline::HashMapQuery`), the lower bound on
//!    the work, on the same records: the job's throughput as a fraction of it;
//! 3. Pixie's way (`RecomputeQuery`): the whole window recomputed every refresh; its CPU per
//!    refresh against the job's CPU per second of stream;
//! 4. latency at a fixed offered rate: records pushed on a wall-clock schedule, each one's
//!    latency the time until a progress mark past its event time is released (HDR histogram).
//!
//! The whole process's peak resident memory (the recording in memory, every phase) is
//! printed too. Targets (issue 6) are printed PASS or FAIL with their figure; nothing is
//! asserted, so CI can run the smoke size to keep the harness working. The Kafka path has its
//! own harness, `flowgraph bench-kafka`.

use crate::cli::BenchArgs;
use crate::process_memory::{peak_resident_bytes, reset_peak_resident, resident_bytes};
use crate::replay::{job_config, push_followed};
use crate::report::human;
use anyhow::{bail, Context};
use comfy_table::{presets::UTF8_FULL, Table};
use flowgraph_benches::baseline::{BaselineParams, Graph, HashMapQuery, RecomputeQuery};
use flowgraph_config::parse_duration_ns;
use flowgraph_pipeline::{Job, JobConfig, Output};
use flowgraph_schema::{ConnStats, EventTime, Record};
use flowgraph_sinks::graph::GraphState;
use flowgraph_sources::clock::SourceClock;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One target: what is measured, the goal, the figure, and whether it was met (`None`: the
/// target is defined for another stream or setting).
pub(crate) struct Verdict {
    pub(crate) target: String,
    pub(crate) figure: String,
    pub(crate) pass: Option<bool>,
}

impl Verdict {
    pub(crate) fn print(&self) {
        let word = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a ",
        };
        println!("{word}  {}: {}", self.target, self.figure);
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        json!({"target": self.target, "figure": self.figure, "pass": self.pass})
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = job_config(&args.query)?;
    let refresh_ns = parse_duration_ns("--refresh", &args.refresh)?.max(1);
    let records = load(&args.input)?;
    let (first, last) = match (records.iter().map(Record::time).min(), records.iter().map(Record::time).max()) {
        (Some(first), Some(last)) => (first, last),
        _ => bail!("{}: no records", args.input.display()),
    };
    if records.iter().any(|r| matches!(r, Record::Container(_))) {
        bail!(
            "{}: the stream has container (Kubernetes metadata) records, which the baselines do \
             not implement; benchmark a stream from `flowgraph generate`",
            args.input.display()
        );
    }
    let stream_seconds = (last - first) as f64 / 1e9;
    println!(
        "flowgraph bench: {} ({} records, {:.0} s of event time); window {}, group_by {}, lateness {}",
        args.input.display(),
        records.len(),
        stream_seconds,
        humantime::format_duration(Duration::from_nanos(config.params.window_ns)),
        config.params.group_by,
        humantime::format_duration(Duration::from_nanos(config.lateness_ns)),
    );

    // 1. The job at full speed, and the memory it holds at the end.
    eprintln!("bench: 1/4 the job at full speed");
    let mut owned_samples = owned_connection_samples(&records);
    // The loading's peak (the recording decoded), kept for the whole process's figure before
    // the job's own peak is measured.
    let loading_peak = peak_resident_bytes();
    release_free_heap();
    let resident_before = resident_bytes();
    // From here the kernel's high-water mark is the job's: lowered to the resident memory now.
    let peak_reset = reset_peak_resident();
    let heap_before = heap_usage();
    let mapped_before = flowgraph_pipeline::mapped_state_bytes();
    let started = (Instant::now(), cpu_time::ThreadTime::now());
    let mut job = Job::new(config.clone()).map_err(anyhow::Error::msg)?;
    let mut outputs = Vec::new();
    let mut updates = 0u64;
    let mut clock = SourceClock::default();
    let bar = phase_bar(records.len());
    for (index, (record, owned)) in records.iter().zip(&mut owned_samples).enumerate() {
        show_progress(&bar, index);
        let record = owned.take().map_or_else(|| record.clone(), Record::ConnStats);
        // Rejections are counted by the job; the harness measures, it does not judge input.
        let _ = push_followed(&mut job, &mut clock, record);
        job.drain_into(&mut outputs);
        updates += outputs.iter().filter(|o| matches!(o, Output::Update { .. })).count() as u64;
        outputs.clear();
    }
    bar.finish_and_clear();
    // Steady state: every record in, those past the frontier staged (where the agents'
    // progress put it, or the last `lateness` of them), as in a running service. (After
    // `finish` the job has also computed that last stretch at once, a replay's end, not a
    // service's steady state; printed too.)
    let job_added = resident_bytes().saturating_sub(resident_before);
    let heap_added = heap_before.zip(heap_usage()).map(|(before, now)| now.since(&before));
    // The large state tables are mapped on their own, outside glibc's heap (pipeline's
    // state_alloc.rs): counted apart.
    let mapped_added = flowgraph_pipeline::mapped_state_bytes() as i64 - mapped_before as i64;
    let tracked_keys = job.tracked_connection_keys();
    job.finish();
    let slices = job.stats().slices;
    job.drain_into(&mut outputs);
    updates += outputs.iter().filter(|o| matches!(o, Output::Update { .. })).count() as u64;
    let job_wall = started.0.elapsed().as_secs_f64();
    let job_cpu = started.1.elapsed().as_secs_f64();
    // The peak over the job phase, or why there is none.
    let job_peak_added: Result<u64, String> = match peak_reset {
        Ok(()) => peak_resident_bytes()
            .map(|peak| peak.saturating_sub(resident_before))
            .ok_or_else(|| "no VmHWM in /proc/self/status".to_string()),
        Err(error) => Err(format!("resetting the peak through /proc/self/clear_refs: {error}")),
    };
    // The harness's own buffer of the last drain is not the job's memory.
    drop(outputs);
    let job_added_after_finish = resident_bytes().saturating_sub(resident_before);
    let job_rate = records.len() as f64 / job_wall;
    drop(job);
    drop(owned_samples);

    // 2. The hash-map bound on the same records, advanced every refresh of event time.
    eprintln!("bench: 2/4 the hash-map bound (job: {job_rate:.0} records/s)");
    let params =
        BaselineParams::parse(&config.params.ips.to_string(), config.params.window_ns, config.params.group_by.as_str())
            .map_err(anyhow::Error::msg)?;
    let started = (Instant::now(), cpu_time::ThreadTime::now());
    let mut bound = HashMapQuery::new(params.clone());
    let mut next = first + refresh_ns;
    let bar = phase_bar(records.len());
    for (index, record) in records.iter().enumerate() {
        show_progress(&bar, index);
        while record.time() >= next {
            bound.advance_to(next);
            next += refresh_ns;
        }
        bound.push(record);
    }
    bar.finish_and_clear();
    let final_graph = bound.graph_at(last);
    let live_keys = bound.live_keys();
    let bound_wall = started.0.elapsed().as_secs_f64();
    let bound_rate = records.len() as f64 / bound_wall;
    let job_over_bound = job_rate / bound_rate;
    drop(bound);

    // 3. Pixie's way: the whole window recomputed every refresh.
    eprintln!(
        "bench: 3/4 recomputing the window every {} of event time ({:.0} refreshes; bound: {bound_rate:.0} \
         records/s, job / bound {:.1}%)",
        humantime::format_duration(Duration::from_nanos(refresh_ns)),
        stream_seconds * 1e9 / refresh_ns as f64,
        100.0 * job_over_bound
    );
    let started = cpu_time::ThreadTime::now();
    let mut recompute = RecomputeQuery::new(params);
    let mut refreshes = 0u64;
    let mut next = first + refresh_ns;
    let bar = phase_bar(records.len());
    for (index, record) in records.iter().enumerate() {
        show_progress(&bar, index);
        while record.time() >= next {
            // The whole window's rows and edges, counted but not materialized as strings:
            // what a refresh of Pixie's query computes before it renders anything.
            black_box(recompute.recompute(next));
            refreshes += 1;
            next += refresh_ns;
        }
        recompute.push(record);
    }
    bar.finish_and_clear();
    black_box(recompute.recompute(last));
    refreshes += 1;
    let recompute_cpu = started.elapsed().as_secs_f64();
    // Outside the timed part: the full graph, to check the two baselines agree.
    let recomputed = recompute.refresh(last);
    drop(recompute);
    if recomputed != final_graph {
        bail!("the two baselines disagree on the final graph: a baseline is wrong, fix it before trusting any ratio");
    }
    // Untimed: the job again, its deltas applied, against the baselines' final graph; a ratio
    // against a baseline that computes something else would mean nothing.
    eprintln!("bench: checking the job's final graph against the baselines (untimed)");
    let job_graph = final_graph_of_job(&records, config.clone())?;
    if job_graph != final_graph {
        bail!(
            "the job and the baselines disagree on the final graph ({} rows / {} edges vs {} / {}): \
             a baseline is wrong (tests/baselines.rs is where to pin it down)",
            job_graph.rows.len(),
            job_graph.edges.len(),
            final_graph.rows.len(),
            final_graph.edges.len()
        );
    }

    // 4. Latency at a fixed offered rate.
    eprintln!("bench: 4/4 latency at {} records/s offered", args.rate);
    let latency_records = &records[..records.len().min(args.latency_records)];
    // A latency run over the first records only is a sample: its auto lateness is their
    // disorder, not the stream's, so the target is not judged on it.
    let whole_stream = latency_records.len() == records.len();
    let prefix_text =
        if whole_stream { String::new() } else { format!(", the first {} records", latency_records.len()) };
    let latency_lateness = match args.latency_lateness.as_str() {
        "auto" => arrival_disorder(latency_records.iter().map(Record::time)),
        text => parse_duration_ns("--latency-lateness", text)?,
    };
    let (latency, latency_late) = latency(latency_records, config.clone(), latency_lateness, &args)?;
    let floor = arrival_floor(
        latency_records,
        args.rate,
        latency_lateness,
        parse_duration_ns("--latency-progress-interval", &args.latency_progress_interval)?,
    )?;
    let lateness_text = humantime::format_duration(Duration::from_millis(latency_lateness / 1_000_000)).to_string();

    let bytes_per_key = job_added as f64 / live_keys.max(1) as f64;
    let process_peak = loading_peak.into_iter().chain(peak_resident_bytes()).max();
    let job_cpu_per_stream_second = job_cpu / stream_seconds.max(1e-9);
    let recompute_cpu_per_refresh = recompute_cpu / refreshes.max(1) as f64;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let floor_ms = |q: f64| floor.value_at_quantile(q) as f64 / 1000.0;

    let mut table = Table::new();
    table.load_preset(UTF8_FULL).set_header(["measure", "figure"]);
    table.add_row(["job: records/s (full speed)".to_string(), format!("{job_rate:.0}")]);
    table.add_row(["job: updates out".to_string(), updates.to_string()]);
    table.add_row(["job: CPU per second of stream".to_string(), format!("{:.2} ms", job_cpu_per_stream_second * 1e3)]);
    table.add_row(["job: resident memory added (steady state, before finish)".to_string(), human(job_added)]);
    table.add_row(["job: resident memory added after finish".to_string(), human(job_added_after_finish)]);
    table.add_row([
        "job: peak resident memory added (over the job phase, finish included)".to_string(),
        job_peak_added.as_ref().map_or_else(|why| format!("n/a ({why})"), |peak| human(*peak)),
    ]);
    table.add_row(["live connection keys at the end".to_string(), live_keys.to_string()]);
    table.add_row([
        "job: connection keys tracked at the end (live, and expired ones kept max_window for a wider window)"
            .to_string(),
        tracked_keys.to_string(),
    ]);
    table.add_row([
        "job: slices (passes through the dataflow, finish included; docs/ARCHITECTURE.md)".to_string(),
        slices.to_string(),
    ]);
    table.add_row(["job: bytes per live key".to_string(), format!("{bytes_per_key:.0}")]);
    let per_key = |bytes: i64| format!("{:.0}", bytes as f64 / live_keys.max(1) as f64);
    table.add_row([
        "job: state tables mapped outside the heap, added, per live key (untouched capacity included)".to_string(),
        per_key(mapped_added),
    ]);
    match &heap_added {
        Some(heap) => {
            table.add_row([
                "job: heap in use added, per live key (the rest of the state, and buffers; untouched capacity included)".to_string(),
                per_key(heap.in_use),
            ]);
            table.add_row([
                "job: free heap glibc keeps, added, per live key (resident where touched before)".to_string(),
                per_key(heap.free),
            ]);
        }
        None => {
            table.add_row([
                "job: heap in use / free heap glibc keeps".to_string(),
                "n/a (glibc's malloc_info failed)".to_string(),
            ]);
        }
    }
    table.add_row([
        "bench process: peak resident memory (the recording in memory and every phase)".to_string(),
        process_peak.map_or("n/a (no VmHWM in /proc/self/status)".to_string(), human),
    ]);
    table.add_row(["hash-map bound: records/s".to_string(), format!("{bound_rate:.0}")]);
    table.add_row(["job / hash-map bound".to_string(), format!("{job_over_bound:.3}")]);
    table.add_row([
        format!("recompute: CPU per refresh ({} refreshes)", refreshes),
        format!("{:.2} ms", recompute_cpu_per_refresh * 1e3),
    ]);
    table.add_row([
        "recompute per refresh / job per stream second".to_string(),
        format!("{:.1}", recompute_cpu_per_refresh / job_cpu_per_stream_second.max(1e-12)),
    ]);
    table.add_row([
        format!("latency at {} records/s offered (lateness {lateness_text}, {latency_late} records late{prefix_text}): p50 / p99 / p99.9", args.rate),
        format!("{:.1} / {:.1} / {:.1} ms", ms(0.5), ms(0.99), ms(0.999)),
    ]);
    table.add_row([
        "  the same time model without computing (arrival alone): p50 / p99 / p99.9".to_string(),
        format!("{:.1} / {:.1} / {:.1} ms", floor_ms(0.5), floor_ms(0.99), floor_ms(0.999)),
    ]);
    println!("{table}");

    let medium = records.len() >= 500_000;
    // Keys have expired by the last record only once the stream outlasts the window and the
    // lateness the frontier trails by.
    let steady_state = stream_seconds * 1e9 > (config.params.window_ns + config.lateness_ns) as f64;
    let verdicts = [
        Verdict {
            target: "job >= 1,000,000 records/s (medium stream or larger)".into(),
            figure: format!("{job_rate:.0}"),
            pass: medium.then_some(job_rate >= 1e6),
        },
        Verdict {
            target: "job >= 10% of the hash-map bound".into(),
            figure: format!("{:.1}%", 100.0 * job_over_bound),
            pass: Some(job_rate >= 0.1 * bound_rate),
        },
        Verdict {
            target: "latency p99 <= 50 ms at 200,000 records/s offered".into(),
            figure: format!(
                "{:.1} ms at {}/s, lateness {lateness_text}, {latency_late} records late{prefix_text}",
                ms(0.99),
                args.rate
            ),
            pass: latency_verdict(args.rate, medium, whole_stream, ms(0.99), latency_late),
        },
        Verdict {
            target: "<= 300 bytes per live key at steady state (5m window, 10 s export)".into(),
            figure: format!("{bytes_per_key:.0} B, {tracked_keys} keys tracked for {live_keys} live"),
            // Steady state needs a stream longer than the window (and lateness): before that
            // no key has expired, and the memory of expired keys (kept for a wider window) is
            // not there.
            pass: (medium && steady_state).then_some(bytes_per_key <= 300.0),
        },
        Verdict {
            target: "job CPU per stream second >= 10x below recompute per 1 s refresh (large stream)".into(),
            figure: format!("{:.1}x", recompute_cpu_per_refresh / job_cpu_per_stream_second.max(1e-12)),
            pass: (records.len() >= 10_000_000 && refresh_ns == 1_000_000_000)
                .then_some(recompute_cpu_per_refresh >= 10.0 * job_cpu_per_stream_second),
        },
    ];
    verdicts.iter().for_each(Verdict::print);
    println!(
        "(n/a: the target is defined for another stream size or setting; the Kafka targets: flowgraph bench-kafka)"
    );
    if !steady_state {
        println!(
            "(memory: the stream is not longer than the window plus the lateness, so no key has expired yet; \
             `flowgraph generate --periods N` makes a longer one, e.g. 40 periods for the 5-minute window)"
        );
    }

    if let Some(path) = &args.json {
        let document = json!({
            "input": args.input, "records": records.len(), "stream_seconds": stream_seconds,
            "window_ns": config.params.window_ns, "group_by": config.params.group_by.as_str(),
            "lateness_ns": config.lateness_ns, "refresh_ns": refresh_ns,
            "job": {"records_per_second": job_rate, "wall_seconds": job_wall, "cpu_seconds": job_cpu,
                    "cpu_per_stream_second": job_cpu_per_stream_second, "updates": updates, "slices": slices,
                    "resident_bytes_added": job_added, "resident_bytes_added_after_finish": job_added_after_finish, "bytes_per_live_key": bytes_per_key,
                    "peak_resident_bytes_added": job_peak_added.as_ref().ok(),
                    "state_tables_mapped_bytes_added": mapped_added,
                    "heap_in_use_bytes_added": heap_added.as_ref().map(|h| h.in_use),
                    "heap_free_bytes_added": heap_added.as_ref().map(|h| h.free)},
            "live_keys": live_keys, "tracked_keys": tracked_keys, "steady_state": steady_state,
            "process_peak_resident_bytes": process_peak,
            "hash_map_bound": {"records_per_second": bound_rate, "wall_seconds": bound_wall},
            "recompute": {"refreshes": refreshes, "cpu_seconds": recompute_cpu, "cpu_per_refresh": recompute_cpu_per_refresh},
            "latency_ms": {"offered_records_per_second": args.rate, "p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999),
                           "max": latency.max() as f64 / 1000.0, "records": latency.len(),
                           "lateness_ns": latency_lateness, "late_records": latency_late,
                           "arrival_floor": {"p50": floor_ms(0.5), "p99": floor_ms(0.99), "p999": floor_ms(0.999)}},
            "targets": verdicts.iter().map(Verdict::json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Every record of the recording, in order; bad input is reported and skipped.
fn load(path: &std::path::Path) -> anyhow::Result<Vec<Record>> {
    let mut reader = flowgraph_sources::recording::open(path)?;
    let mut records = Vec::new();
    let mut bad = 0u64;
    while let Some(item) = reader.next_item().with_context(|| format!("reading {}", path.display()))? {
        match item {
            Ok((_, record)) => records.push(record),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!("{}: {bad} undecodable items skipped", path.display());
    }
    Ok(records)
}

/// The most any record arrives behind the largest event time before it: the least lateness
/// with which no record is late, given the event times in arrival order.
pub(crate) fn arrival_disorder(times: impl IntoIterator<Item = EventTime>) -> EventTime {
    let (mut max_seen, mut disorder): (EventTime, EventTime) = (0, 0);
    for time in times {
        disorder = disorder.max(max_seen.saturating_sub(time));
        max_seen = max_seen.max(time);
    }
    disorder
}

/// [`arrival_disorder`] of a recording, read record by record (bad items are skipped, as
/// every reader of recordings does).
pub(crate) fn recording_disorder(path: &std::path::Path) -> anyhow::Result<EventTime> {
    let mut reader = flowgraph_sources::recording::open(path)?;
    let mut error = None;
    let times = std::iter::from_fn(|| match reader.next_item() {
        Ok(item) => item,
        Err(e) => {
            error = Some(e);
            None
        }
    })
    .filter_map(|item| item.ok().map(|(_, record)| record.time()));
    let disorder = arrival_disorder(times);
    match error {
        Some(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        None => Ok(disorder),
    }
}

/// The latency target's verdict, `None` where it is not defined: judged at 200,000 records/s
/// offered on a medium stream or larger, over the whole stream (a `--latency-records` prefix
/// has its own disorder, so its auto lateness is not the stream's). Records re-timed to the
/// frontier are not reflected at their own time, so a p99 reached by making them late does
/// not meet the target.
fn latency_verdict(rate: u64, medium: bool, whole_stream: bool, p99_ms: f64, late: u64) -> Option<bool> {
    (rate == 200_000 && medium && whole_stream).then_some(p99_ms <= 50.0 && late == 0)
}

/// Pushes the records at `args.rate` per wall-clock second (their own order) and measures,
/// for each, the time until a progress mark past its event time is released; returns the
/// histogram and how many records the job processed late.
fn latency(
    records: &[Record],
    config: JobConfig,
    lateness: EventTime,
    args: &crate::cli::BenchArgs,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let interval = parse_duration_ns("--latency-progress-interval", &args.latency_progress_interval)?;
    let mut job = Job::new(JobConfig { lateness_ns: lateness, progress_interval_ns: interval, ..config })
        .map_err(anyhow::Error::msg)?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    // Records not yet reflected, earliest event time first.
    let mut waiting: BinaryHeap<Reverse<(EventTime, Instant)>> = BinaryHeap::new();
    let mut outputs = Vec::new();
    let mut clock = SourceClock::default();
    let started = Instant::now();
    let per_record = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    for (i, record) in records.iter().enumerate() {
        // Hold the offered rate: wait for the record's slot when ahead of it.
        let due = per_record * i as u32;
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            if wait > Duration::from_micros(200) {
                std::thread::sleep(wait);
            }
        }
        let arrived = Instant::now();
        waiting.push(Reverse((record.time(), arrived)));
        let _ = push_followed(&mut job, &mut clock, record.clone());
        job.drain_into(&mut outputs);
        release(&mut outputs, &mut waiting, &mut histogram)?;
    }
    job.finish();
    job.drain_into(&mut outputs);
    release(&mut outputs, &mut waiting, &mut histogram)?;
    Ok((histogram, job.stats().late))
}

/// The part of each record's latency that no job can remove: the job's time model run on the
/// same records at `rate`, without computing anything. A record is reflected at the first
/// progress mark past its event time, and a mark moves only once the frontier has moved
/// `interval` past the last: the frontier is the newest record's time minus `lateness`, or
/// where the agents' progress records say the stream has got if that is further (as
/// `push_followed` moves the job's, except that here every record counts, rejected or not);
/// until then its latency is arrival time alone.
fn arrival_floor(records: &[Record], rate: u64, lateness: u64, interval: u64) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let micros_per_record = 1e6 / rate.max(1) as f64;
    let mut waiting: BinaryHeap<Reverse<(EventTime, usize)>> = BinaryHeap::new();
    let mut mark = 0;
    let mut reflect = |waiting: &mut BinaryHeap<Reverse<(EventTime, usize)>>, mark: EventTime, now: usize| {
        while let Some(Reverse((time, arrived))) = waiting.peek().copied() {
            if time >= mark {
                break;
            }
            waiting.pop();
            histogram.record((((now - arrived) as f64 * micros_per_record) as u64).max(1))?;
        }
        anyhow::Ok(())
    };
    let mut clock = SourceClock::default();
    for (i, record) in records.iter().enumerate() {
        waiting.push(Reverse((record.time(), i)));
        clock.observe(record);
        let frontier = clock.watermark(lateness);
        if frontier >= mark + interval {
            mark = frontier;
            reflect(&mut waiting, mark, i)?;
        }
    }
    reflect(&mut waiting, EventTime::MAX, records.len().saturating_sub(1))?;
    Ok(histogram)
}

fn release(
    outputs: &mut Vec<Output>,
    waiting: &mut BinaryHeap<Reverse<(EventTime, Instant)>>,
    histogram: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    let now = Instant::now();
    for output in outputs.drain(..) {
        if let Output::Progress(mark) = output {
            while let Some(Reverse((time, arrived))) = waiting.peek().copied() {
                if time >= mark {
                    break;
                }
                waiting.pop();
                histogram.record((now.saturating_duration_since(arrived).as_micros() as u64).max(1))?;
            }
        }
    }
    Ok(())
}

/// glibc's heap: bytes allocated and not freed (mapped blocks included), and bytes free in its
/// arenas, which it keeps (resident once touched) for later allocations.
#[derive(Debug, Clone, Copy)]
struct HeapUsage {
    in_use: i64,
    free: i64,
}

impl HeapUsage {
    fn since(&self, before: &HeapUsage) -> HeapUsage {
        HeapUsage { in_use: self.in_use - before.in_use, free: self.free - before.free }
    }
}

/// The heap's figures now, from glibc's `malloc_info` (totals over its arenas); `None` if the
/// call fails (logged), so the bench reports it instead of stopping.
fn heap_usage() -> Option<HeapUsage> {
    use malloc_info::info::{SystemType, TotalType};
    let info = match malloc_info::malloc_info() {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "glibc's malloc_info failed: the heap figures are left out");
            return None;
        }
    };
    let total = |kind: TotalType| info.total.iter().filter(|t| t.r#type == kind).map(|t| t.size as i64).sum::<i64>();
    let system = info.system.iter().filter(|s| s.r#type == SystemType::Current).map(|s| s.size as i64).sum::<i64>();
    let free = total(TotalType::Fast) + total(TotalType::Rest);
    Some(HeapUsage { in_use: system - free + total(TotalType::Mmap), free })
}

/// Returns the free heap's whole pages to the kernel (glibc's `malloc_trim`), so that the
/// job's resident figure counts every page it touches: memory the loading of the recording
/// left free but resident would otherwise be reused by the job without counting. Under one
/// set of glibc tunables, that reuse showed as 376 B per live key on the 400 s medium stream,
/// against 617 B measured after a trim (docs/BENCHMARKS.md, item 30).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer; it only hands free heap pages back to the kernel.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The connection samples of `records`, copied out before the job's measurement so that the
/// job is handed them by value, as a source hands it the records it decoded. Cloning each one
/// out of the recording inside the timed loop was counted as the job's (5-12% of its figure
/// when a record was 216 bytes; docs/BENCHMARKS.md, item 20), a cost the hash-map bound,
/// which reads the records by reference, never paid. Records that own text (processes, names,
/// progress reports) are still cloned in the loop: were they copied here, the job would free
/// their text during the measurement, and reuse that resident memory for its own state.
fn owned_connection_samples(records: &[Record]) -> Vec<Option<ConnStats>> {
    records
        .iter()
        .map(|record| match record {
            Record::ConnStats(sample) => Some(sample.clone()),
            _ => None,
        })
        .collect()
}

/// Records between two updates of a phase's progress bar: in the timed loops a branch per
/// record, and a bar update every ~0.1 s at the job's speed.
const PROGRESS_EVERY: usize = 1 << 16;

/// A phase's progress over the recording, on stderr (hidden when stderr is not a terminal):
/// on the large stream the phases run for minutes (recomputing the window, ~13) and said only
/// when they began. It draws only when [`show_progress`] moves it (at most ~20 times a
/// second, indicatif's limit), so no thread of its own runs beside the measured one.
fn phase_bar(records: usize) -> ProgressBar {
    ProgressBar::new(records as u64).with_style(
        ProgressStyle::with_template("  {bar:40} {human_pos}/{human_len} records ({eta} left)")
            .expect("valid template"),
    )
}

fn show_progress(bar: &ProgressBar, index: usize) {
    if index.is_multiple_of(PROGRESS_EVERY) {
        bar.set_position(index as u64);
    }
}

/// The job's graph at the end of `records`, in the baselines' form.
fn final_graph_of_job(records: &[Record], config: JobConfig) -> anyhow::Result<Graph> {
    let mut job = Job::new(config).map_err(anyhow::Error::msg)?;
    let (mut outputs, mut state) = (Vec::new(), GraphState::default());
    let mut clock = SourceClock::default();
    let bar = phase_bar(records.len());
    for (index, record) in records.iter().enumerate() {
        show_progress(&bar, index);
        let _ = push_followed(&mut job, &mut clock, record.clone());
        job.drain_into(&mut outputs);
        outputs.drain(..).for_each(|o| state.apply(&o));
    }
    bar.finish_and_clear();
    job.finish();
    job.drain_into(&mut outputs);
    outputs.drain(..).for_each(|o| state.apply(&o));
    if state.anomalies() != 0 {
        bail!("the job's deltas are inconsistent ({} anomalies)", state.anomalies());
    }
    Ok(crate::plain_graph::plain_graph(&state))
}

#[cfg(test)]
mod tests {
    use super::latency_verdict;

    #[test]
    fn the_latency_target_is_judged_only_on_the_whole_stream_at_its_rate_with_no_record_late() {
        assert_eq!(latency_verdict(200_000, true, true, 40.0, 0), Some(true));
        assert_eq!(latency_verdict(200_000, true, true, 60.0, 0), Some(false));
        assert_eq!(latency_verdict(200_000, true, true, 40.0, 3), Some(false), "met by making records late");
        assert_eq!(latency_verdict(200_000, true, false, 5.5, 0), None, "a --latency-records prefix");
        assert_eq!(latency_verdict(100_000, true, true, 40.0, 0), None, "another rate");
        assert_eq!(latency_verdict(200_000, false, true, 40.0, 0), None, "a smoke stream");
    }
}
