//! Loads the agent and prints every socket sample each second: `watch [SECONDS]` (root).
use flowgraph_sources_ebpf::Agent;

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut agent = match Agent::load() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("watch: {e}");
            std::process::exit(1);
        }
    };
    let mut samples = Vec::new();
    for _ in 0..secs {
        std::thread::sleep(std::time::Duration::from_secs(1));
        samples.clear();
        if let Err(e) = agent.collect(&mut samples) {
            eprintln!("watch: {e}");
            std::process::exit(1);
        }
        for s in &samples {
            println!(
                "pid={} start={} {:?} {} -> {} sent={} recv={} tcp_acked={} tcp_recv={} est={} closed={} adopted={} state={}",
                s.pid, s.start_time_ticks, s.role, s.local, s.remote, s.bytes_sent, s.bytes_recv,
                s.tcp_bytes_acked, s.tcp_bytes_received, s.established, s.closed, s.adopted, s.tcp_state
            );
        }
        println!("-- {:?}", agent.loss_counters());
    }
}
