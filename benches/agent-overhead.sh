#!/usr/bin/env bash
# Overhead of the eBPF agent (issue 4), measured on this host. Needs root and a release build
# (`cargo build --release`); installs iperf3 with apt-get if it is missing.
#
# 1. Throughput: loopback iperf3 with 64-byte writes (one syscall per 64 bytes on each side) and
#    with 128 KiB writes, DURATION seconds each, client pinned to CPU 0 and server to CPU 1, run
#    alternately without and with `flowgraph agent` attached (ABBA order over PAIRS pairs).
# 2. The agent at CONNS live connections: CONNS loopback TCP connections held open, each
#    sending 100 bytes a second for HOLD seconds; the agent's CPU time, peak RSS, the size of
#    one export, and the kernel programs' run time (kernel.bpf_stats_enabled=1 for this part).
#
# Environment: PAIRS (5), DURATION (5), CONNS (10000), HOLD (30), DISTINCT_PEERS (1: every
# connection goes from its own 127.2.x.y to its own 127.1.x.y, so every connection is its own
# conn_stats key; 0: all on 127.0.0.1, so the export collapses to a couple of keys),
# KEEP (0: delete the work directory at the end), FLOWGRAPH_BIN.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLOWGRAPH_BIN:-$ROOT/target/release/flowgraph}
PAIRS=${PAIRS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-10000}
HOLD=${HOLD:-30}
DISTINCT_PEERS=${DISTINCT_PEERS:-1}
KEEP=${KEEP:-0}
PERIOD=10s
IPERF_PORT=5299
CONN_PORT=5399
CASES=(64 128K)

die() { echo "agent-overhead: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }

[[ $(id -u) == 0 ]] || die "needs root (the agent attaches eBPF programs)"
[[ -x $BIN ]] || die "no $BIN: run cargo build --release first"
command -v python3 >/dev/null || die "needs python3"
command -v bpftool >/dev/null || die "needs bpftool (apt-get install bpftool)"
if ! command -v iperf3 >/dev/null; then
    log "installing iperf3"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >/dev/null
fi
# The server and the client are separate processes: each needs CONNS descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) > CONNS + 100)) || die "ulimit -n is $(ulimit -n): too low for $CONNS connections"

WORK=$(mktemp -d /tmp/agent-overhead.XXXXXX)
PIDS=()
AGENT_PID=
OLD_BPF_STATS=$(cat /proc/sys/kernel/bpf_stats_enabled)

cleanup() {
    local rc=$?
    set +e
    [[ -n $AGENT_PID ]] && kill -TERM "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    sysctl -q -w kernel.bpf_stats_enabled="$OLD_BPF_STATS"
    if [[ $KEEP == 1 || $rc != 0 ]]; then log "work files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the agent writing to $1 and waits for its first progress record (one export period).
start_agent() {
    local out=$1
    : >"$out"
    "$BIN" agent --export-period "$PERIOD" --output jsonl --out "$out" 2>>"$WORK/agent.log" &
    AGENT_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q progress "$out" 2>/dev/null && return 0
        kill -0 "$AGENT_PID" 2>/dev/null || die "agent exited early: $(tail -3 "$WORK/agent.log")"
        sleep 0.1
    done
    die "no progress record from the agent after 30 s"
}

stop_agent() {
    kill -TERM "$AGENT_PID"
    local rc=0
    wait "$AGENT_PID" || rc=$?
    AGENT_PID=
    [[ $rc == 0 ]] || die "agent exited with status $rc on SIGTERM"
}

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Running flowgraph programs as "id name run_time_ns run_cnt" (the last two need bpf stats).
bpf_progs() {
    bpftool prog show -j | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name", "").startswith("fg_"):
        print(p["id"], p["name"], p.get("run_time_ns", 0), p.get("run_cnt", 0))'
}

# One iperf3 run: appends "case mode pair gbit/s bytes_sent seconds" to $WORK/tput.tsv.
run_iperf() {
    local len=$1 mode=$2 pair=$3 json="$WORK/iperf-$1-$2-$3.json"
    taskset -c 0 iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$DURATION" -l "$len" -J >"$json" \
        || die "iperf3 failed: $(head -c 300 "$json")"
    python3 - "$json" "$len" "$mode" "$pair" >>"$WORK/tput.tsv" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))["end"]
recv, sent = d["sum_received"], d["sum_sent"]
print(sys.argv[2], sys.argv[3], sys.argv[4], recv["bits_per_second"] / 1e9, sent["bytes"], sent["seconds"])
EOF
    log "  -l $len $mode: $(tail -1 "$WORK/tput.tsv" | awk '{printf "%.3f Gbit/s", $4}')"
}

