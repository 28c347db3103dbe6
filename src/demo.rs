//! `flowgraph demo`: the main job on an embedded default, no Kafka, no cluster.
//!
//! Replays the bundled recording (`data/demo.fgb`, written by
//! `flowgraph generate --size demo --seed 7 --out data/demo.fgb`) and redraws the top edges
//! as event time advances.

use crate::cli::DemoArgs;
use crate::replay::{job_config, replay_stream};
use crate::report::{edge_table, format_time, print_summary};
use flowgraph_config::parse_duration_ns;
use flowgraph_sinks::graph::GraphState;
use flowgraph_sources::recording::RecordingReader;
use indicatif::ProgressBar;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The bundled recording.
pub const DEMO_RECORDING: &[u8] = include_bytes!("../data/demo.fgb");
/// The generator arguments that reproduce it byte for byte.
pub const DEMO_SEED: u64 = 7;

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let config = job_config(&args.query)?;
    let every = parse_duration_ns("--every", &args.every)?.max(1);
    if !(args.speed >= 0.0) {
        anyhow::bail!("--speed: must be 0 or more");
    }
    let params = config.params.clone();
    let terminal = std::io::stdout().is_terminal();
    println!(
        "flowgraph demo: replaying the bundled recording ({} KiB, generator seed {DEMO_SEED}) at {}; group_by={} window={}",
        DEMO_RECORDING.len() / 1024,
        if args.speed == 0.0 { "full speed".to_string() } else { format!("{}x", args.speed) },
        params.group_by,
        humantime::format_duration(Duration::from_nanos(params.window_ns)),
    );
    let started = Instant::now();
    let mut first_time: Option<u64> = None;
    let mut next_draw = 0u64;
    let mut draw = |graph: &GraphState| {
        let Some(time) = graph.time() else { return };
        if time < next_draw || graph.edges().next().is_none() {
            return;
        }
        next_draw = time + every;
        let origin = *first_time.get_or_insert(time);
        if args.speed > 0.0 {
            let due = Duration::from_secs_f64((time - origin) as f64 / 1e9 / args.speed);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "event time {} (+{}s)   {} edges, {} rows",
            format_time(time),
            (time - origin) / 1_000_000_000,
            graph.edges().count(),
            graph.rows().count()
        );
        println!("{}", edge_table(graph, args.top));
    };
    let reader = RecordingReader::new(DEMO_RECORDING)?;
    let summary = replay_stream(reader, "demo recording", config, true, None, Some(&mut draw), &ProgressBar::hidden())?;
    println!();
    print_summary("demo recording", &params, &summary, args.top);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_benches::Size;

    #[test]
    fn the_bundled_recording_is_what_the_generator_writes() {
        let mut regenerated = Vec::new();
        crate::generate::write_recording(Size::Demo, DEMO_SEED, false, &mut regenerated).unwrap();
        assert!(
            regenerated == DEMO_RECORDING,
            "data/demo.fgb is stale: regenerate it with \
             `flowgraph generate --size demo --seed {DEMO_SEED} --out data/demo.fgb`"
        );
    }
}
