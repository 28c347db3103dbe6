//! `flowgraph demo`: the main job on an embedded default, no Kafka, no cluster.
//!
//! Run as root, it loads the eBPF agent and feeds this host's live TCP traffic to the job in
//! this process, grouped by process (a plain host has no pods). Otherwise, or with
//! `--recording`, it says why and replays the bundled recording (`data/demo.fgb`, written by
//! `flowgraph generate --size demo --seed 7 --out data/demo.fgb`). Either way it redraws the
//! top edges as event time advances and serves the live view (`flowgraph ui`'s page and API;
//! `--no-ui` for the terminal only). After the recording it keeps serving the final graph
//! until Ctrl-C, unless `--exit-at-end`.

use crate::cli::DemoArgs;
use crate::replay::job_config;
use crate::report::{edge_table, format_time};
use crate::ui::{batch_for, check_speed, drive, serve, spawn_reader, LiveJob};
use flowgraph_config::parse_duration_ns;
use flowgraph_live::LiveGraph;
use flowgraph_sources::recording::RecordingReader;
use flowgraph_sources_ebpf::export::Exporter;
use flowgraph_sources_ebpf::Agent;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The bundled recording.
pub const DEMO_RECORDING: &[u8] = include_bytes!("../data/demo.fgb");
/// The generator arguments that reproduce it byte for byte.
pub const DEMO_SEED: u64 = 7;

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.recording {
        match Agent::load() {
            Ok(agent) => return live(&args, agent),
            Err(why) => println!(
                "flowgraph demo: live capture is not possible here ({why}); replaying the bundled recording instead"
            ),
        }
    }
    let config = job_config(&args.query)?;
    let every = parse_duration_ns("--every", &args.every)?.max(1);
    check_speed(args.speed)?;
    let params = config.params.clone();
    let max_window_ns = config.max_window_ns;
    let terminal = std::io::stdout().is_terminal();
    println!(
        "flowgraph demo: replaying the bundled recording ({} KiB, generator seed {DEMO_SEED}) at {}; group_by={} window={}",
        DEMO_RECORDING.len() / 1024,
        if args.speed == 0.0 { "full speed".to_string() } else { format!("{}x", args.speed) },
        params.group_by,
        humantime::format_duration(Duration::from_nanos(params.window_ns)),
    );
    let stop = crate::replay::stop_flag()?;
    let naming = crate::naming::start_for(args.query.config.as_ref(), &args.naming, &config)?;
    let (mut job, control) = LiveJob::new(config, naming)?;
    let server = match args.no_ui {
        true => None,
        false => Some(serve(&args.serve, job.live(), control, max_window_ns, true)?),
    };
    let mut first_time: Option<u64> = None;
    let mut next_draw = 0u64;
    let mut draw = |live: &LiveGraph| {
        live.with_graph(|graph| {
            let Some(time) = graph.time() else { return };
            if time < next_draw || graph.edge_count() == 0 {
                return;
            }
            next_draw = time + every;
            let origin = *first_time.get_or_insert(time);
            if terminal {
                print!("\x1b[2J\x1b[H");
            }
            println!(
                "event time {} (+{}s)   {} edges, {} rows{}",
                format_time(time),
                (time - origin) / 1_000_000_000,
                graph.edge_count(),
                graph.row_count(),
                server.as_ref().map(|s| format!("   live view: {}", s.url())).unwrap_or_default(),
            );
            println!("{}", edge_table(graph, args.top));
        })
    };
    let reader = spawn_reader(|| RecordingReader::new(DEMO_RECORDING), args.speed, batch_for(args.speed));
    let exit_at_end = args.exit_at_end || args.no_ui;
    let summary = drive(&mut job, reader, "demo recording", &stop, exit_at_end, &mut draw)?;
    println!();
    println!(
        "demo recording: {} records read, {} late (processed at the frontier), {} rejected, {} bad input; {} connection keys tracked",
        summary.stats.records, summary.stats.late, summary.stats.rejected, summary.bad_input, summary.tracked_keys
    );
    job.live().with_graph(|graph| {
        if let Some(time) = graph.time() {
            println!("graph at {}: {} rows, {} edges", format_time(time), graph.row_count(), graph.edge_count());
        }
        println!("{}", edge_table(graph, args.top));
    });
    Ok(())
}

