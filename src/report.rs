//! What replay and demo print for people.

use crate::replay::ReplaySummary;
use bytesize::ByteSize;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use flowgraph_pipeline::Params;
use flowgraph_sinks::graph::GraphState;

/// The top edges by bytes_total, as a table.
pub fn edge_table(graph: &GraphState, top: usize) -> Table {
    let mut edges: Vec<_> = graph.edges().collect();
    edges.sort_by(|a, b| b.bytes_total().cmp(&a.bytes_total()).then_with(|| a.cmp(b)));
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["from", "to", "total", "sent", "received"]);
    for edge in edges.iter().take(top) {
        table.add_row(vec![
            Cell::new(one_line(&edge.from_entity)),
            Cell::new(one_line(&edge.to_entity)),
            Cell::new(human(edge.bytes_total())).set_alignment(CellAlignment::Right),
            Cell::new(human(edge.bytes_sent)).set_alignment(CellAlignment::Right),
            Cell::new(human(edge.bytes_recv)).set_alignment(CellAlignment::Right),
        ]);
    }
    table
}

/// A name as one table line: newlines become spaces, and long names are cut with an ellipsis.
fn one_line(name: &str) -> String {
    const MAX_CHARS: usize = 60;
    let flat: String = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(MAX_CHARS - 1).collect();
    cut + "…"
}

/// Bytes in binary units (KiB, MiB), as the web view shows them.
pub fn human(bytes: u64) -> String {
    ByteSize(bytes).to_string_as(true)
}

/// Event time as UTC text.
pub fn format_time(ns: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_millis(time).to_string()
}

pub fn print_summary(source: &str, params: &Params, summary: &ReplaySummary, top: usize) {
    let graph = &summary.graph;
    let seconds = summary.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{source} ({} format): {} records read, {} late (processed at the frontier), {} rejected, {} bad input",
        summary.format, summary.records, summary.late, summary.rejected, summary.bad_input
    );
    println!(
        "query: ips={} window={} group_by={}",
        params.ips,
        humantime::format_duration(std::time::Duration::from_nanos(params.window_ns)),
        params.group_by
    );
    println!(
        "replayed in {:.2} s ({:.0} records/s); {} updates, {} progress marks; peak RSS {}; {} connection keys tracked at the end",
        seconds,
        summary.records as f64 / seconds,
        summary.updates,
        summary.progress_marks,
        crate::process_memory::peak_resident_bytes().map_or("unknown".into(), human),
        summary.tracked_keys,
    );
    match graph.time() {
        Some(time) => println!(
            "graph at {} ({} ns): {} rows, {} edges",
            format_time(time),
            time,
            graph.row_count(),
            graph.edge_count()
        ),
        None => println!("graph: empty input"),
    }
    if graph.anomalies() > 0 {
        println!("WARNING: {} records with a multiplicity other than 1", graph.anomalies());
    }
    println!("{}", edge_table(graph, top));
}
