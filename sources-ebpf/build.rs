//! Compiles the kernel programs (bpf/flowgraph.bpf.c: the TCP tracepoints; bpf/dns.bpf.c: the
//! DNS answer socket filter) into BPF objects embedded in the crate.
//!
//! vmlinux.h is generated at build time into OUT_DIR with
//! `bpftool btf dump file /sys/kernel/btf/vmlinux format c`, not committed: it is 2.8 MB of
//! machine-generated text that would go stale with every kernel, and CO-RE makes the object
//! portable anyway (field offsets are relocated against the running kernel's BTF at load time).
//! A build host without BTF (a container build, another OS) can point `FLOWGRAPH_VMLINUX_H` at a
//! vmlinux.h dumped elsewhere, or `FLOWGRAPH_BTF` at another BTF file.
//!
//! Needs clang (with the BPF target), libbpf's headers and bpftool: `scripts/setup` installs them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fail(msg: &str) -> ! {
    eprintln!("error: flowgraph-sources-ebpf: {msg}");
    std::process::exit(1);
}

fn find_tool(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path).map(|dir| dir.join(name)).chain(extra.iter().map(PathBuf::from)).find(|p| p.is_file())
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = manifest.join("bpf");
    // (source, header it includes, object): one object per program type, loaded separately.
    let objects = [("flowgraph.bpf.c", "flowgraph.h", "flowgraph.bpf.o"), ("dns.bpf.c", "dns.h", "dns.bpf.o")];
    for (src, header, _) in objects {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(src).display());
        println!("cargo:rerun-if-changed={}", bpf_dir.join(header).display());
    }
    println!("cargo:rerun-if-env-changed=FLOWGRAPH_VMLINUX_H");
    println!("cargo:rerun-if-env-changed=FLOWGRAPH_BTF");
    println!("cargo:rerun-if-env-changed=CLANG");

    let vmlinux = out.join("vmlinux.h");
    if let Some(given) = env::var_os("FLOWGRAPH_VMLINUX_H") {
        println!("cargo:rerun-if-changed={}", Path::new(&given).display());
        if let Err(e) = std::fs::copy(&given, &vmlinux) {
            fail(&format!("cannot copy FLOWGRAPH_VMLINUX_H={}: {e}", Path::new(&given).display()));
        }
    } else {
        let btf =
            env::var_os("FLOWGRAPH_BTF").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux"));
        if !btf.is_file() {
            fail(&format!(
                "{} does not exist: this kernel exposes no BTF to generate vmlinux.h from. \
                 Set FLOWGRAPH_VMLINUX_H to a vmlinux.h dumped on a kernel with \
                 CONFIG_DEBUG_INFO_BTF=y (bpftool btf dump file /sys/kernel/btf/vmlinux format c).",
                btf.display()
            ));
        }
        let Some(bpftool) = find_tool("bpftool", &["/usr/sbin/bpftool", "/sbin/bpftool"]) else {
            fail("bpftool not found (it generates vmlinux.h): run scripts/setup, or apt-get install bpftool");
        };
        let dump = Command::new(&bpftool)
            .args(["btf", "dump", "file"])
            .arg(&btf)
            .args(["format", "c"])
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", bpftool.display())));
        if !dump.status.success() {
            fail(&format!("bpftool btf dump failed: {}", String::from_utf8_lossy(&dump.stderr).trim()));
        }
        if let Err(e) = std::fs::write(&vmlinux, &dump.stdout) {
            fail(&format!("cannot write {}: {e}", vmlinux.display()));
        }
    }

    let clang = env::var_os("CLANG")
        .map(PathBuf::from)
        .or_else(|| find_tool("clang", &[]))
        .unwrap_or_else(|| fail("clang not found (it compiles the BPF programs): run scripts/setup, or apt-get install clang llvm libbpf-dev"));
    if !Path::new("/usr/include/bpf/bpf_helpers.h").is_file() {
        println!("cargo:warning=/usr/include/bpf/bpf_helpers.h missing: install libbpf-dev (scripts/setup)");
    }
    // bpf_tracing.h needs the target architecture for its register-access macros.
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default().as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "s390x" => "s390",
        "powerpc64" => "powerpc",
        other => fail(&format!("no BPF target architecture mapping for `{other}`")),
    };
    for (src, _, obj) in objects {
        let obj = out.join(obj);
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg("-I")
            .arg(&out)
            .arg("-I")
            .arg(&bpf_dir)
            .arg("-c")
            .arg(bpf_dir.join(src))
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", clang.display())));
        if !status.success() {
            fail(&format!("clang failed to compile bpf/{src} (see the messages above)"));
        }
        // -g is needed for BTF (maps, CO-RE relocations); the DWARF beside it is not: strip it
        // when llvm-strip is at hand (the object shrinks from ~700 KB to a few tens of KB).
        if let Some(strip) = find_tool("llvm-strip", &[]) {
            let _ = Command::new(strip).arg("-g").arg(&obj).status();
        }
    }
}
