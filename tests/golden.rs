//! Golden end-to-end cases: `flowgraph replay` on each `tests/golden/<case>/input.jsonl` with
//! the flags in `args`, compared with the committed expected outputs:
//!
//! * `expected.deltas.jsonl`: every delta and progress mark, byte for byte;
//! * `expected.snapshot.json`: the graph at the last event time;
//! * `expected.summary`: the counts line (read, late, rejected, bad) and the graph line;
//! * `expected.problems`: each bad or rejected record, as reported (line number and reason).
//!
//! Expected files change only through the bless switch, never by hand:
//! `FLOWGRAPH_BLESS=1 cargo test --release --test golden`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("input.jsonl").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases under {}", root.display());
    cases
}

struct Run {
    deltas: String,
    snapshot: String,
    summary: String,
    problems: String,
}

fn replay(case: &Path, out: &Path) -> Run {
    let args: Vec<String> =
        std::fs::read_to_string(case.join("args")).unwrap_or_default().lines().map(str::to_string).collect();
    let deltas = out.join("deltas.jsonl");
    let snapshot = out.join("snapshot.json");
    let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .current_dir(case)
        .args(["replay", "--input", "input.jsonl"])
        .args(&args)
        .arg("--deltas")
        .arg(&deltas)
        .arg("--snapshot")
        .arg(&snapshot)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flowgraph");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{}: replay failed\n{stdout}\n{stderr}", case.display());
    // Lines that do not depend on the machine: counts and the graph's size and time.
    let summary = stdout
        .lines()
        .filter(|l| ["input.jsonl", "graph at", "query:", "names:"].iter().any(|prefix| l.starts_with(prefix)))
        .collect::<Vec<_>>()
        .join("\n");
    let problems = stderr
        .lines()
        .filter_map(|l| l.split_once("input.jsonl: ").map(|(_, rest)| rest))
        .collect::<Vec<_>>()
        .join("\n");
    Run {
        deltas: std::fs::read_to_string(deltas).unwrap(),
        snapshot: std::fs::read_to_string(snapshot).unwrap(),
        summary: summary + "\n",
        problems: problems + "\n",
    }
}

