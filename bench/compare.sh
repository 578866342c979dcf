#!/usr/bin/env bash
# bench/compare.sh — the Gatehouse gateway beside its peers, under identical
# wrk load on loopback (wrk -t1 -c32 --latency, GET /users/profile with a
# Bearer token, the same fixed-body nginx upstream), in one run:
#
#   upstream-direct     the nginx upstream hit directly (the ceiling)
#   nginx-proxy         nginx as a plain reverse proxy, no checks      } from
#   haproxy-noauth      HAProxy proxying, no checks                    } ../shared/
#   haproxy-jwt-HS256   HAProxy verifying an HS256 JWT                 } bench/
#   haproxy-jwt-RS256   HAProxy verifying an RS256 JWT                 } peers.sh
#   gatehouse-ALG-wN    `gatehouse up` with every check on: JWT (RS256 or EdDSA),
#                       revocation view, rate limit, identity signing, access
#                       log off; N tokio workers (1 = like the single-worker
#                       peers; "default" = one per core)
#   floor-bare-tokio    the floor: a bare tokio proxy, no checks, no header
#                       maps (the gateway crate's `bare_proxy` example, run by
#                       bench/gateway.sh --floor with the first variant): what
#                       proxying alone costs in the gateway's runtime
#
#   bench/compare.sh [--duration SECS] [--rounds N] [--quiet-wait SECS] [--out FILE] [--help]
#
#   --duration SECS    length of each measured run (default 5)
#   --rounds N         repeat the whole sequence (Gatehouse variants, then the
#                      peers) N times, 1..5 (default 1), and average each
#                      target over its runs: on a machine whose speed drifts
#                      within minutes, alternating the blocks keeps the drift
#                      from landing on one side of the comparison
#   --quiet-wait SECS  wait up to SECS before each part for other processes
#                      to leave the CPUs (< 10 % busy; default 300)
#   --out FILE         also write the combined table to FILE
#
# It prints, for each target: req/s, p50/p99, CPU µs per request of the
# measured process (the proxy's own processes: what it costs), and the ratios
# to nginx-proxy (req/s, and CPU: < 1.00 means cheaper than nginx) and to
# HAProxy verifying RS256. Figures only: nothing here passes or fails on
# speed. CSRF is checked only on state-changing requests, so this GET load
# does not exercise it (its cost is one HMAC and a header compare).
set -Eeuo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS_SH=/work/shared/bench/peers.sh
DURATION=5 ROUNDS=1 QUIET_WAIT=300 OUT=""
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=${2:?--duration needs seconds}; shift ;;
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
    --quiet-wait) QUIET_WAIT=${2:?--quiet-wait needs seconds}; shift ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
die() { printf 'compare.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 1 ] && [ "$DURATION" -le 60 ] || die "--duration must be 1..60"
[[ "$ROUNDS" =~ ^[1-5]$ ]] || die "--rounds must be 1..5"
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] && [ "$QUIET_WAIT" -le 1800 ] || die "--quiet-wait must be 0..1800"
[ -x "$PEERS_SH" ] || die "$PEERS_SH not found"