log "machine: $(nproc) vCPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
taskset -c 1 iperf3 -s -p "$IPERF_PORT" >"$WORK/iperf-server.log" 2>&1 &
PIDS+=($!)
sleep 0.5

# ---- 1. throughput, alternating without/with the agent --------------------------------------
: >"$WORK/tput.tsv"
: >"$WORK/agent-cpu.tsv"
for ((pair = 1; pair <= PAIRS; pair++)); do
    if ((pair % 2)); then order=(off on); else order=(on off); fi
    for mode in "${order[@]}"; do
        log "pair $pair/$PAIRS, agent $mode"
        if [[ $mode == on ]]; then
            start_agent "$WORK/agent-tput.jsonl"
            t0=$(cpu_ticks "$AGENT_PID")
            s0=$(date +%s.%N)
        fi
        for len in "${CASES[@]}"; do run_iperf "$len" "$mode" "$pair"; done
        if [[ $mode == on ]]; then
            echo "$(cpu_ticks "$AGENT_PID") $t0 $(date +%s.%N) $s0" >>"$WORK/agent-cpu.tsv"
            stop_agent
        fi
    done
done

# ---- 2. the agent at CONNS live connections ----------------------------------------------------
cat >"$WORK/conns.py" <<'EOF'
import resource, selectors, signal, socket, sys, time

mode, port = sys.argv[1], int(sys.argv[2])

def addr(net, i, distinct):
    return f"127.{net}.{i // 250 + 1}.{i % 250 + 1}" if distinct else "127.0.0.1"

if mode == "server":
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(4096)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, 1)
            else:
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, ConnectionResetError):
                    data = b"?"
                if not data:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
else:
    n, hold, distinct = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((addr(2, i, distinct), 0))
        s.connect((addr(1, i, distinct), port))
        s.setblocking(False)
        socks.append(s)
    print("connected", n, time.time_ns(), flush=True)
    payload, slices = b"x" * 100, 10
    t0 = time.monotonic()
    for sec in range(hold):
        for k in range(slices):
            delay = t0 + sec + k / slices - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for s in socks[k::slices]:
                s.send(payload)
    print("done", time.time_ns(), flush=True)
    signal.pause()
EOF

log "part 2: $CONNS connections, 100 B/s each for $HOLD s (distinct peers: $DISTINCT_PEERS)"
sysctl -q -w kernel.bpf_stats_enabled=1
python3 "$WORK/conns.py" server "$CONN_PORT" >"$WORK/server.out" 2>&1 &
PIDS+=($!)
before_ids=$(bpf_progs | cut -d' ' -f1 | tr '\n' ' ')
start_agent "$WORK/agent-conns.jsonl"
ours=$(bpf_progs | awk -v ids="$before_ids" 'BEGIN { split(ids, a, " "); for (i in a) old[a[i]] = 1 } !($1 in old) { print $1 }' | tr '\n' ' ')
[[ -n $ours ]] || die "no fg_ programs found for the agent"
ours_now() { bpf_progs | awk -v ids="$ours" 'BEGIN { split(ids, a, " "); for (i in a) m[a[i]] = 1 } $1 in m'; }

# Kernel hot path: both iperf3 cases again, with bpf stats on (not throughput figures: the
# stats themselves cost two clock reads per program run).
for len in "${CASES[@]}"; do
    ours_now >"$WORK/bpf-hot-$len-0"
    run_iperf "$len" stats 0
    ours_now >"$WORK/bpf-hot-$len-1"
done

