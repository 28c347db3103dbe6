//! This process's resident memory, as the kernel counts it in `/proc/self/status`: what the
//! benchmarks report and what an operator sizes a deployment by.

/// This process's resident memory now (VmRSS), 0 if the kernel does not report it.
pub fn resident_bytes() -> u64 {
    status_bytes("VmRSS:").unwrap_or(0)
}

/// The most resident memory this process has held (VmHWM): since it started, or since the
/// last [`reset_peak_resident`].
pub fn peak_resident_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Lowers the peak (VmHWM) to the resident memory now, so that a later
/// [`peak_resident_bytes`] is the peak of what ran in between (Linux 4.0 and later: value 5
/// of `/proc/self/clear_refs`).
pub fn reset_peak_resident() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNTING_SLACK: u64 = 4 << 20;

    #[test]
    fn the_peak_covers_what_was_touched_and_a_reset_lowers_it() {
        let before = resident_bytes();
        assert!(before > 0, "no VmRSS in /proc/self/status");
        // 64 MiB touched page by page, then freed (glibc maps a block this large on its own,
        // and returns it to the kernel when it is freed).
        let mut block = vec![0u8; 64 << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&block);
        let touched = resident_bytes();
        drop(block);
        let peak = peak_resident_bytes().expect("VmHWM in /proc/self/status");
        // The kernel counts resident pages per CPU and folds the counts in batches, so two
        // readings may disagree by a few hundred KiB (seen: the peak 156 KiB below a VmRSS).
        assert!(
            peak + COUNTING_SLACK >= touched && touched >= before + (60 << 20),
            "before {before}, touched {touched}, peak {peak}"
        );
        reset_peak_resident().expect("writing /proc/self/clear_refs");
        let after_reset = peak_resident_bytes().expect("VmHWM in /proc/self/status");
        assert!(after_reset + (60 << 20) <= peak, "the reset left the peak at {after_reset} (was {peak})");
    }
}
