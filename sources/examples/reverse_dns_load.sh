#!/usr/bin/env bash
# The reverse-DNS load measurement: 10,000 unknown addresses (1,000 with names) against a real
# dnsmasq on loopback, or against a black hole that never answers.
#
#   sources/examples/reverse_dns_load.sh dnsmasq    [example flags]   # e.g. --addresses 10000
#   sources/examples/reverse_dns_load.sh black-hole [example flags]   # e.g. --max-in-flight 100
#
# dnsmasq comes from Debian's dnsmasq-base (scripts/setup). PORT (default 53535) is its port.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-dnsmasq}
shift || true

cargo build --release -q -p flowgraph-sources --example reverse_dns_load
bin=target/release/examples/reverse_dns_load

case "$mode" in
black-hole)
    exec "$bin" --black-hole "$@"
    ;;
dnsmasq)
    dnsmasq=$(command -v dnsmasq || true)
    [ -n "$dnsmasq" ] || [ ! -x /usr/sbin/dnsmasq ] || dnsmasq=/usr/sbin/dnsmasq
    if [ -z "$dnsmasq" ]; then
        echo "dnsmasq not found: run scripts/setup (installs Debian's dnsmasq-base)" >&2
        exit 1
    fi
    port=${PORT:-53535}
    dir=$(mktemp -d)
    pid=
    trap '[ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }; rm -rf "$dir"' EXIT
    "$bin" --write-hosts "$dir/hosts" "$@"
    "$dnsmasq" --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --listen-address=127.0.0.1 --port="$port" --local=/in-addr.arpa/ --local=/ip6.arpa/ \
        --pid-file --user=root --addn-hosts="$dir/hosts" --log-queries --log-facility="$dir/queries.log" &
    pid=$!
    for _ in $(seq 100); do
        grep -q "read $dir/hosts" "$dir/queries.log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { echo "dnsmasq did not start (port $port taken? set PORT)" >&2; exit 1; }
        sleep 0.1
    done
    "$bin" --server "127.0.0.1:$port" --dnsmasq-log "$dir/queries.log" "$@"
    ;;
*)
    echo "usage: $0 dnsmasq|black-hole [flags of the reverse_dns_load example]" >&2
    exit 2
    ;;
esac