c0=$(cpu_ticks "$AGENT_PID")
w0=$(date +%s.%N)
ours_now >"$WORK/bpf1"
python3 "$WORK/conns.py" client "$CONN_PORT" "$CONNS" "$HOLD" "$DISTINCT_PEERS" >"$WORK/client.out" 2>&1 &
CLIENT=$!
PIDS+=($CLIENT)
until grep -q connected "$WORK/client.out"; do
    kill -0 $CLIENT 2>/dev/null || die "client failed: $(tail -3 "$WORK/client.out")"
    sleep 0.1
done
c1=$(cpu_ticks "$AGENT_PID")
w1=$(date +%s.%N)
ours_now >"$WORK/bpf2"
log "  $CONNS connected in $(awk "BEGIN { printf \"%.1f\", $w1 - $w0 }") s; trickle for $HOLD s"
until grep -q done "$WORK/client.out"; do
    kill -0 $CLIENT 2>/dev/null || die "client failed: $(tail -3 "$WORK/client.out")"
    sleep 0.2
done
c2=$(cpu_ticks "$AGENT_PID")
w2=$(date +%s.%N)
ours_now >"$WORK/bpf3"
grep -E 'VmHWM|VmRSS' "/proc/$AGENT_PID/status" >"$WORK/agent-mem"
threads=$(awk '/^Threads/ {print $2}' "/proc/$AGENT_PID/status")
kill -TERM $CLIENT
wait $CLIENT 2>/dev/null || true
sleep 1  # let the closes reach the kernel programs
c3=$(cpu_ticks "$AGENT_PID")
stop_agent
echo "$c0 $c1 $c2 $c3 $w0 $w1 $w2 $(getconf CLK_TCK) $threads" >"$WORK/conn-cpu"

# ---- report ------------------------------------------------------------------------------------
python3 - "$WORK" "$CONNS" "$HOLD" "$DURATION" <<'EOF'
import json, statistics, sys
work, conns, hold, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

rows = [l.split() for l in open(f"{work}/tput.tsv")]
if any(r[1] in ("off", "on") for r in rows):
    print("\n### Throughput, loopback iperf3, without and with the agent (ABBA pairs)\n")
    print("| case | pairs | without: median Gbit/s (min–max) | with: median (min–max) | ratio with/without | per-pair ratios |")
    print("|---|---|---|---|---|---|")
    for case in ("64", "128K"):
        off = {r[2]: float(r[3]) for r in rows if r[0] == case and r[1] == "off"}
        on = {r[2]: float(r[3]) for r in rows if r[0] == case and r[1] == "on"}
        ratios = sorted(on[p] / off[p] for p in off if p in on)
        mo, mw = statistics.median(off.values()), statistics.median(on.values())
        label = "-l 64 (small writes)" if case == "64" else "-l 128K (large writes)"
        print(f"| {label} | {len(ratios)} | {mo:.3f} ({min(off.values()):.3f}–{max(off.values()):.3f}) "
              f"| {mw:.3f} ({min(on.values()):.3f}–{max(on.values()):.3f}) | {mw / mo:.3f} "
              f"| {ratios[0]:.3f}–{ratios[-1]:.3f} |")
    for mode in ("off", "on"):
        w = [int(r[4]) / 64 / float(r[5]) for r in rows if r[0] == "64" and r[1] == mode]
        print(f"\n-l 64, agent {mode}: median {statistics.median(w) / 1e3:,.0f} k writes/s by the client "
              f"(bytes sent / 64; the server reads 64 bytes per call too)", end="")
    print()
else:
    print("\n(PAIRS=0: the throughput pairs were not run)")
cpu = [l.split() for l in open(f"{work}/agent-cpu.tsv")]
tk = int(open(f"{work}/conn-cpu").read().split()[7])
pct = [(int(float(a)) - int(float(b))) / tk / (float(c) - float(d)) * 100 for a, b, c, d in cpu]
if pct:
    print(f"\nAgent process CPU while iperf3 ran: {min(pct):.2f}–{max(pct):.2f}% of one CPU "
          "(the kernel programs' time is charged to iperf3, not to the agent)")

