#!/usr/bin/env bash
# dkim-sidecar against OpenDKIM, side by side, in one run on this machine.
#
# Both milters sign with the same key through the same KeyTable, SigningTable
# (refile:) and InternalHosts, and get the same load from
# `milter-bench` (crates/milter-bench), which behaves like Postfix and verifies a sample of
# the signatures it gets back. Each measurement alternates between the two
# milters (ours, OpenDKIM, ours, ...) ROUNDS times and reports the median.
# The physical limit is measured in the same run: processors x
# `openssl speed rsa2048` signatures per second on one processor. So is the
# yardstick for CPU per signed message: before each throughput round,
# `milter-bench --sign-cost` signs with the same key on every processor at
# once and reports the CPU time of one signature; the report gives each
# milter's CPU per message (from /proc) next to it, and the ratio.
#
# Usage: benches/compare.sh [REPORT.md]
#        benches/compare.sh --report RESULTS_DIR [REPORT.md]  (table only, from
#        an earlier run's raw results)
#   ROUNDS=3          runs per measurement and milter
#   SECONDS_PER_RUN=8 length of each throughput and latency run
#   CRITERION=1       also run the criterion benches (body hash, tables); 0 skips
#   POSTFIX=1         also run the Postfix end-to-end bench (benches/postfix.rs:
#                     smtp-source -> Postfix -> smtp-sink with no milter, OpenDKIM
#                     and ours, ROUNDS rounds; needs root); 0 skips. Its own
#                     knobs (PF_MESSAGES, PF_SESSIONS, PF_LATENCY, ...) pass through
#   OURS_CMD=...      how to start our milter; placeholders {socket} {conf}
#                     {dir} {keytable} {signingtable}. The default runs the
#                     daemon on the very opendkim.conf OpenDKIM gets:
#                     dkim-sidecar run -x {conf} --allow-root
#
# Needs: cargo, python3, openssl, and opendkim (installed with apt-get when
# missing). Run as root or as a user who may install packages.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
CRITERION=${CRITERION:-1}
POSTFIX=${POSTFIX:-1}
REPORT_ONLY=
if [ "${1:-}" = --report ]; then
    REPORT_ONLY=$(cd "$2/.." && pwd)
    shift 2
