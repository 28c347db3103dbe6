//! `flowgraph record --from-kafka TOPIC --out FILE`: an input topic to a binary recording, so a
//! stream seen in production replays through the same path later (`flowgraph replay`).

use crate::cli::RecordArgs;
use crate::replay::kafka_config;
use anyhow::Context;
use flowgraph_schema::{binary, Record};
use flowgraph_sources::kafka::{decode_message, read_to_end};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Duration;

/// Records per frame of the recording.
const FRAME_RECORDS: usize = 4096;

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let kafka = kafka_config(args.config.as_ref(), args.brokers.as_ref())?;
    let topic = &args.from_kafka;
    let mut out = BufWriter::new(File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?);
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {human_pos} records recorded ({per_sec}) {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let (mut batch, mut frame) = (Vec::<Record>::with_capacity(FRAME_RECORDS), Vec::new());
    let (mut records, mut bad) = (0u64, 0u64);
    let mut result = Ok(());
    let mut flush = |batch: &mut Vec<Record>, out: &mut BufWriter<File>| -> std::io::Result<()> {
        if !batch.is_empty() {
            frame.clear();
            binary::encode_frame(batch, &mut frame);
            out.write_all(&frame)?;
            batch.clear();
        }
        Ok(())
    };
    let messages = read_to_end(&kafka.brokers, topic, &kafka.options, |_, payload| {
        let mut problems = Vec::new();
        let before = batch.len();
        decode_message(payload.unwrap_or_default(), &mut batch, &mut problems);
        records += (batch.len() - before) as u64;
        for (reason, _) in problems {
            bad += 1;
            bar.suspend(|| tracing::warn!("{topic}: undecodable message skipped: {reason}"));
        }
        bar.set_position(records);
        if batch.len() >= FRAME_RECORDS && result.is_ok() {
            result = flush(&mut batch, &mut out);
        }
    })?;
    result.with_context(|| format!("writing {}", args.out.display()))?;
    flush(&mut batch, &mut out).with_context(|| format!("writing {}", args.out.display()))?;
    out.flush()?;
    bar.finish_and_clear();
    println!(
        "recorded {records} records from {messages} messages of {topic} into {} ({bad} undecodable skipped)",
        args.out.display()
    );
    Ok(())
}
