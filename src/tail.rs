//! `flowgraph tail`: the graph from Kafka, for people — the kcat of this product.
//!
//! `--state` prints the current graph: the compacted state topic, brought up to date by the
//! deltas after its last checkpoint (as `ui --from-kafka` bootstraps).
//! Otherwise it applies the delta topic from its beginning and redraws the top edges at
//! progress marks (at most once a second), following new deltas until Ctrl-C (or until caught
//! up, with `--exit-at-end`).

use crate::cli::TailArgs;
use crate::replay::{kafka_config, stop_flag};
use crate::report::{edge_table, format_time};
use crate::ui::bootstrap;
use anyhow::Context;
use flowgraph_pipeline::Output;
use flowgraph_sinks::deltas::DeltaDecoder;
use flowgraph_sinks::graph::GraphState;
use flowgraph_sources::kafka::committed_reader;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub fn run(args: TailArgs) -> anyhow::Result<()> {
    let kafka = kafka_config(args.config.as_ref(), args.brokers.as_ref())?;
    let stop = stop_flag()?;
    let consumer = committed_reader(&kafka.brokers, &kafka.options, "flowgraph-tail")?;
    if args.state {
        return print_state(&kafka, &consumer, &stop, args.top);
    }
    let topic = &kafka.deltas_topic;
    let (_, end) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .with_context(|| format!("reading offsets of {topic} on {}", kafka.brokers))?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut graph = GraphState::default();
    let mut decoder = DeltaDecoder::default();
    let terminal = std::io::stdout().is_terminal();
    let mut last_draw: Option<Instant> = None;
    let mut caught_up = end == 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            if args.exit_at_end && (caught_up || position_reached(&consumer, end)) {
                break;
            }
            continue;
        };
        let message = message.with_context(|| format!("consuming {topic}"))?;
        if message.offset() + 1 >= end {
            caught_up = true;
        }
        let payload = message.payload().unwrap_or_default();
        let outputs = match flowgraph_sinks::kafka::decode_with(&mut decoder, payload) {
            Ok(outputs) => outputs,
            Err(e) => {
                tracing::warn!(offset = message.offset(), error = %e, "undecodable delta message");
                continue;
            }
        };
        for output in &outputs {
            graph.apply(output);
            if let (Output::Progress(_), true) =
                (output, last_draw.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)))
            {
                draw(&graph, args.top, terminal);
                last_draw = Some(Instant::now());
            }
        }
        if args.exit_at_end && caught_up {
            break;
        }
    }
    draw(&graph, args.top, terminal);
    Ok(())
}

fn position_reached(consumer: &BaseConsumer, end: i64) -> bool {
    consumer
        .position()
        .is_ok_and(|p| p.elements().iter().all(|e| matches!(e.offset(), Offset::Offset(o) if o + 1 >= end)))
}

fn draw(graph: &GraphState, top: usize, terminal: bool) {
    if terminal {
        print!("\x1b[2J\x1b[H");
    }
    match graph.time() {
        Some(time) => {
            println!("graph at {} : {} edges, {} rows", format_time(time), graph.edge_count(), graph.row_count())
        }
        None => println!("no progress mark yet"),
    }
    println!("{}", edge_table(graph, top));
}

fn print_state(
    kafka: &flowgraph_config::KafkaConfig,
    consumer: &BaseConsumer,
    stop: &AtomicBool,
    top: usize,
) -> anyhow::Result<()> {
    let Some(current) = bootstrap(kafka, consumer, &mut DeltaDecoder::default(), stop)? else { return Ok(()) };
    let (state_messages, undecodable) = (current.state_messages, current.undecodable);
    let graph = current.into_graph();
    println!(
        "{}: {state_messages} messages, {} edges, {} rows{}",
        kafka.state_topic,
        graph.edge_count(),
        graph.row_count(),
        if undecodable > 0 { format!(", {undecodable} undecodable values") } else { String::new() }
    );
    draw(&graph, top, false);
    Ok(())
}
