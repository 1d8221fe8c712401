#!/usr/bin/env bash
# Verification: dkim-sidecar against OpenDKIM (Mode v), side by side, in one
# run on this machine. The companion of benches/compare.sh (signing).
#
# Both milters get the same pre-signed messages from `milter-bench
# --message`, which plays Postfix. The keys are served by a private Knot DNS
# server on a loopback port. dkim-sidecar always asks it (Nameservers), its
# cache warm after the warm-up. OpenDKIM asks it too when it verifies on one
# connection (the cold-cache run), through libunbound with a
# ResolverConfiguration (libunbound refuses 127.0.0.1 by default); with
# many connections at once it crashes re-reading that file ("fatal flex
# scanner internal error"), so for the concurrent runs it reads the same
# keys from TestPublicKeys instead: a small file, read at each lookup,
# which is cheaper than a DNS round trip. Each throughput and latency measurement alternates
# between the two milters ROUNDS times and reports the median.
#
#   1. RSA-2048, 4 KB, 128 connections, warm cache: messages/s.
#   2. One connection, warm cache: latency p50 / p99.
#   3. A 100 MB message with two signatures (RSA, Ed25519): peak RSS growth.
#   4. Cold cache: three signatures under three names with TTL 0, behind a
#      DNS proxy that answers 50 ms late; one connection: latency p50. Three
#      lookups one after another take >= 150 ms, at once about 50 ms.
#
# Before measuring, each message is checked to verify (dkim=pass) with
# both milters.
#
# Usage: benches/verify-compare.sh [REPORT.md]
#   ROUNDS=3          runs per measurement and milter
#   SECONDS_PER_RUN=8 length of each throughput run
#
# Needs: cargo, python3, openssl, opendkim, knot (knotd), as root (port
# binding for knotd is not privileged; opendkim runs as root here).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
REPORT=${1:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/dkim-sidecar
BENCH=$TARGET_DIR/release/milter-bench
OPENDKIM=$(command -v opendkim || echo /usr/sbin/opendkim)
KNOTD=$(command -v knotd || echo /usr/sbin/knotd)

say() { printf '%s\n' "$*" >&2; }

say "building (release)"
cargo build --release --bin dkim-sidecar --bin milter-bench >&2

DIR=$(mktemp -d /tmp/dkim-verify-compare.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$DIR/keys" "$DIR/results" "$DIR/knot"
cp "$ROOT/keys-example/default.private" "$ROOT/keys-example/ed25519.private" "$DIR/keys/"
chmod 600 "$DIR/keys/"*.private

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_listening() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    say "nothing listens on port $1"
    return 1
}
record() {
    python3 -c 'import sys; t = open(sys.argv[1]).read(); print("".join(t.split("\"")[1::2]))' "$1"
}
zone_txt() {
    python3 -c 'import sys; s = sys.argv[1]; print(" ".join("\"%s\"" % s[i:i + 250] for i in range(0, len(s), 250)))' "$1"
}

# --- DNS: Knot on a loopback port, and a proxy answering 50 ms late -------
RSA=$(record "$ROOT/keys-example/default.txt")
ED=$(record "$ROOT/keys-example/ed25519.txt")
DNS_PORT=$(free_port)
cat >"$DIR/knot/example.com.zone" <<EOF
\$ORIGIN example.com.
\$TTL 3600
@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300
@ IN NS ns.example.com.
ns IN A 127.0.0.1
default._domainkey IN TXT $(zone_txt "$RSA")
ed25519._domainkey IN TXT $(zone_txt "$ED")
cold1._domainkey 0 IN TXT $(zone_txt "$RSA")
cold2._domainkey 0 IN TXT $(zone_txt "$RSA")
cold3._domainkey 0 IN TXT $(zone_txt "$RSA")
EOF
cat >"$DIR/knot/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$DNS_PORT
    rundir: "$DIR/knot"
    pidfile: "$DIR/knot/knot.pid"
database:
    storage: "$DIR/knot/db"
control:
    listen: "$DIR/knot/knot.sock"
template:
  - id: default
    storage: "$DIR/knot"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: example.com.
    file: "example.com.zone"
EOF
"$KNOTD" -c "$DIR/knot/knot.conf" >"$DIR/knot/knot.log" 2>&1 &
PIDS+=($!)
wait_listening "$DNS_PORT"

SLOW_PORT=$(free_port)
python3 - "$SLOW_PORT" "$DNS_PORT" 0.05 >"$DIR/slow-dns.log" 2>&1 <<'EOF' &
import asyncio, sys
listen, upstream, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

class Upstream(asyncio.DatagramProtocol):
    def __init__(self, query, reply):
        self.query, self.reply = query, reply
    def connection_made(self, transport):
        self.transport = transport
        transport.sendto(self.query)
    def datagram_received(self, data, addr):
        self.reply(data)
        self.transport.close()

class Slow(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, client):
        loop = asyncio.get_running_loop()
        def forward():
            reply = lambda answer: self.transport.sendto(answer, client)
            loop.create_task(loop.create_datagram_endpoint(
                lambda: Upstream(data, reply), remote_addr=("127.0.0.1", upstream)))
        loop.call_later(delay, forward)

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Slow, local_addr=("127.0.0.1", listen))
    await asyncio.Event().wait()

