//! Micro-benchmarks of the hot paths (criterion): the record codecs, the job per record, and
//! the delta encoding. `cargo bench --bench hot_paths`; figures in docs/BENCHMARKS.md. The
//! end-to-end harness with baselines is `flowgraph bench`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flowgraph_benches::Size;
use flowgraph_pipeline::{Job, JobConfig, Output};
use flowgraph_schema::{binary, json, Record};
use flowgraph_sinks::kafka::{
    encode_transaction, split_messages, DeltaFormat, StateCheckpoints, TransactionMessage, MAX_MESSAGE_BYTES,
    MAX_UPDATES_PER_MESSAGE,
};
use std::hint::black_box;

/// The first `n` records of the smoke fleet (seed 1), in event-time order.
fn records(n: usize) -> Vec<Record> {
    let mut records = Vec::new();
    flowgraph_benches::generate(&Size::Smoke.profile(), 1, |r| records.push(r));
    records.sort_by_key(Record::time);
    records.truncate(n);
    records
}

fn codecs(c: &mut Criterion) {
    let batch = records(4096);
    let mut frame = Vec::new();
    binary::encode_frame(&batch, &mut frame);
    let lines: Vec<String> = batch.iter().map(json::encode_line).collect();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("binary encode 4096", |b| {
        let mut out = Vec::with_capacity(frame.len());
        b.iter(|| {
            out.clear();
            binary::encode_frame(black_box(&batch), &mut out);
        })
    });
    group.bench_function("binary decode 4096", |b| b.iter(|| binary::decode_frame(black_box(&frame)).unwrap()));
    group.bench_function("json encode 4096", |b| {
        b.iter(|| batch.iter().for_each(|r| drop(black_box(json::encode_line(r)))))
    });
    group.bench_function("json decode 4096", |b| {
        b.iter(|| lines.iter().for_each(|l| drop(black_box(json::decode_line(black_box(l)).unwrap()))))
    });
    group.finish();
}

fn job(c: &mut Criterion) {
    let batch = records(20_000);
    let config = JobConfig { lateness_ns: 0, ..JobConfig::default() };
    let mut group = c.benchmark_group("job");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("push the smoke stream (17.5k records), then finish", |b| {
        b.iter_batched(
            || (Job::new(config.clone()).unwrap(), batch.clone()),
            |(mut job, records)| {
                let mut outputs = Vec::new();
                for record in records {
                    let _ = job.push(record);
                }
                job.finish();
                job.drain_into(&mut outputs);
                outputs.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn deltas(c: &mut Criterion) {
    let mut job = Job::new(JobConfig { lateness_ns: 0, ..JobConfig::default() }).unwrap();
    for record in records(20_000) {
        let _ = job.push(record);
    }
    job.finish();
    let mut outputs = Vec::new();
    job.drain_into(&mut outputs);
    // As the Kafka sink takes them: the updates, and where each completed batch ends with its mark.
    let (mut updates, mut batches) = (Vec::new(), Vec::new());
    for output in outputs {
        match output {
            Output::Update { .. } => updates.push(output),
            Output::Progress(progress) => batches.push((updates.len(), progress)),
        }
    }
    let mut group = c.benchmark_group("deltas");
    group.throughput(Throughput::Elements(updates.len() as u64));
    group.bench_function("JSON delta lines", |b| {
        b.iter(|| updates.iter().map(|o| flowgraph_sinks::deltas::to_line(black_box(o)).len()).sum::<usize>())
    });
    group.bench_function("Kafka sink: one transaction's delta messages and state writes", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            encode_transaction::<()>(
                DeltaFormat::Json,
                MAX_UPDATES_PER_MESSAGE,
                black_box(&updates),
                &batches,
                // A checkpoint of this transaction alone: every key's state write, as at `0s`.
                &mut StateCheckpoints::new(0, usize::MAX),
                |message| {
                    bytes += match message {
                        TransactionMessage::Delta(payload) => payload.len(),
                        TransactionMessage::State { key, value } => key.len() + value.map_or(0, <[u8]>::len),
                        TransactionMessage::Checkpoint(_) => 0,
                    };
                    Ok(())
                },
            )
            .unwrap();
            bytes
        })
    });
    // What a consumer of the delta topic does, and a restarted sink's take-over and a view's
    // bootstrap over many of them.
    let messages = split_messages(DeltaFormat::Json, &updates, MAX_UPDATES_PER_MESSAGE, MAX_MESSAGE_BYTES, None);
    group.bench_function("JSON delta messages decoded", |b| {
        b.iter(|| {
            let mut decoder = flowgraph_sinks::deltas::DeltaDecoder::default();
            let decode = |m: &Vec<u8>| flowgraph_sinks::kafka::decode_with(&mut decoder, black_box(m)).unwrap().len();
            messages.iter().map(decode).sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(hot_paths, codecs, job, deltas);
criterion_main!(hot_paths);
