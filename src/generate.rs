//! `flowgraph generate`: a seeded synthetic fleet recording.

use crate::cli::GenerateArgs;
use anyhow::{bail, Context};
use flowgraph_benches::{FleetProfile, Size};
use flowgraph_schema::{binary, json, Record};
use std::fs::File;
use std::io::{BufWriter, Write};

/// Records per binary frame.
const FRAME_RECORDS: usize = 4096;

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let size: Size = args.size.parse().map_err(anyhow::Error::msg)?;
    let jsonl = match args.format.as_str() {
        "binary" => false,
        "jsonl" => true,
        other => bail!("--format: unknown format {other:?}; expected binary or jsonl"),
    };
    let file = File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    let mut profile = size.profile();
    if let Some(periods) = args.periods {
        profile.periods = periods;
    }
    let count = write_recording(&profile, args.seed, jsonl, &mut out)?;
    out.flush()?;
    let profile = profile.clamped();
    let span_s = u64::from(profile.periods) * profile.export_period_ns / 1_000_000_000;
    eprintln!(
        "wrote {count} records ({size}, {} export periods: about {span_s} s of event time, seed {}) to {}",
        profile.periods,
        args.seed,
        args.out.display()
    );
    Ok(())
}

/// Writes a generated recording; returns the number of records.
pub fn write_recording(profile: &FleetProfile, seed: u64, jsonl: bool, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut batch: Vec<Record> = Vec::with_capacity(FRAME_RECORDS);
    let mut frame = Vec::new();
    let mut count = 0u64;
    let mut result = Ok(());
    let mut write_batch = |batch: &mut Vec<Record>, out: &mut dyn Write| -> std::io::Result<()> {
        if jsonl {
            for record in batch.iter() {
                out.write_all(json::encode_line(record).as_bytes())?;
                out.write_all(b"\n")?;
            }
        } else if !batch.is_empty() {
            frame.clear();
            binary::encode_frame(batch, &mut frame);
            out.write_all(&frame)?;
        }
        batch.clear();
        Ok(())
    };
    flowgraph_benches::generate(profile, seed, |record| {
        count += 1;
        batch.push(record);
        if batch.len() == FRAME_RECORDS && result.is_ok() {
            result = write_batch(&mut batch, out);
        }
    });
    result?;
    write_batch(&mut batch, out)?;
    Ok(count)
}