asyncio.run(main())
EOF
PIDS+=($!)
sleep 0.5

# --- the messages ---------------------------------------------------------
sign() { # sign SELECTOR KEYFILE < in > out
    cat >"$DIR/sign-$1.conf" <<EOF
Mode s
Socket inet:8891@localhost
Domain example.com
Selector $1
KeyFile $2
Canonicalization relaxed/simple
OversignHeaders From
RequireSafeKeys no
EOF
    "$BIN" sign -x "$DIR/sign-$1.conf" 2>/dev/null
}
body() { # body BYTES: 77-character lines, the last one ended too
    python3 -c 'import sys; n = int(sys.argv[1]); line = ("x" * 76 + "\n"); sys.stdout.write((line * (n // len(line) + 1))[:n - 1] + "\n")' "$1"
}
headers() {
    printf 'From: Sender <sender@example.com>\nTo: <recipient@example.org>\nSubject: %s\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <%s@example.com>\n\n' "$1" "$1"
}
{ headers small; body 4096; } | sign default "$DIR/keys/default.private" >"$DIR/small.eml"
{ headers big; body 104857600; } | sign default "$DIR/keys/default.private" \
    | sign ed25519 "$DIR/keys/ed25519.private" >"$DIR/big.eml"
{ headers cold; body 4096; } | sign cold1 "$DIR/keys/default.private" \
    | sign cold2 "$DIR/keys/default.private" | sign cold3 "$DIR/keys/default.private" >"$DIR/cold.eml"

# --- the milters ----------------------------------------------------------
printf 'server:\n    do-not-query-localhost: no\n' >"$DIR/unbound.conf"
{
    printf 'default._domainkey.example.com %s\ned25519._domainkey.example.com %s\n' "$RSA" "$ED"
    for n in 1 2 3; do printf 'cold%s._domainkey.example.com %s\n' "$n" "$RSA"; done
} >"$DIR/keys.txt"
# start_milter NAME NAMESERVER_PORT|file: sets PORT and PID.
start_milter() {
    local name=$1 ns=$2
    PORT=$(free_port)
    local conf=$DIR/$name-$ns.conf
    printf 'Syslog no\nMode v\nAuthservID mx.bench.example\nSocket inet:%s@127.0.0.1\n' "$PORT" >"$conf"
    if [ "$ns" = file ]; then
        echo "TestPublicKeys $DIR/keys.txt" >>"$conf"
    else
        printf 'Nameservers 127.0.0.1@%s\nResolverConfiguration %s\n' "$ns" "$DIR/unbound.conf" >>"$conf"
    fi
    if [ "$name" = opendkim ]; then
        "$OPENDKIM" -f -x "$conf" >>"$DIR/opendkim.log" 2>&1 &
    else
        "$BIN" run -x "$conf" --allow-root >>"$DIR/ours.log" 2>&1 &
    fi
    PID=$!
    PIDS+=("$PID")
    wait_listening "$PORT"
}
stop_milter() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# bench NAME NS SCENARIO ROUND MESSAGE ARGS...
bench() {
    local name=$1 ns=$2 scenario=$3 round=$4 message=$5
    shift 5
    start_milter "$name" "$ns"
    "$BENCH" --socket "inet:$PORT@127.0.0.1" --message "$message" \
        --client-ip 192.0.2.1 --client-name '[192.0.2.1]' --verify-every 0 \
        --server-pid "$PID" --json "$@" >"$DIR/results/$scenario.$name.$round.json" || true
    stop_milter "$PID"
}

# Where each milter gets keys in the concurrent runs.
keys_for() { if [ "$1" = opendkim ]; then echo file; else echo "$DNS_PORT"; fi; }

# Each message verifies with both milters before anything is measured.
for name in ours opendkim; do
    start_milter "$name" "$(keys_for "$name")"
    for m in small big cold; do
        "$BENCH" --socket "inet:$PORT@127.0.0.1" --message "$DIR/$m.eml" -n 1 \
            --client-ip 192.0.2.1 --verify-every 0 --json >"$DIR/results/check.$name.$m.json" || true
    done
    stop_milter "$PID"