busy_pct() { # share of all CPUs busy over 2 s (nothing of ours runs between parts)
  local a b
  read -ra a </proc/stat; sleep 2; read -ra b </proc/stat
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  local idle=$(( b[4] - a[4] + b[5] - a[5] ))
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
wait_quiet() {
  local deadline=$(( SECONDS + QUIET_WAIT )) b
  b=$(busy_pct)
  while [ "$b" -ge 10 ] && [ "$SECONDS" -lt "$deadline" ]; do
    say "the CPUs are ${b}% busy with other work; waiting for quiet"
    sleep 5; b=$(busy_pct)
  done
  [ "$b" -lt 10 ] || say "still ${b}% busy after ${QUIET_WAIT}s: figures below will be depressed"
}

WORK=$(mktemp -d /tmp/gatehouse-compare.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/gatehouse.tsv
PEER_RESULTS=$WORK/peers.tsv
: >"$RESULTS"
: >"$PEER_RESULTS"

for round in $(seq 1 "$ROUNDS"); do
  [ "$ROUNDS" = 1 ] || say "round $round of $ROUNDS"
  for variant in "RS256 1" "EdDSA 1" "RS256 default" "EdDSA default"; do
    read -r alg workers <<<"$variant"
    args=(--alg "$alg" --duration "$DURATION" --results "$RESULTS")
    [ "$workers" = default ] || args+=(--workers "$workers")
    [ "$variant" != "RS256 1" ] || args+=(--floor)
    wait_quiet
    say "bench/gateway.sh ${args[*]}"
    before=$(wc -l <"$RESULTS")
    "$ROOT/bench/gateway.sh" "${args[@]}" >"$WORK/gateway-$alg-$workers.log" 2>&1 \
      || { cat "$WORK/gateway-$alg-$workers.log" >&2; die "bench/gateway.sh ${args[*]} failed"; }
    tail -n +$((before + 1)) "$RESULTS"
  done

  wait_quiet
  say "$PEERS_SH (DURATION=${DURATION}s)"
  DURATION="${DURATION}s" "$PEERS_SH" --wait-quiet "$QUIET_WAIT" >"$WORK/peers.log" 2>&1 \
    || { cat "$WORK/peers.log" >&2; die "peers.sh failed"; }
  # peers.sh rewrites its results on every run: keep each round's.
  cat /tmp/peers-bench/results.tsv >>"$PEER_RESULTS"
done

python3 - "$RESULTS" "$PEER_RESULTS" "$(getconf CLK_TCK)" >"$WORK/report.txt" <<'PY'
import statistics, sys
ours_path, peers_path, clk = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = {}
for line in open(peers_path):
    label, _port, _rnd, rest = line.rstrip("\n").split("\t")
    kv = dict(x.split("=", 1) for x in rest.split() if "=" in x)
    n, dur = int(kv["requests"]), int(kv["duration_us"]) / 1e6
    errs = sum(int(kv[k]) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    tot = int(kv["host"].split(",")[0])
    rows.setdefault(label, []).append(dict(
        rps=n / dur, p50=int(kv["p50_us"]), p99=int(kv["p99_us"]), errs=errs,
        cpu=int(kv["gw_ticks"]) * 1e6 / clk / n, other=100.0 * int(kv["foreign_ticks"]) / tot if tot else 0.0))
for line in open(ours_path):
    label, rps, p50, p99, errs, cpu, other = line.split("\t")
    rows.setdefault(label, []).append(dict(
        rps=float(rps), p50=int(p50), p99=int(p99), errs=int(errs), cpu=float(cpu), other=float(other)))
summ = {k: {f: statistics.mean(r[f] for r in v) for f in ("rps", "p50", "p99", "cpu", "other")}
        | {"errs": sum(r["errs"] for r in v), "runs": len(v)} for k, v in rows.items()}
ngx, hap = summ.get("nginx-proxy"), summ.get("haproxy-jwt-RS256")
fmt = "  {:<24} {:>4} {:>9} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>12} {:>8}"
print(fmt.format("target", "runs", "req/s", "p50 ms", "p99 ms", "errors", "CPU us/req",
                 "rps/nginx", "CPU/nginx", "CPU/hap-RS256", "other %"))
for label, s in summ.items():
    print(fmt.format(label, s["runs"], "%.0f" % s["rps"], "%.3f" % (s["p50"] / 1000), "%.3f" % (s["p99"] / 1000),
                     s["errs"], "%.1f" % s["cpu"],
                     "%.2f" % (s["rps"] / ngx["rps"]) if ngx else "-",
                     "%.2f" % (s["cpu"] / ngx["cpu"]) if ngx else "-",
                     "%.2f" % (s["cpu"] / hap["cpu"]) if hap else "-", "%.1f" % s["other"]))
print()
print("  CPU us/req: CPU time of the measured process(es) / requests (upstream-direct: the upstream nginx).")
print("  CPU/nginx < 1.00: the target spends less CPU per request than nginx proxying with no checks;")
print("  CPU/hap-RS256 <= 0.33: at least 3x as efficient as HAProxy verifying RS256.")
print("  other %: CPU of unrelated processes during the runs (above ~5 %, figures are depressed).")
if any(s["errs"] for s in summ.values()):
    print("\n  WARNING: some runs had socket errors or non-2xx responses.")
PY
echo
echo "Gatehouse vs peers — bench/compare.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, wrk -t1 -c32 -d${DURATION}s, $ROUNDS round(s)"
cat "$WORK/report.txt"
if [ -n "$OUT" ]; then
  { echo "Gatehouse vs peers — bench/compare.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"; cat "$WORK/report.txt"; } >"$OUT"
  say "written to $OUT"
fi
