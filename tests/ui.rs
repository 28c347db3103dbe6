//! The live view's HTTP API, through a real `flowgraph ui` process and real HTTP: the event
//! stream ends at exactly the graph the replay computes, parameters are checked field by
//! field, a token guards the API off loopback, and health and readiness say what they mean.
//! (The page itself is tested in headless Chromium: web/tests, run by `scripts/web test`.)

mod common;
use common::rows_and_edges;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `flowgraph ui` process, killed when dropped.
struct Ui {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl Ui {
    fn start(args: &[&str]) -> Ui {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
            .arg("ui")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flowgraph ui");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(30)).expect("flowgraph ui printed no address");
        let url = first
            .strip_prefix("flowgraph ui: live view at ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .trim_end_matches('/')
            .to_string();
        let stdin = child.stdin.take();
        Ui { child, stdin, url }
    }

    fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn close_input(&mut self) {
        self.stdin.take();
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// (status, body) of a GET.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = http().get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

fn put(url: &str, body: &str) -> (u16, Value) {
    let mut response = http()
        .put(url)
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}")))
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn flowgraph(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .current_dir(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flowgraph");
    assert!(output.status.success(), "flowgraph {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A client of `/api/stream`: the graph it holds after each event, as the page would.
struct StreamClient {
    events: mpsc::Receiver<(String, Value)>,
    rows: BTreeSet<String>,
    edges: BTreeSet<String>,
    progress: Option<u64>,
    snapshots: usize,
}

impl StreamClient {
    fn connect(url: &str) -> StreamClient {
        let response = http().get(&format!("{url}/api/stream")).config().timeout_global(None).build().call().unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(response.into_body().into_reader());
            let mut event = String::new();
            for line in reader.lines().map_while(Result::ok) {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_string();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    let value: Value = serde_json::from_str(data).expect("stream data is JSON");
                    if sender.send((std::mem::take(&mut event), value)).is_err() {
                        break;
                    }
                }
            }
        });
        StreamClient { events, rows: BTreeSet::new(), edges: BTreeSet::new(), progress: None, snapshots: 0 }
    }

    /// Applies events until the graph's progress mark reaches `progress`.
    fn follow_until(&mut self, progress: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.progress.is_none_or(|p| p < progress) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (event, value) = self.events.recv_timeout(left).expect("the stream stalled");
            match event.as_str() {
                "snapshot" => {
                    self.snapshots += 1;
                    self.rows = value["rows"].as_array().unwrap().iter().map(Value::to_string).collect();
                    self.edges = value["edges"].as_array().unwrap().iter().map(Value::to_string).collect();
                    self.progress = value["progress"].as_u64();
                }
                "delta" => {
                    for update in value["updates"].as_array().unwrap() {
                        let (set, record) = match (update.get("row"), update.get("edge")) {
                            (Some(row), None) => (&mut self.rows, row.to_string()),
                            (None, Some(edge)) => (&mut self.edges, edge.to_string()),
                            _ => panic!("an update is a row or an edge: {update}"),
                        };
                        match update["diff"].as_i64().unwrap() {
                            1 => assert!(set.insert(record), "inserted twice"),
                            -1 => assert!(set.remove(&record), "retracted what is not there: {record}"),
                            d => panic!("diff {d}"),
                        }
                    }
                    self.progress = value["progress"].as_u64();
                }
                "params" => {}
                other => panic!("unknown event {other:?}"),
            }
        }
    }
}

#[test]
fn the_stream_and_the_graph_end_where_the_replay_does() {
    let dir = work_dir("stream");
    flowgraph(&dir, &["generate", "--size", "smoke", "--seed", "11", "--out", "smoke.jsonl", "--format", "jsonl"]);
    let query = ["--window", "1m", "--lateness", "5s"];
    let mut args = vec!["replay", "--input", "smoke.jsonl", "--snapshot", "snapshot.json"];
    args.extend(query);
    flowgraph(&dir, &args);
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("snapshot.json")).unwrap()).unwrap();
    let expected_time = expected["time"].as_u64().unwrap();