fi
REPORT=${1:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/dkim-sidecar
BENCH=$TARGET_DIR/release/milter-bench
OURS_CMD=${OURS_CMD:-"$BIN run -x {conf} --allow-root"}

say() { printf '%s\n' "$*" >&2; }

if [ -n "$REPORT_ONLY" ]; then
    DIR=$REPORT_ONLY
    # shellcheck disable=SC1091
    . "$DIR/params.sh"
else
    if ! command -v opendkim >/dev/null; then
        say "installing opendkim from the distribution's packages"
        apt-get install -y opendkim >/dev/null
    fi
    OPENDKIM=$(command -v opendkim)

    say "building (release)"
    cargo build --release --bin dkim-sidecar --bin milter-bench >&2

    DIR=$(mktemp -d /tmp/dkim-compare.XXXXXX)
    PIDS=()
    cleanup() {
        for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
        wait 2>/dev/null || true
    }
    trap cleanup EXIT
    mkdir -p "$DIR/keys" "$DIR/results"

    # The same key files, tables and trusted hosts for both milters.
    cp "$ROOT/keys-example/default.private" "$ROOT/keys-example/ed25519.private" "$DIR/keys/"
    chmod 600 "$DIR/keys/"*.private
    cat >"$DIR/KeyTable" <<EOF
rsa._domainkey.example.com example.com:default:$DIR/keys/default.private
ed._domainkey.example.com example.com:ed25519:$DIR/keys/ed25519.private
EOF
    echo "*@example.com rsa._domainkey.example.com" >"$DIR/SigningTable.rsa"
    echo "*@example.com ed._domainkey.example.com" >"$DIR/SigningTable.ed"
    printf '127.0.0.1\n::1\n' >"$DIR/TrustedHosts"

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

    # start_milter NAME KEY(rsa|ed): sets PORT and PID.
    start_milter() {
        local name=$1 key=$2
        PORT=$(free_port)
        local conf=$DIR/$name-$key.conf
        cat >"$conf" <<EOF
Syslog no
Mode s
Canonicalization relaxed/simple
OversignHeaders From
KeyTable file:$DIR/KeyTable
SigningTable refile:$DIR/SigningTable.$key
InternalHosts file:$DIR/TrustedHosts
Socket inet:$PORT@127.0.0.1
RequireSafeKeys no
EOF
        if [ "$key" = ed ]; then echo "SignatureAlgorithm ed25519-sha256" >>"$conf"; fi
        if [ "$name" = opendkim ]; then
            "$OPENDKIM" -f -x "$conf" &
        else
            local cmd=${OURS_CMD//\{socket\}/inet:$PORT@127.0.0.1}
            cmd=${cmd//\{conf\}/$conf}
            cmd=${cmd//\{dir\}/$DIR}
            cmd=${cmd//\{keytable\}/$DIR/KeyTable}
            cmd=${cmd//\{signingtable\}/$DIR/SigningTable.$key}
            # Its one log line per message goes to a file, as a journal would
            # take it.
            # shellcheck disable=SC2086
            $cmd >>"$DIR/ours-$key.log" 2>&1 &
        fi
        PID=$!
        PIDS+=("$PID")
        wait_listening "$PORT"
    }

    stop_milter() {
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    }

    # bench NAME KEY SCENARIO ROUND ARGS...: one bench run against a fresh
    # milter, its JSON report kept as results/SCENARIO.NAME.ROUND.json.
    bench() {
        local name=$1 key=$2 scenario=$3 round=$4
        shift 4
        start_milter "$name" "$key"
        local record=$ROOT/keys-example/default.txt
        if [ "$key" = ed ]; then record=$ROOT/keys-example/ed25519.txt; fi
        "$BENCH" --socket "inet:$PORT@127.0.0.1" --key-txt "$record" \
            --server-pid "$PID" --json "$@" >"$DIR/results/$scenario.$name.$round.json" || true
        stop_milter "$PID"
        say "  $scenario $name round $round done"
    }

    # sign_cost KEY SCENARIO ROUND: the CPU time of one signature with the
    # milters' key, every processor signing at once, as results/SCENARIO.sign.ROUND.json.
    sign_cost() {
        local key=$1 scenario=$2 round=$3 file=default.private
        if [ "$key" = ed ]; then file=ed25519.private; fi
        "$BENCH" --sign-cost "$DIR/keys/$file" --threads "$(nproc)" -d 3 --json \
            >"$DIR/results/$scenario.sign.$round.json" || true
    }

    # scenario NAME KEY ARGS...: ROUNDS alternating runs for both milters;
    # before each round of a throughput scenario, the cost of one signature.
    scenario() {
        local scenario=$1 key=$2
        shift 2
        say "$scenario"
        for round in $(seq "$ROUNDS"); do
            case $scenario in *-c128) sign_cost "$key" "$scenario" "$round" ;; esac
            bench ours "$key" "$scenario" "$round" "$@"
            bench opendkim "$key" "$scenario" "$round" "$@"
        done
    }

    openssl_rsa2048() {
        openssl speed -seconds 5 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ { print $(NF-1) }'
    }

    say "openssl speed rsa2048 (before)"
    SPEED_BEFORE=$(openssl_rsa2048)
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

    scenario rsa-c128 rsa -c 128 -d "$SECONDS_PER_RUN" -w 500
    scenario ed-c128 ed -c 128 -d "$SECONDS_PER_RUN" -w 500
    scenario rsa-c1 rsa -c 1 -d "$SECONDS_PER_RUN" -w 20
    scenario ed-c1 ed -c 1 -d "$SECONDS_PER_RUN" -w 20
    scenario big rsa -c 1 -n 3 -b 100000000 --verify-every 1 --timeout 120
    scenario idle rsa -c 1000 -n 0 --hold 3

    say "openssl speed rsa2048 (after)"
    SPEED_AFTER=$(openssl_rsa2048)
    LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

    if [ "$CRITERION" = 1 ]; then
        say "criterion: body hash and signing"
        cargo bench --bench dkim -- --warm-up-time 1 --measurement-time 3 body_hash >&2
        say "criterion: one message's whole path through the milter, and a bare signature"
        cargo bench --bench dkim -- --warm-up-time 1 --measurement-time 3 per_message_path >&2
        say "criterion: codec"
        cargo bench -p milter --bench codec -- --warm-up-time 1 --measurement-time 3 >&2
        say "criterion: SigningTable of 100,000 refile entries"
        cargo bench --bench tables -- --warm-up-time 1 --measurement-time 3 >&2
    fi

    if [ "$POSTFIX" = 1 ]; then
        say "through Postfix: no milter, OpenDKIM, ours (benches/postfix.rs)"
        ROUNDS=$ROUNDS PF_JSON=$DIR/results/postfix.json \
            cargo bench --bench postfix >"$DIR/postfix.md"
    fi

    cat >"$DIR/params.sh" <<EOF
ROUNDS=$ROUNDS
SECONDS_PER_RUN=$SECONDS_PER_RUN
CRITERION=$CRITERION
SPEED_BEFORE='$SPEED_BEFORE'
SPEED_AFTER='$SPEED_AFTER'
LOAD_BEFORE='$LOAD_BEFORE'
LOAD_AFTER='$LOAD_AFTER'
EOF

    MACHINE="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) processors, $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr), $(. /etc/os-release && echo "$PRETTY_NAME")"
    OPENDKIM_VERSION=$("$OPENDKIM" -V 2>&1 | head -1 | sed 's/^opendkim: //')
    printf "MACHINE='%s'\nOPENDKIM_VERSION='%s'\n" "$MACHINE" "$OPENDKIM_VERSION" >>"$DIR/params.sh"
fi

python3 - "$DIR/results" "$TARGET_DIR/criterion" "$ROUNDS" "$SPEED_BEFORE" "$SPEED_AFTER" \
    "$(nproc)" "$MACHINE" "$OPENDKIM_VERSION" "$LOAD_BEFORE" "$LOAD_AFTER" "$SECONDS_PER_RUN" \
    "$CRITERION" >"$DIR/report.md" <<'PY'
import json, os, statistics, sys

(results, criterion, rounds, speed_before, speed_after, cpus, machine, opendkim,
 load_before, load_after, seconds, with_criterion) = sys.argv[1:]
cpus = int(cpus)
speed = max(float(speed_before or 0), float(speed_after or 0))
limit = cpus * speed

def runs(scenario, name):
    out = []
    for f in sorted(os.listdir(results)):
        if f.startswith(f"{scenario}.{name}."):
            try:
                out.append(json.load(open(os.path.join(results, f))))
            except ValueError:
                pass
    return out

def med(scenario, name, get):
    values = [get(r) for r in runs(scenario, name)]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def problems(scenario, name):
    rs = runs(scenario, name)
    errors = sum(r["errors"] for r in rs)
    refused = sum(r["refused"] for r in rs)
    checked = sum(r["verification"]["checked"] for r in rs)
    passed = sum(r["verification"]["passed"] for r in rs)
    return errors, refused, checked, passed

def fmt(v, unit="", digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}{unit}"

def ratio(a, b):
    return (f"{a / b:.2f}x" if a / b < 2 else f"{a / b:.1f}x") if a and b else "n/a"

rows = []
def row(what, ours, theirs, rat, target, met):
    rows.append((what, ours, theirs, rat, target, "yes" if met else ("no" if met is not None else "")))

def rate(s, n): return med(s, n, lambda r: r["messages_per_s"])
def lat(s, n, p): return med(s, n, lambda r: r["latency"][p])
def cpu(s, n): return med(s, n, lambda r: (r.get("server") or {}).get("cpu_us_per_message"))

o, t = rate("rsa-c128", "ours"), rate("rsa-c128", "opendkim")
row("RSA-2048, 4 KB, 128 connections: messages/s", fmt(o), fmt(t), ratio(o, t),
    ">= 6x OpenDKIM", (o >= 6 * t) if o and t else None)
row("  share of the physical limit", f"{o / limit:.0%}" if o and limit else "n/a", f"{t / limit:.0%}" if t and limit else "n/a", "",
    f">= 50% (of {cpus} x openssl = {limit:,.0f}/s)", (o >= limit / 2) if o and limit else None)
row("  latency p50 / p99", f"{fmt(lat('rsa-c128','ours','p50_ms'),' ms',1)} / {fmt(lat('rsa-c128','ours','p99_ms'),' ms',1)}",
    f"{fmt(lat('rsa-c128','opendkim','p50_ms'),' ms',1)} / {fmt(lat('rsa-c128','opendkim','p99_ms'),' ms',1)}", "", "", None)
def sign(s): return med(s, "sign", lambda r: r["cpu_us_per_signature"])
def cpu_rows(s):
    co, ct, one = cpu(s, "ours"), cpu(s, "opendkim"), sign(s)
    row("  milter CPU per message", fmt(co, " us"), fmt(ct, " us"),
        ratio(ct, co) + " less" if co and ct else "", "", None)
    row("  one signature with the same key (CPU, every processor signing)", fmt(one, " us"), fmt(one, " us"), "", "", None)
    row("  CPU per message / one signature", ratio(co, one), ratio(ct, one), "", "<= 1.1x",
        (co <= 1.1 * one) if co and one else None)
cpu_rows("rsa-c128")
o, t = rate("ed-c128", "ours"), rate("ed-c128", "opendkim")
row("Ed25519, 4 KB, 128 connections: messages/s", fmt(o), fmt(t), ratio(o, t), ">= 10,000", o >= 10000 if o else None)
row("  latency p50 / p99", f"{fmt(lat('ed-c128','ours','p50_ms'),' ms',1)} / {fmt(lat('ed-c128','ours','p99_ms'),' ms',1)}",
    f"{fmt(lat('ed-c128','opendkim','p50_ms'),' ms',1)} / {fmt(lat('ed-c128','opendkim','p99_ms'),' ms',1)}", "", "", None)
cpu_rows("ed-c128")
for key, label in (("rsa", "RSA-2048"), ("ed", "Ed25519")):
    s = f"{key}-c1"
    p50o, p99o = lat(s, "ours", "p50_ms"), lat(s, "ours", "p99_ms")
    p50t, p99t = lat(s, "opendkim", "p50_ms"), lat(s, "opendkim", "p99_ms")
    row(f"1 connection, {label}: latency p50 / p99", f"{fmt(p50o,' ms',2)} / {fmt(p99o,' ms',2)}",
        f"{fmt(p50t,' ms',1)} / {fmt(p99t,' ms',1)}", ratio(p50t, p50o) + " faster" if p50o else "",
        "p50 < 1 ms, p99 < 3 ms", (p50o < 1 and p99o < 3) if p50o is not None else None)
    row(f"  messages/s", fmt(rate(s, "ours")), fmt(rate(s, "opendkim")), ratio(rate(s, "ours"), rate(s, "opendkim")), "", None)

def growth(s, n):
    return med(s, n, lambda r: (r["server"]["rss_peak_kib"] - r["server"]["rss_before_kib"]) / 1024 if r.get("server") else None)
def held(s, n):
    return med(s, n, lambda r: (r["server"]["rss_held_kib"] - r["server"]["rss_before_kib"]) / 1024 if r.get("server") and r["server"].get("rss_held_kib") else None)
def held_total(s, n):
    return med(s, n, lambda r: r["server"]["rss_held_kib"] / 1024 if r.get("server") and r["server"].get("rss_held_kib") else None)

go, gt = growth("big", "ours"), growth("big", "opendkim")
row("100 MB message: peak RSS growth", fmt(go, " MiB", 1), fmt(gt, " MiB", 1), "", "< 16 MB", go < 16 if go is not None else None)
bo = med("big", "ours", lambda r: 100 / (r["latency"]["p50_ms"] / 1000) if r["messages"] else None)
bt = med("big", "opendkim", lambda r: 100 / (r["latency"]["p50_ms"] / 1000) if r["messages"] else None)
row("  whole message through the milter", fmt(bo, " MB/s"), fmt(bt, " MB/s"), ratio(bo, bt), "", None)

def criterion_ns(group, bench, parameter=None):
    # Criterion writes "a/b" function names as "a_b" directories.
    parts = [group, bench.replace("/", "_")] + ([str(parameter)] if parameter else [])
    path = os.path.join(criterion, *parts, "new", "estimates.json")
    try:
        return json.load(open(path))["median"]["point_estimate"]
    except (OSError, ValueError, KeyError):
        return None

if with_criterion == "1":
    for canon, kind, label in (("simple", "text", "plain text"), ("relaxed", "text", "plain text"),
                               ("relaxed", "spaces", "white-space runs on every line")):
        ns = criterion_ns("body_hash", f"{canon}/{kind}", 1048576)
        mbs = 1048576 / (ns / 1e9) / 1e6 if ns else None
        row(f"Body hash, {canon} canonicalization, 1 MiB of {label}", fmt(mbs, " MB/s"), "", "", ">= 300 MB/s",
            mbs >= 300 if mbs else None)

if with_criterion == "1":
    ns = criterion_ns("codec", "decode_one_4k_message")
    if ns:
        row("Codec: decode one 4 KB message's frames", fmt(ns / 1000, " us", 2), "", "", "", None)
    for key, label in (("rsa2048", "RSA-2048"), ("ed25519", "Ed25519")):
        path = criterion_ns("per_message_path", f"{key}/session")
        bare = criterion_ns("per_message_path", f"{key}/bare_signature")
        if path and bare:
            row(f"One 4 KB message, frames in to final reply (in-process), {label}; bare signature",
                f"{path / 1000:,.0f} us; {bare / 1000:,.0f} us", "", f"{path / bare:.2f}x the signature", "", None)

ho, ht = held("idle", "ours"), held("idle", "opendkim")
row("1,000 idle connections: RSS added", fmt(ho, " MiB", 1), fmt(ht, " MiB", 1), "",
    "< 50 MB", ho < 50 if ho is not None else None)
row("  milter RSS with them open", fmt(held_total("idle", "ours"), " MiB", 1), fmt(held_total("idle", "opendkim"), " MiB", 1), "", "", None)

if with_criterion == "1":
    load = criterion_ns("signing_table_100k_load", "open_refile_from_disk")
    lookups = [criterion_ns("signing_table_100k_lookup", f"find_first/{c}") for c in
               ("star_at_domain", "exact_user_late_in_file", "subdomain_wildcard", "prefix_wildcard", "only_catch_all")]
    lookups = [l for l in lookups if l is not None]
    if load:
        row("SigningTable, 100,000 refile entries: load", fmt(load / 1e6, " ms"), "", "", "< 1 s", load < 1e9)
    if lookups:
        row("  lookup (first match), fastest / slowest case", f"{min(lookups) / 1000:.2f} / {max(lookups) / 1000:.2f} us",
            "", "", "< 20 us", max(lookups) < 20000)

print(f"| measure | dkim-sidecar | {opendkim} | ratio | target | met |")
print("|---|---:|---:|---:|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print(f"Machine: {machine}. Load average before/after: {load_before} / {load_after}.")
print(f"openssl speed rsa2048: {speed_before} / {speed_after} sign/s on one processor (before/after); "
      f"physical limit {cpus} x {speed:,.0f} = {limit:,.0f} messages/s.")
print(f"Medians of {rounds} runs per milter, alternating; throughput and latency runs last {seconds} s each "
      f"after a warm-up; protocol 6, 4,096-byte bodies unless said otherwise.")
lines = []
for s in ("rsa-c128", "ed-c128", "rsa-c1", "ed-c1", "big", "idle"):
    for n in ("ours", "opendkim"):
        e, ref, c, p = problems(s, n)
        if e or ref or c != p:
            lines.append(f"{s} {n}: {e} errors, {ref} refused, {p} of {c} verified signatures passed")
        else:
            lines.append(f"{s} {n}: {p} of {c} sampled signatures verified")
print("Checks: " + "; ".join(lines) + ".")
PY

if [ -s "$DIR/postfix.md" ]; then
    {
        echo
        echo "Through Postfix (smtp-source -> Postfix -> smtp-sink, benches/postfix.rs):"
        echo
        cat "$DIR/postfix.md"
    } >>"$DIR/report.md"
fi

cat "$DIR/report.md"
if [ -n "$REPORT" ]; then cp "$DIR/report.md" "$REPORT"; fi
trap - EXIT
say "raw results: $DIR/results"
