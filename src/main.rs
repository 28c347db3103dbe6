//! `flowgraph`: the live network flow graph.
//!
//! Subcommands: `replay` a recorded stream through the job; `demo` (this host live, or the
//! bundled recording, in the terminal and the live view); `ui` (the live view: HTTP API and web
//! page); `run` (the Kafka service, on one worker or a timely cluster); `agent` (eBPF);
//! `tail`, `record` (Kafka topics for people and for replay); `generate` (seeded fleets);
//! `bench`, `bench-kafka` (benchmark harnesses).

mod agent;
mod bench;
mod cli;
mod demo;
mod explain;
mod generate;
mod harness;
mod metadata;
mod naming;
mod output;
mod plain_graph;
mod process_memory;
mod produce;
mod record;
mod replay;
mod report;
mod run;
mod tail;
mod telemetry;
mod ui;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Replay(args) => replay::run(args),
        cli::Command::Demo(args) => demo::run(args),
        cli::Command::Generate(args) => generate::run(args),
        cli::Command::Run(args) => run::run(args),
        cli::Command::Agent(args) => agent::run(args),
        cli::Command::Tail(args) => tail::run(args),
        cli::Command::Record(args) => record::run(args),
        cli::Command::Ui(args) => ui::run(args),
        cli::Command::Bench(args) => harness::run(args),
        cli::Command::BenchKafka(args) => bench::kafka(args),
        cli::Command::Explain(args) => explain::run(args),
        cli::Command::Metadata(args) => metadata::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The one place the error chain is printed.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