    let input = std::fs::read_to_string(dir.join("smoke.jsonl")).unwrap();
    let lines: Vec<&str> = input.lines().collect();
    let mut args = vec!["--input", "-", "--listen", "127.0.0.1:0"];
    args.extend(query);
    let mut ui = Ui::start(&args);
    let (status, body) = get(&format!("{}/readyz", ui.url), None);
    assert_eq!((status, body.contains("progress mark")), (503, true), "{body}");

    // One client from the start, one that joins halfway (its snapshot is mid-stream).
    let mut early = StreamClient::connect(&ui.url);
    let half = lines.len() / 2;
    ui.write(&(lines[..half].join("\n") + "\n"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let joined_at = loop {
        let graph: Value = serde_json::from_str(&get(&format!("{}/api/graph", ui.url), None).1).unwrap();
        if let Some(progress) = graph["progress"].as_u64() {
            break progress;
        }
        assert!(Instant::now() < deadline, "no progress after half the input");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut late = StreamClient::connect(&ui.url);
    ui.write(&(lines[half..].join("\n") + "\n"));
    ui.close_input();
    early.follow_until(expected_time + 1);
    late.follow_until(expected_time + 1);

    let graph: Value = serde_json::from_str(&get(&format!("{}/api/graph", ui.url), None).1).unwrap();
    assert_eq!(graph["time"].as_u64(), Some(expected_time));
    let (rows, edges) = rows_and_edges(&expected);
    assert!(edges.len() > 10 && rows.len() > edges.len(), "a smoke graph has many edges and more rows");
    assert_eq!(rows_and_edges(&graph), (rows.clone(), edges.clone()), "/api/graph differs from the replay");
    for (name, client) in [("early", &early), ("late", &late)] {
        assert_eq!(client.snapshots, 1, "{name}: a client that keeps up gets one snapshot");
        assert!(client.rows == rows && client.edges == edges, "{name}: the stream's graph differs from the replay");
    }
    assert!(joined_at < expected_time, "the late client joined mid-stream");
    assert_eq!(get(&format!("{}/readyz", ui.url), None), (200, "ready".to_string()));
    let (status, metrics) = get(&format!("{}/metrics", ui.url), None);
    assert_eq!(status, 200);
    let records = lines.len();
    assert!(metrics.contains(&format!("flowgraph_records_in_total {records}")), "{metrics}");
    assert!(metrics.contains("flowgraph_ui_streams_opened_total 2"), "{metrics}");
}

#[test]
fn a_parameter_change_regroups_the_graph_and_bad_ones_name_their_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/basic_pod");
    let input = std::fs::read_to_string(dir.join("input.jsonl")).unwrap();
    let mut ui = Ui::start(&["--input", "-", "--listen", "127.0.0.1:0", "--lateness", "0s", "--window", "30s"]);
    let params_url = format!("{}/api/params", ui.url);
    let (status, body) = get(&params_url, None);
    let params: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        (params["group_by"].as_str(), params["window"].as_str(), params["editable"].as_bool()),
        (Some("pod"), Some("30s"), Some(true))
    );

    for (body, field, says) in [
        (r#"{"group_by":"planet"}"#, "group_by", "pod, service"),
        (r#"{"window":"banana"}"#, "window", "banana"),
        (r#"{"window":"3h"}"#, "window", "max_window"),
        (r#"{"ips":"10.0.0.0/33"}"#, "ips", "10.0.0.0/33"),
        (r#"{"colour":"red"}"#, "colour", "unknown parameter"),
        (r#"{"window":5}"#, "window", "must be a string"),
        ("not json", "body", "JSON object"),
    ] {
        let (status, answer) = put(&params_url, body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["field"].as_str(), Some(field), "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("{field}: ")) && error.contains(says), "{body}: {error}");
    }

    ui.write(&input);
    ui.close_input();
    let deadline = Instant::now() + Duration::from_secs(30);
    let graph = loop {
        let graph: Value = serde_json::from_str(&get(&format!("{}/api/graph", ui.url), None).1).unwrap();
        if graph["time"].as_u64() == Some(1_700_000_062_000_000_000) {
            break graph;
        }
        assert!(Instant::now() < deadline, "the input was not processed: {graph}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let froms = |graph: &Value| -> BTreeSet<String> {
        graph["edges"].as_array().unwrap().iter().map(|e| e["from_entity"].as_str().unwrap().to_string()).collect()
    };
    assert!(froms(&graph).contains("shop/cart-0"), "pods before the change: {graph}");

    // After the input has ended, a change shows at once (one progress interval later).
    let (status, answer) = put(&params_url, r#"{"group_by":"service"}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["group_by"].as_str(), Some("service"));
    let effective_from = answer["effective_from"].as_u64().unwrap();
    let graph: Value = serde_json::from_str(&get(&format!("{}/api/graph", ui.url), None).1).unwrap();
    assert!(graph["progress"].as_u64().unwrap() > effective_from, "{graph}");
    assert_eq!(graph["params"]["group_by"].as_str(), Some("service"));
    let services = froms(&graph);
    assert!(services.contains("shop/frontend") && services.contains("db/redis"), "{services:?}");
    assert!(services.iter().all(|s| !s.ends_with("-0")), "pods left after regrouping: {services:?}");
}

#[test]
fn off_loopback_the_api_needs_the_token() {
    // Without a token, binding beyond loopback is refused.
    let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .args(["ui", "--input", "-", "--listen", "0.0.0.0:0"])
        .env_remove("FLOWGRAPH_UI_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("needs a token"), "{stderr}");

    let ui = Ui::start(&["--input", "-", "--listen", "0.0.0.0:0", "--token", "s3cret"]);
    let port = ui.url.rsplit(':').next().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for path in ["/api/graph", "/api/params", "/api/stream", "/metrics"] {
        let (status, body) = get(&format!("{base}{path}"), None);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("\"field\":\"authorization\""), "{path}: {body}");
        assert_eq!(get(&format!("{base}{path}"), Some("wrong")).0, 401, "{path} with a wrong token");
    }
    assert_eq!(get(&format!("{base}/api/params"), Some("s3cret")).0, 200);
    // The page, its assets and the probes are open: they carry no data.
    for path in ["/", "/assets/app.js", "/assets/app.css", "/healthz", "/readyz"] {
        assert_ne!(get(&format!("{base}{path}"), None).0, 401, "{path}");
    }
    let (status, page) = get(&format!("{base}/"), None);
    assert_eq!(status, 200);
    assert!(page.contains("assets/app.js"), "the page loads its bundle: {page}");
}

/// A real DNS server for reverse lookups: Debian's dnsmasq answering PTR queries from a hosts
/// file, on 127.0.0.1 and a free port; killed when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Dnsmasq {
    fn start(dir: &Path, hosts: &str) -> Dnsmasq {
        let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("dnsmasq not found: run scripts/setup (installs Debian's dnsmasq-base)");
        let hosts_file = dir.join("hosts");
        let log = dir.join("dnsmasq.log");
        std::fs::write(&hosts_file, hosts).unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
            .args(["--bind-interfaces", "--listen-address=127.0.0.1", "--local=/in-addr.arpa/", "--user=root"])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts_file.display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let deadline = Instant::now() + Duration::from_secs(10);
        // It logs the hosts file it read once it serves.
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("read ") {
            assert!(Instant::now() < deadline, "dnsmasq did not start within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Dnsmasq { child, port }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/api/graph` has an edge to `to_entity`, writing a progress record each round so
/// that event time moves (names that arrive later are stamped with the job's frontier).
fn wait_for_edge_to(ui: &mut Ui, to_entity: &str, clock: &mut u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let graph: Value = serde_json::from_str(&get(&format!("{}/api/graph", ui.url), None).1).unwrap();
        let edges = graph["edges"].as_array().cloned().unwrap_or_default();
        if edges.iter().any(|e| e["to_entity"] == to_entity) {
            return graph;
        }
        assert!(Instant::now() < deadline, "no edge to {to_entity} within 30 s; graph: {graph}");
        *clock += 1_000_000_000;
        ui.write(&format!("{{\"type\":\"progress\",\"time_\":{clock},\"source\":\"agent-1\"}}\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reverse_dns_and_the_names_file_rename_edges_live_and_explain_says_why() {
    let dir = work_dir("names");
    let dns = Dnsmasq::start(&dir, "198.18.0.7 db7.lab.example\n");
    let names = dir.join("names.txt");
    std::fs::write(&names, "198.18.1.0/24 partner-net\n").unwrap();
    let dns_server = format!("127.0.0.1:{}", dns.port);
    let mut ui = Ui::start(&[
        "--input",
        "-",
        "--listen",
        "127.0.0.1:0",
        "--lateness",
        "0s",
        "--names",
        names.to_str().unwrap(),
        "--reverse-dns",
        "--dns-server",
        &dns_server,
    ]);
    let mut clock = 1_700_000_000_000_000_000u64;
    let conn = |t: u64, addr: &str| {
        format!(
            "{{\"type\":\"conn_stats\",\"time_\":{t},\"upid\":\"1:10:100\",\"remote_addr\":\"{addr}\",\"remote_port\":5432,\"trace_role\":1,\"bytes_sent\":10,\"bytes_recv\":20}}\n"
        )
    };
    ui.write(&format!(
        "{{\"type\":\"process\",\"time_\":{clock},\"upid\":\"1:10:100\",\"cmdline\":\"api\",\"pod\":\"shop/api-0\"}}\n"
    ));
    ui.write(&(conn(clock, "198.18.0.7") + &conn(clock, "198.18.1.9")));

    // The static name is there from the first record on; the PTR name arrives later.
    wait_for_edge_to(&mut ui, "partner-net", &mut clock);
    wait_for_edge_to(&mut ui, "db7.lab.example", &mut clock);

    // The file changes: a static name outranks reverse DNS, and a removed line withdraws.
    std::fs::write(&names, "198.18.0.7 primary-db\n").unwrap();
    let graph = wait_for_edge_to(&mut ui, "primary-db", &mut clock);
    let targets: BTreeSet<String> =
        graph["edges"].as_array().unwrap().iter().map(|e| e["to_entity"].as_str().unwrap().to_string()).collect();
    assert_eq!(targets, BTreeSet::from(["198.18.1.9".to_string(), "primary-db".to_string()]));

    // The API and the CLI say who named it and what else was on offer.
    let (status, body) = get(&format!("{}/api/explain/198.18.0.7", ui.url), None);
    assert_eq!(status, 200, "{body}");
    let why: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(why["to_entity"], "primary-db");
    assert_eq!(why["decided_by"], serde_json::json!({"source": "static"}));
    let candidates: Vec<(String, String)> = why["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["source"].as_str().unwrap().to_string(), c["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        candidates,
        vec![("static".into(), "primary-db".into()), ("reverse_dns".into(), "db7.lab.example".into())]
    );
    let text = flowgraph(&dir, &["explain", "198.18.1.9", "--url", &ui.url]);
    assert!(text.contains("to_entity: 198.18.1.9 (no source names it)"), "{text}");
    assert!(text.contains("static       (withdrawn)"), "{text}");
    let (status, body) = get(&format!("{}/api/explain/not-an-address", ui.url), None);
    assert_eq!((status, body.contains("\"field\":\"addr\"")), (400, true), "{body}");
}

#[test]
fn explain_replays_a_recording_and_names_the_winning_source() {
    let dir = work_dir("explain");
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/naming/input.jsonl");
    let text = flowgraph(&dir, &["explain", "203.0.113.9", "--input", input.to_str().unwrap()]);
    assert!(text.contains("to_entity: api.payments.example (named by dns)"), "{text}");
    assert!(text.contains("reverse_dns  ec2-203-0-113-9.compute.example"), "{text}");
    let json = flowgraph(&dir, &["explain", "127.0.0.1", "--input", input.to_str().unwrap(), "--json"]);
    let why: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(why["decided_by"], "loopback");
}
