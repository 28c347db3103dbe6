//! What the kernel tests share: the Python interpreter that runs their peers, and the
//! command line the kernel side records for a peer.

use std::process::Command;
use std::sync::OnceLock;

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