def progs(name):
    out = {}
    for l in open(f"{work}/{name}"):
        i, n, t, c = l.split()
        out[n] = (int(t), int(c))
    return out

def bpf_table(a, b, secs, title):
    pa, pb = progs(a), progs(b)
    print(f"\n{title}\n")
    print("| program | runs | runs/s | avg ns/run | CPU (% of one core) |")
    print("|---|---|---|---|---|")
    tot_t = tot_c = 0
    for n in sorted(pb):
        dt, dc = pb[n][0] - pa.get(n, (0, 0))[0], pb[n][1] - pa.get(n, (0, 0))[1]
        tot_t += dt; tot_c += dc
        avg = f"{dt / dc:.0f}" if dc else "–"
        print(f"| {n} | {dc:,} | {dc / secs:,.0f} | {avg} | {dt / secs / 1e7:.2f} |")
    avg = f"{tot_t / tot_c:.0f}" if tot_c else "–"
    print(f"| all | {tot_c:,} | {tot_c / secs:,.0f} | {avg} | {tot_t / secs / 1e7:.2f} |")

for hot in (l.split() for l in open(f"{work}/tput.tsv")):
    if hot[1] == "stats":
        bpf_table(f"bpf-hot-{hot[0]}-0", f"bpf-hot-{hot[0]}-1", float(hot[5]),
                  f"### Kernel programs on the hot path (iperf3 -l {hot[0]}, {float(hot[3]):.3f} Gbit/s with bpf stats on)")

c0, c1, c2, c3, w0, w1, w2, clk, threads = open(f"{work}/conn-cpu").read().split()
c0, c1, c2, c3, clk = int(c0), int(c1), int(c2), int(c3), int(clk)
w0, w1, w2 = float(w0), float(w1), float(w2)
mem = dict(l.split(":") for l in open(f"{work}/agent-mem"))

# Exports: the records between consecutive progress records form one period.
periods, cur, size = [], {"conn_stats": 0, "process": 0, "bytes": 0, "active": 0}, 0
for line in open(f"{work}/agent-conns.jsonl"):
    r = json.loads(line)
    cur["bytes"] += len(line)
    if r["type"] == "progress":
        cur["time"] = r["time_"] / 1e9
        periods.append(cur)
        cur = {"conn_stats": 0, "process": 0, "bytes": 0, "active": 0}
    else:
        cur[r["type"]] = cur.get(r["type"], 0) + 1
        if r["type"] == "conn_stats":
            cur["active"] += r["conn_active"]
during = [p for p in periods if w1 < p["time"] <= w2]
big = max(during or periods, key=lambda p: p["conn_stats"])

print(f"\n### The agent at {conns:,} live connections ({hold} s, 100 bytes/s on each)\n")
print("| phase | wall s | agent CPU s | agent CPU (% of one core) |")
print("|---|---|---|---|")
print(f"| opening {conns:,} connections | {w1 - w0:.1f} | {(c1 - c0) / clk:.2f} | {(c1 - c0) / clk / (w1 - w0) * 100:.1f} |")
print(f"| holding them, {conns:,} sends/s | {w2 - w1:.1f} | {(c2 - c1) / clk:.2f} | {(c2 - c1) / clk / (w2 - w1) * 100:.2f} |")
print(f"| closing them (1 s after the kill; the final export on SIGTERM is not counted) | | {(c3 - c2) / clk:.2f} | |")
print(f"\nAgent peak RSS (VmHWM): {mem['VmHWM'].strip()}; RSS at the end of the hold: {mem['VmRSS'].strip()}; threads: {threads}")
print(f"One export during the hold: {big['conn_stats']:,} conn_stats + {big['process']} process records "
      f"+ 1 progress, {big['bytes'] / 1024:,.0f} KiB of JSON Lines; sum of conn_active: {big['active']:,}")
print(f"Exports during the hold: {len(during)} ({', '.join(str(p['conn_stats']) for p in during)} conn_stats records)")
bpf_table("bpf1", "bpf2", w1 - w0, f"### Kernel programs while opening {conns:,} connections")
bpf_table("bpf2", "bpf3", w2 - w1, f"### Kernel programs while holding {conns:,} connections")
EOF
log "done"