/// A fresh scratch directory under cargo's target/tmp (kept for a look after a failure,
/// replaced by the next run; nothing left in /tmp).
fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn golden_cases_match_their_expected_outputs() {
    let bless = std::env::var_os("FLOWGRAPH_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let run = replay(&case, &out_dir(&name));
        for (file, actual) in [
            ("expected.deltas.jsonl", &run.deltas),
            ("expected.snapshot.json", &run.snapshot),
            ("expected.summary", &run.summary),
            ("expected.problems", &run.problems),
        ] {
            let path = case.join(file);
            if bless {
                std::fs::write(&path, actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; create it with FLOWGRAPH_BLESS=1", path.display()));
            if &expected != actual {
                failures.push(format!(
                    "{name}/{file} differs (review, then bless with FLOWGRAPH_BLESS=1)\n--- expected\n{}\n--- actual\n{}",
                    head(&expected),
                    head(actual)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn head(text: &str) -> String {
    text.lines().take(40).collect::<Vec<_>>().join("\n")
}

#[test]
fn replaying_the_same_input_twice_gives_identical_bytes() {
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let first = replay(&case, &out_dir(&format!("{name}-a")));
        let second = replay(&case, &out_dir(&format!("{name}-b")));
        assert_eq!(first.deltas, second.deltas, "{name}: deltas differ between runs");
        assert_eq!(first.snapshot, second.snapshot, "{name}: snapshots differ between runs");
    }
}

#[test]
fn strict_mode_stops_at_the_first_problem_and_names_it() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/bad_input");
    let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .current_dir(&case)
        .args(["replay", "--input", "input.jsonl", "--strict"])
        .output()
        .expect("run flowgraph");
    assert!(!output.status.success(), "--strict accepted bad input");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("error: input.jsonl: line 3: column"), "strict error does not name the line: {stderr}");
}

/// `--strict` on a record the job rejects (a decreasing counter) and on a damaged binary
/// frame: the run fails and names the line or byte offset, like for a malformed JSON line.
#[test]
fn strict_mode_stops_at_a_rejected_record_and_at_a_damaged_frame() {
    let dir = out_dir("strict");
    let sample = |t: u64, bytes: u64| {
        format!(
            r#"{{"type": "conn_stats", "time_": {t}, "upid": "1:100:1000", "remote_addr": "10.0.1.2", "remote_port": 8080, "trace_role": 1, "bytes_sent": {bytes}, "bytes_recv": {bytes}}}"#
        )
    };
    let lines = [sample(1_700_000_005_000_000_000, 100), sample(1_700_000_015_000_000_000, 50)];
    std::fs::write(dir.join("decreasing.jsonl"), lines.join("\n") + "\n").unwrap();
    flowgraph(&dir, &["generate", "--size", "smoke", "--seed", "5", "--out", "smoke.fgb"]);
    let mut bytes = std::fs::read(dir.join("smoke.fgb")).unwrap();
    let first_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let second = 8 + first_len;
    bytes[second + 8] = 0xFF;
    std::fs::write(dir.join("damaged.fgb"), &bytes).unwrap();
    for (input, expected) in [
        (
            "decreasing.jsonl",
            "error: decreasing.jsonl: line 2: conn_stats record rejected: counter decreased".to_string(),
        ),
        ("damaged.fgb", format!("error: damaged.fgb: byte offset {second}: undecodable payload")),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
            .current_dir(&dir)
            .args(["replay", "--input", input, "--strict"])
            .output()
            .expect("run flowgraph");
        assert!(!output.status.success(), "--strict accepted {input}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(&expected), "{input}: expected {expected:?} in: {stderr}");
    }
}

#[test]
fn a_bad_flag_value_is_a_clear_error() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/basic_pod");
    let replay = ["replay", "--input", "input.jsonl"];
    // `bench-kafka` checks its runs' query before it makes a topic (no broker listens here).
    let bench_kafka = ["bench-kafka", "--input", "input.jsonl", "--brokers", "127.0.0.1:1", "--lateness", "1s"];
    let replay_to_kafka = ["replay", "--input", "input.jsonl", "--to-kafka", "t", "--brokers", "127.0.0.1:1"];
    let agent_to_stdout = ["agent", "--output", "jsonl", "--export-period", "0s"];
    let agent_to_kafka = ["agent", "--output", "kafka", "--export-period", "0s"];
    // Nothing listens at the brokers' address: a view that took the flag would fail to bootstrap.
    let ui_from_kafka = ["ui", "--from-kafka", "--brokers", "127.0.0.1:1", "--listen", "127.0.0.1:0"];
    for (command, flag, value, expected) in [
        (&replay[..], "--window", "5 fortnights", "query.window: invalid duration"),
        (&replay[..], "--group-by", "planet", "query.group_by: unknown value \"planet\""),
        (&replay[..], "--ips", "10.0.0.0/99", "query.ips: invalid CIDR"),
        (&replay[..], "--max-updates-per-piece", "0", "query.max_updates_per_piece: must be 1 or more"),
        (&bench_kafka[..], "--max-updates-per-piece", "0", "query.max_updates_per_piece: must be 1 or more"),
        (&bench_kafka[..], "--delta-format", "xml", "invalid value 'xml' for '--delta-format"),
        (&bench_kafka[..], "--kafka-option", "compression.type", "\"compression.type\" is not KEY=VALUE"),
        (&bench_kafka[..], "--throughput-runs", "0", "invalid value '0' for '--throughput-runs"),
        (&bench_kafka[..], "--latency-runs", "0", "invalid value '0' for '--latency-runs"),
        // The followed pipeline's config sets its query: a flag would only mislabel the view.
        (&ui_from_kafka[..], "--window", "1m", "--window cannot be used with --from-kafka"),
        // Publishing runs no job, and the job's replay publishes nothing: each refuses the
        // other's flags.
        (&replay_to_kafka[..], "--window", "1m", "cannot be used with '--window"),
        (&replay[..], "--rate", "100", "required arguments were not provided:\n  --to-kafka"),
        (&replay_to_kafka[..], "--names", "names.txt", "--to-kafka only publishes the recording"),
        (
            &["explain", "10.0.0.1", "--url", "http://127.0.0.1:1"][..],
            "--window",
            "1m",
            "--url asks a running live view",
        ),
        // An agent's flags for an output it does not write to. The bad export period would stop
        // an agent that missed the conflict before it loads eBPF and runs.
        (&agent_to_stdout[..], "--brokers", "127.0.0.1:1", "--brokers cannot be used with --output jsonl"),
        (&agent_to_kafka[..], "--out", "records.jsonl", "--out is for --output jsonl or binary"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
            .current_dir(&case)
            .args(command)
            .args([flag, value])
            .output()
            .expect("run flowgraph");
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(expected), "{} {flag} {value}: {stderr}", command[0]);
    }
}

fn flowgraph(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .current_dir(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flowgraph");
    assert!(
        output.status.success(),
        "flowgraph {args:?} failed\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn binary_and_json_lines_recordings_give_the_same_deltas() {
    let dir = out_dir("formats");
    flowgraph(&dir, &["generate", "--size", "smoke", "--seed", "3", "--out", "smoke.fgb"]);
    flowgraph(&dir, &["generate", "--size", "smoke", "--seed", "3", "--out", "smoke.jsonl", "--format", "jsonl"]);
    for (input, deltas) in [("smoke.fgb", "from-binary.jsonl"), ("smoke.jsonl", "from-json.jsonl")] {
        flowgraph(&dir, &["replay", "--input", input, "--window", "1m", "--deltas", deltas]);
    }
    let binary = std::fs::read(dir.join("from-binary.jsonl")).unwrap();
    let json = std::fs::read(dir.join("from-json.jsonl")).unwrap();
    assert!(binary.len() > 10_000, "suspiciously few deltas: {} bytes", binary.len());
    assert!(binary == json, "the two encodings of one stream replay differently");
}

/// `--max-updates-per-piece` reaches the job: the frontier's first move (a lateness of the
/// stream at once) is handed over in pieces, each ending at a progress mark, so the deltas
/// hold more marks and the same updates.
#[test]
fn the_pieces_flag_adds_marks_and_changes_no_update() {
    let dir = out_dir("pieces");
    flowgraph(&dir, &["generate", "--size", "smoke", "--seed", "3", "--out", "smoke.fgb"]);
    let replay = |deltas: &str, extra: &[&str]| {
        let args = [&["replay", "--input", "smoke.fgb", "--window", "1m", "--deltas", deltas], extra].concat();
        flowgraph(&dir, &args);
        let text = std::fs::read_to_string(dir.join(deltas)).unwrap();
        let outputs: Vec<flowgraph_pipeline::Output> =
            text.lines().map(|line| flowgraph_sinks::deltas::from_line(line).unwrap()).collect();
        let (marks, updates): (Vec<_>, Vec<_>) =
            outputs.into_iter().partition(|o| matches!(o, flowgraph_pipeline::Output::Progress(_)));
        (marks.len(), updates)
    };
    let (whole_marks, whole) = replay("whole.jsonl", &[]);
    let (piece_marks, pieces) = replay("pieces.jsonl", &["--max-updates-per-piece", "50"]);
    assert!(whole.len() > 5_000, "suspiciously few updates: {}", whole.len());
    assert!(pieces == whole, "pieces changed the updates");
    assert!(piece_marks > whole_marks, "{piece_marks} marks with pieces, {whole_marks} without");
}

#[test]
fn a_damaged_binary_recording_loses_only_the_damaged_frames() {
    let dir = out_dir("damaged");
    flowgraph(&dir, &["generate", "--size", "smoke", "--seed", "5", "--out", "smoke.fgb"]);
    let mut bytes = std::fs::read(dir.join("smoke.fgb")).unwrap();
    // Frames hold 4096 records; damage the second frame's payload and cut the last frame short.
    let first_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let second = 8 + first_len;
    bytes[second + 8] = 0xFF;
    bytes.truncate(bytes.len() - 3);
    std::fs::write(dir.join("damaged.fgb"), &bytes).unwrap();
    let output = flowgraph(&dir, &["replay", "--input", "damaged.fgb"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stdout.contains("2 bad input"), "{stdout}");
    assert!(stderr.contains(&format!("damaged.fgb: byte offset {second}: undecodable payload")), "{stderr}");
    assert!(stderr.contains("truncated frame"), "{stderr}");
    // Every frame but the two damaged ones was replayed.
    let full = String::from_utf8(flowgraph(&dir, &["replay", "--input", "smoke.fgb"]).stdout).unwrap();
    let count =
        |s: &str| -> u64 { s.split(" records read").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap() };
    let lost = count(&full) - count(&stdout);
    assert!(lost > 0 && lost <= 2 * 4096, "lost {lost} records");
}
