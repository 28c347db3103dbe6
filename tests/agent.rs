//! `flowgraph agent` on the real kernel (root, as CI runs): a short-lived client process sends
//! a known number of bytes to a server in this test and reads a known reply; the agent's JSON
//! Lines must hold both sides' conn_stats with exactly those bytes, the right roles and ports,
//! the client's cmdline (although it exited before any export), and progress records.

mod common;
use common::{free_local_addr, metric, scrape};
use flowgraph_schema::{json, Record, TraceRole};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SENT: usize = 300_000;
const REPLY: usize = 1_234;

#[test]
fn agent_reports_exact_bytes_roles_and_short_lived_processes() {
    let euid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .unwrap();
    assert_eq!(euid, "0", "flowgraph agent loads eBPF and needs root: run the tests with sudo, as CI does");

    let out = std::env::temp_dir().join(format!("flowgraph-agent-test-{}.jsonl", std::process::id()));
    let metrics_addr = free_local_addr();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .args(["agent", "--export-period", "1s", "--output", "jsonl", "--node", "test-node-7"])
        .args(["--metrics-addr", &metrics_addr, "--out"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowgraph agent");
    // Attached once the first period is exported.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&out).map_or(true, |t| !t.contains("\"progress\"")) {
        assert!(Instant::now() < deadline, "the agent exported nothing within 20 s");
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited early");
        std::thread::sleep(Duration::from_millis(100));
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; SENT];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&vec![b'y'; REPLY]).unwrap();
    });
    let client_script = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}))\n\
         s.sendall(b'x' * {SENT})\nr = b''\nwhile len(r) < {REPLY}:\n    r += s.recv(4096)\ns.close()\n"
    );
    let client = Command::new("python3")
        .args(["-c", &client_script, "flowgraph-test-client"])
        .spawn()
        .expect("python3 is needed for this test (Debian: apt-get install python3)");
    let client_pid = client.id();
    assert!(client.wait_with_output().unwrap().status.success());
    server.join().unwrap();

    // Until an export after the close holds the client's connection, closed, and the agent's
    // metrics count every record written by then (they are set just after each export is
    // written). Not a fixed wait, which a loaded machine could outlast.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        // Lines may be cut short while the agent writes: those are read again next time.
        let written: Vec<Record> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| json::decode_line(l).ok())
            .collect();
        let closed = written.iter().any(
            |r| matches!(r, Record::ConnStats(c) if c.upid.pid == client_pid && c.remote_port == port && c.conn_close == 1),
        );
        let metrics = scrape(&metrics_addr);
        let counted = metric(&metrics, "flowgraph_agent_records_out_total");
        if closed && counted.is_some_and(|counted| counted >= written.len() as f64) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "within 20 s the agent did not export the client's closed connection ({closed}) or count the {} records \
             written ({counted:?}):\n{metrics}",
            written.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metrics.contains("flowgraph_agent_loss_total{kind=\"map_full\"} 0"), "{metrics}");
    for kind in ["closed_without_owner", "proc_evicted", "recv_unseen_bytes"] {
        assert!(metrics.contains(&format!("flowgraph_agent_loss_total{{kind=\"{kind}\"}}")), "no {kind} in\n{metrics}");
    }
    assert!(Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap().success());
    let status = agent.wait().unwrap();
    assert!(status.success(), "the agent did not exit cleanly on SIGTERM: {status}");

    let records: Vec<Record> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| json::decode_line(l).expect("the agent writes valid records"))
        .collect();
    let latest = |pred: &dyn Fn(&flowgraph_schema::ConnStats) -> bool| {
        records.iter().rev().find_map(|r| match r {
            Record::ConnStats(c) if pred(c) => Some(c.clone()),
            _ => None,
        })
    };
    let client_side =
        latest(&|c| c.upid.pid == client_pid && c.remote_port == port).expect("no conn_stats for the client process");
    assert_eq!(client_side.trace_role, TraceRole::Client);
    assert_eq!((client_side.bytes_sent, client_side.bytes_recv), (SENT as u64, REPLY as u64));
    assert_eq!((client_side.conn_open, client_side.conn_close), (1, 1));
    let server_side = latest(&|c| {
        c.upid.pid == std::process::id() && c.trace_role == TraceRole::Server && c.bytes_recv == SENT as u64
    })
    .expect("no server-side conn_stats for this test process");
    assert_eq!(server_side.remote_port, 0, "server rows have remote_port 0, as in Pixie");
    assert_eq!(server_side.bytes_sent, REPLY as u64);
    let cmdline = records
        .iter()
        .find_map(|r| match r {
            Record::Process(p) if p.upid == client_side.upid => Some(p.cmdline.clone()),
            _ => None,
        })
        .expect("no process record for the client");
    assert!(
        cmdline.contains("python3") && cmdline.contains("create_connection"),
        "the short-lived client's cmdline was lost: {cmdline:?}"
    );
    // Plain Linux, no Kubernetes: the agent's process records alone give host, node and
    // process entities.
    let client_process = records
        .iter()
        .find_map(|r| match r {
            Record::Process(p) if p.upid == client_side.upid => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    assert_eq!((client_process.host.as_str(), client_process.node.as_str()), (hostname.as_str(), "test-node-7"));
    for (group_by, entity) in
        [("host", hostname.clone()), ("node", "test-node-7".to_string()), ("process", cmdline.clone())]
    {
        let snapshot = out.with_extension(format!("{group_by}.json"));
        let replay = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
            .args(["replay", "--group-by", group_by, "--lateness", "0s", "--input"])
            .arg(&out)
            .arg("--snapshot")
            .arg(&snapshot)
            .output()
            .unwrap();
        assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
        let graph: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
        let _ = std::fs::remove_file(&snapshot);
        let found = graph["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["from_entity"] == entity.as_str() && row["upid"] == client_side.upid.to_string());
        assert!(found, "group_by {group_by}: no row of the client with from_entity {entity:?}: {graph}");
    }
    assert!(records.iter().filter(|r| matches!(r, Record::Progress(_))).count() >= 2);
    let last_progress = records.iter().rev().find_map(|r| match r {
        Record::Progress(p) => Some(p.clone()),
        _ => None,
    });
    let losses = last_progress.expect("no progress record").losses;
    assert_eq!(losses.get("map_full"), Some(&0), "progress records carry the loss counters: {losses:?}");
    for kind in ["closed_without_owner", "proc_evicted", "recv_unseen_bytes"] {
        assert!(losses.contains_key(kind), "no {kind} in the progress record's losses: {losses:?}");
    }
    let _ = std::fs::remove_file(&out);
}

#[test]
fn without_privilege_the_agent_explains_and_the_demo_falls_back_to_the_recording() {
    // setpriv (util-linux) drops to nobody with no capabilities, as an unprivileged user runs it.
    let unprivileged = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_flowgraph")])
            .args(args)
            .output()
            .expect("setpriv (util-linux) is needed for this test")
    };
    let agent = unprivileged(&["agent", "--export-period", "1s"]);
    assert!(!agent.status.success(), "the agent ran without privilege");
    let stderr = String::from_utf8_lossy(&agent.stderr);
    assert!(stderr.contains("CAP_BPF") && stderr.contains("run the agent as root"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let demo = unprivileged(&[
        "demo", "--speed", "0", "--top", "2", "--every", "20m", "--exit-at-end", "--listen", "127.0.0.1:0",
    ]);
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&demo.stderr));
    assert!(stdout.contains("live capture is not possible here"), "{stdout}");
    assert!(stdout.contains("18407 records read"), "the fallback did not replay the recording:\n{stdout}");
}
