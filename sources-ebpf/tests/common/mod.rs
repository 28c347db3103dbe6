//! What the kernel tests share: the root check, the agent and collecting its samples, the
//! Python interpreter that runs their peers, and the command line the kernel side records for
//! a peer.
// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use flowgraph_sources_ebpf::{Agent, SocketSample};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Panics unless the tests run as root (effective uid 0), saying what they do that needs it
/// (`needs`) and how to run them.
pub fn require_root(needs: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2));
    assert_eq!(euid, Some("0"), "{needs}; run them with sudo, as CI does");
}

/// `name` found on PATH or, as root's tools often are, in the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The agent's programs loaded and attached in the real kernel.
pub fn agent() -> Agent {
    Agent::load().unwrap_or_else(|e| panic!("agent did not load: {e}"))
}

/// Collects the agent's samples into `seen` (by cookie) until `done` holds for them, or
/// `within` passes; the caller's assertions then say what is missing.
pub fn collect_until(
    agent: &mut Agent,
    seen: &mut HashMap<u64, SocketSample>,
    within: Duration,
    mut done: impl FnMut(&HashMap<u64, SocketSample>) -> bool,
) {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        agent.collect(&mut buf).expect("collect");
        for s in buf.drain(..) {
            seen.insert(s.cookie, s);
        }
        if done(seen) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The real Python interpreter (not a pyenv shim: the peers' command lines are asserted
/// exactly, and the shim's extra exec layers cost ~0.2 s a start).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("the eBPF agent tests need python3: apt-get install python3");
        assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// The command line the kernel side records for `script` started with `args` by the
/// interpreter (directly, or by `ip netns exec`, which execs it in place): argv joined by
/// spaces.
pub fn peer_cmdline(script: &str, args: &[&str]) -> String {
    format!("{} {script} {}", python(), args.join(" "))
}