done
"$BIN" verify -x "$DIR/ours-$DNS_PORT.conf" <"$DIR/small.eml" >"$DIR/results/check.ar" 2>/dev/null \
    || { say "the 4 KB message does not verify:"; cat "$DIR/results/check.ar" >&2; exit 1; }
grep -q "dkim=pass" "$DIR/results/check.ar"
grep -qE "result=pass .*action=accept" "$DIR/ours.log" \
    || { say "no pass in our log"; tail -5 "$DIR/ours.log" >&2; exit 1; }
for m in small cold; do
    "$OPENDKIM" -x "$DIR/opendkim-file.conf" -t "$DIR/$m.eml" -vv 2>&1 | grep -q "dkim=pass" \
        || { say "OpenDKIM does not verify $m.eml"; exit 1; }
done

for round in $(seq "$ROUNDS"); do
    for name in ours opendkim; do
        say "round $round: $name, 128 connections"
        bench "$name" "$(keys_for "$name")" throughput "$round" "$DIR/small.eml" \
            -c 128 -d "$SECONDS_PER_RUN" -w 1000 --threads 1
        say "round $round: $name, one connection"
        bench "$name" "$(keys_for "$name")" latency "$round" "$DIR/small.eml" -c 1 -n 2000 -w 100
        say "round $round: $name, cold cache behind a 50 ms DNS server"
        bench "$name" "$SLOW_PORT" cold "$round" "$DIR/cold.eml" -c 1 -n 20
    done
done
for name in ours opendkim; do
    say "$name: 100 MB message with two signatures"
    bench "$name" "$(keys_for "$name")" big 1 "$DIR/big.eml" -c 1 -n 2 --timeout 300
done

python3 - "$DIR/results" "$ROUNDS" <<'EOF' | tee "${REPORT:-/dev/null}"
import json, statistics, sys
results, rounds = sys.argv[1], int(sys.argv[2])
def load(scenario, name, round):
    with open(f"{results}/{scenario}.{name}.{round}.json") as f:
        return json.load(f)
def median(scenario, name, get):
    return statistics.median(get(load(scenario, name, r)) for r in range(1, rounds + 1))
rate = lambda r: r["messages_per_s"]
p50 = lambda r: r["latency"]["p50_ms"]
p99 = lambda r: r["latency"]["p99_ms"]
for scenario in ("throughput", "latency", "cold"):
    for name in ("ours", "opendkim"):
        for r in range(1, rounds + 1):
            rep = load(scenario, name, r)
            if rep["refused"] or rep["errors"]:
                print(f"warning: {scenario} {name} round {r}: {rep['refused']} refused, "
                      f"{rep['errors']} errors: {rep['error_samples'][:1]}", file=sys.stderr)
ours_rate, od_rate = median("throughput", "ours", rate), median("throughput", "opendkim", rate)
grow = lambda r: (r["server"]["rss_peak_kib"] - r["server"]["rss_before_kib"]) / 1024
big_ours, big_od = load("big", "ours", 1), load("big", "opendkim", 1)
print("| measure | dkim-sidecar | OpenDKIM | target | met |")
print("|---|---:|---:|---|---|")
print(f"| verify RSA-2048, 4 KB, 128 connections, warm cache | {ours_rate:,.0f} msg/s | "
      f"{od_rate:,.0f} msg/s | 10x OpenDKIM ({ours_rate / od_rate:.1f}x) | "
      f"{'yes' if ours_rate >= 10 * od_rate else 'no'} |")
lo, lo99 = median("latency", "ours", p50), median("latency", "ours", p99)
lod, lod99 = median("latency", "opendkim", p50), median("latency", "opendkim", p99)
print(f"| verify, 1 connection, latency p50 / p99 | {lo:.2f} / {lo99:.2f} ms | "
      f"{lod:.2f} / {lod99:.2f} ms | p50 < 1 ms | {'yes' if lo < 1 else 'no'} |")
print(f"| verify 100 MB message, two signatures: peak RSS growth | {grow(big_ours):.1f} MiB | "
      f"{grow(big_od):.1f} MiB | < 16 MB | {'yes' if grow(big_ours) * 1.048576 < 16 else 'no'} |")
co, cod = median("cold", "ours", p50), median("cold", "opendkim", p50)
print(f"| cold cache, 3 signatures, DNS answering in 50 ms: latency p50 | {co:.0f} ms | "
      f"{cod:.0f} ms | lookups at once (about 50 ms, not 150) | {'yes' if co < 100 else 'no'} |")
EOF
say "raw results in $DIR/results"
trap - EXIT
cleanup