/// Live capture: one export period a second, the job in this process, a redraw per period.
fn live(args: &DemoArgs, mut agent: Agent) -> anyhow::Result<()> {
    let mut query = args.query.clone();
    // A plain host has no pods: group by process unless told otherwise.
    query.group_by.get_or_insert_with(|| "process".to_string());
    query.lateness.get_or_insert_with(|| "2s".to_string());
    query.progress_interval.get_or_insert_with(|| "1s".to_string());
    let config = job_config(&query)?;
    let params = config.params.clone();
    let max_window_ns = config.max_window_ns;
    let duration = Duration::from_nanos(parse_duration_ns("--duration", &args.duration)?);
    let stop = crate::replay::stop_flag()?;
    println!(
        "flowgraph demo: capturing this host's TCP traffic live (eBPF); group_by={} window={}; {}",
        params.group_by,
        humantime::format_duration(Duration::from_nanos(params.window_ns)),
        if duration.is_zero() {
            "Ctrl-C to stop".to_string()
        } else {
            format!("for {}", humantime::format_duration(duration))
        },
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut exporter = Exporter::new(1, host.trim().to_string(), 3600 * 1_000_000_000);
    // The names of this host's DNS answers, as the agent would send them.
    let dns = flowgraph_sources_ebpf::dns::DnsNames::start(&Default::default())
        .map_err(|e| tracing::warn!(error = %e, "DNS names unavailable; going on without them"))
        .ok();
    let naming = crate::naming::start_for(args.query.config.as_ref(), &args.naming, &config)?;
    let (mut job, control) = LiveJob::new(config, naming)?;
    let server = match args.no_ui {
        true => None,
        false => Some(serve(&args.serve, job.live(), control, max_window_ns, true)?),
    };
    let requests = job.requests();
    let (mut samples, mut records) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    let mut next_export = Instant::now() + Duration::from_secs(1);
    loop {
        // Parameter changes are taken while waiting for the next export.
        while let Ok(request) = requests.recv_deadline(next_export) {
            job.handle(request);
        }
        next_export += Duration::from_secs(1);
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
        samples.clear();
        records.clear();
        agent.collect(&mut samples)?;
        let mut losses = agent.loss_counters()?;
        if let Some(dns) = &dns {
            dns.drain_records(&mut records);
            losses.dns = dns.counters().ok();
        }
        exporter.export(&samples, now, &|pid, start| agent.process(pid, start), &losses, &mut records);
        for record in records.drain(..) {
            // The agent's counters never go down; a rejection here would be a bug worth seeing.
            if let Err(rejection) = job.push(record) {
                tracing::warn!(error = %rejection, "record rejected");
            }
        }
        job.poll_names();
        // The agent exports everything up to `now`: nothing older will come.
        job.advance_watermark(now);
        job.publish();
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        job.live().with_graph(|graph| {
            println!(
                "live, {}s: {} edges, {} rows, {} connection keys{}",
                started.elapsed().as_secs(),
                graph.edge_count(),
                graph.row_count(),
                exporter.keys(),
                server.as_ref().map(|s| format!("   live view: {}", s.url())).unwrap_or_default(),
            );
            println!("{}", edge_table(graph, args.top));
        });
        let done = !duration.is_zero() && started.elapsed() >= duration;
        if done || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let stats = job.stats();
    println!(
        "captured {} records ({} rejected); loss counters: {:?}",
        stats.records,
        stats.rejected,
        agent.loss_counters()?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_benches::Size;

    #[test]
    fn the_bundled_recording_is_what_the_generator_writes() {
        let mut regenerated = Vec::new();
        crate::generate::write_recording(&Size::Demo.profile(), DEMO_SEED, false, &mut regenerated).unwrap();
        assert!(
            regenerated == DEMO_RECORDING,
            "data/demo.fgb is stale: regenerate it with \
             `flowgraph generate --size demo --seed {DEMO_SEED} --out data/demo.fgb`"
        );
    }
}
