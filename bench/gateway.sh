#!/usr/bin/env bash
# bench/gateway.sh — the release gateway (`gatehouse up`) under wrk, next to
# its upstream hit directly, measured the way /work/shared/bench/peers.sh
# measures nginx and HAProxy (wrk -t1 -c32 --latency, CPU µs per request from
# /proc/<pid>/stat).
#
#   bench/gateway.sh [--alg RS256|EdDSA|HS256] [--duration SECS] [--workers N]
#                    [--log LEVEL] [--perf FILE] [--with-peers] [--results FILE]
#                    [--floor] [--no-install] [--help]
#
#   --alg ALG        JWT_ALGORITHM of the stack (default RS256; HS256 gets a
#                    random 48-character JWT_SECRET)
#   --duration SECS  length of each measured wrk run, 1..60 (default 5); each
#                    target also gets a 1 s warm-up first
#   --workers N      TOKIO_WORKER_THREADS for gatehouse (default: tokio's, one
#                    per core); 1 compares like with like with the
#                    single-worker peers
#   --log LEVEL      RUST_LOG of gatehouse (default warn: no access log, like the
#                    peers' `access_log off`; info writes one access line per
#                    request to a file)
#   --perf FILE      after the measured runs, one more gateway run of the same
#                    length under `perf record -g --call-graph dwarf` (so the
#                    figures above are not disturbed by it), written to FILE;
#                    read it with `perf report -i FILE`
#   --with-peers     afterwards (our processes stopped) run
#                    /work/shared/bench/peers.sh --quick (ports 9001-9005)
#                    and print its report path
#   --results FILE   also append one machine-readable line per measured target
#                    to FILE (bench/compare.sh collects them): label, then
#                    req/s, p50/p99 in µs, errors, CPU µs per request of the
#                    measured process, other-process CPU %
#   --floor          also measure the floor: the gateway crate's `bare_proxy`
#                    example (a bare tokio proxy, no checks, no header maps;
#                    built here) on :18085 in front of the same upstream,
#                    under the same load and token, after the gateway
#   --no-install     fail instead of apt-get installing wrk / nginx
#   (BENCH_UPSTREAM=python in the environment forces the python3 upstream)
#
# What it runs, all on 127.0.0.1 only:
#   upstream  :9101   nginx (1 worker), a fixed 106-byte JSON for GET /users/profile
#                     (a small python3 asyncio server if nginx cannot be installed)
#   gatehouse :18080  the gateway, and the auth service on :18081, in one process
#                     (`target/release/gatehouse up`, SQLite and keys in a temp dir),
#                     with the user, payment and notification services of `up` on
#                     :18082-18084 (the gateway's users route goes to the upstream
#                     instead); those services and auth are idle during the GET load
# It registers and logs in one user through the gateway, checks with curl that
# GET /api/v1/users/profile with the token returns 200 and the upstream's body
# (and that the upstream saw X-User-ID), then runs wrk against the gateway and
# against the upstream directly, and prints req/s, p50, p99, the gateway's CPU
# µs per request and the gateway/direct req/s ratio. Figures only.
#
# Safety: refuses non-loopback URLs and ports already in use; every wrk run is
# bounded by -d and timeout(1); every process it starts is stopped by PID on
# exit, error, Ctrl-C or SIGTERM. Works in a fresh mktemp directory, removed
# at the end (kept, and named, if the run fails).
set -Eeuo pipefail
umask 077
export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST=127.0.0.1
PORT_UP=9101 PORT_GW=18080 PORT_AUTH=18081
# `up` also starts the user, payment and notification services: keep them off
# their defaults (8082-8084), which a developer's own `up` may be using.
PORT_USERS=18082 PORT_PAYMENTS=18083 PORT_NOTIFICATIONS=18084 PORT_FLOOR=18085
ALL_PORTS="$PORT_UP $PORT_GW $PORT_AUTH $PORT_USERS $PORT_PAYMENTS $PORT_NOTIFICATIONS $PORT_FLOOR"
PEERS_SH=/work/shared/bench/peers.sh
PEERS_REPORT=/tmp/peers-bench/report.txt
UPSTREAM_PATH=/users/profile
GATEWAY_PATH=/api/v1/users/profile
UPSTREAM_BODY='{"user_id":"usr_7f3a9c2e","name":"Bench User","email":"bench.user@example.com","plan":"pro","active":true}'
PASSWORD="bench passphrase 2026"
THREADS=1 CONNS=32 WARMUP=1

ALG=RS256 DURATION=5 WORKERS="" WITH_PEERS=0 INSTALL=1 LOG_LEVEL=warn PERF_OUT="" RESULTS_OUT="" FLOOR=0
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --alg) ALG=${2:?--alg needs RS256, EdDSA or HS256}; shift ;;
    --alg=*) ALG=${1#*=} ;;
    --duration) DURATION=${2:?--duration needs seconds}; shift ;;
    --duration=*) DURATION=${1#*=} ;;
    --workers) WORKERS=${2:?--workers needs a number}; shift ;;
    --workers=*) WORKERS=${1#*=} ;;
    --log) LOG_LEVEL=${2:?--log needs a level}; shift ;;
    --log=*) LOG_LEVEL=${1#*=} ;;
    --perf) PERF_OUT=${2:?--perf needs a file}; shift ;;
    --perf=*) PERF_OUT=${1#*=} ;;
    --with-peers) WITH_PEERS=1 ;;
    --results) RESULTS_OUT=${2:?--results needs a file}; shift ;;
    --results=*) RESULTS_OUT=${1#*=} ;;
    --floor) FLOOR=1 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gateway.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'gateway.sh: error: %s\n' "$*" >&2; exit 1; }

case "$ALG" in
  RS256|rs256) ALG=RS256 ;;
  EdDSA|eddsa|EDDSA) ALG=EdDSA ;;
  HS256|hs256) ALG=HS256 ;;
  *) die "--alg must be RS256, EdDSA or HS256 (got '$ALG')" ;;
esac
DURATION=${DURATION%s}
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 60 ]; then
  die "--duration must be 1..60 seconds (got '$DURATION')"
fi
[[ "$LOG_LEVEL" =~ ^[A-Za-z0-9_=,:.-]+$ ]] || die "--log must be a RUST_LOG filter like warn or info (got '$LOG_LEVEL')"
if [ -n "$PERF_OUT" ]; then
  command -v perf >/dev/null 2>&1 || die "--perf needs perf (apt-get install linux-perf)"
  PERF_OUT=$(realpath -m "$PERF_OUT")
fi
[ -z "$WORKERS" ] || { [[ "$WORKERS" =~ ^[1-9][0-9]?$ ]] || die "--workers must be 1..99 (got '$WORKERS')"; }
[ -z "$RESULTS_OUT" ] || RESULTS_OUT=$(realpath -m "$RESULTS_OUT")

guard_url() { # the only traffic this script sends is to 127.0.0.1
  case "$1" in
    "http://$HOST:"[0-9]*/*) ;;
    *) die "refusing non-loopback URL: $1" ;;
  esac
}

# ---------------------------------------------------------------- processes
STARTED=()   # PIDs we started, in start order
WORK=""
OK=0

alive() { # PID exists and is not a zombie
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

stop_pid() { # TERM, up to 10 s (gatehouse drains), then KILL; direct children too (nginx workers)
  local pid=$1 kids k i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kids=$(children_of "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  for k in $kids; do
    for i in $(seq 1 20); do alive "$k" || break; sleep 0.1; done
    if alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi
  done
}

stop_all() {
  local i
  for (( i=${#STARTED[@]}-1; i>=0; i-- )); do stop_pid "${STARTED[$i]}"; done
  STARTED=()
}

port_busy() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null || true)" ]; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ ${#STARTED[@]} -gt 0 ]; then
    say "stopping ${#STARTED[@]} started processes by PID: ${STARTED[*]}"
    stop_all
  fi
  local p left=""
  for p in $ALL_PORTS; do if port_busy "$p"; then left="$left $p"; fi; done
  [ -z "$left" ] || [ "$PORTS_CHECKED" = 0 ] || echo "gateway.sh: warning: still listening after cleanup:$left" >&2
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$OK" = 1 ] || [ "$rc" = 130 ] || [ "$rc" = 143 ]; then rm -rf "$WORK"
    else echo "gateway.sh: run failed; logs kept in $WORK" >&2; fi
  fi
  exit "$rc"
}
PORTS_CHECKED=0
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_bg() { # start_bg LOGFILE CMD... ; records the PID in STARTED
  local log=$1; shift
  "$@" >>"$log" 2>&1 </dev/null &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

wait_port() { # wait_port PORT PID LOG
  local i
  for i in $(seq 1 100); do
    port_busy "$1" && return 0
    alive "$2" || { cat "$3" >&2; die "process $2 for port $1 exited"; }
    sleep 0.05
  done
  cat "$3" >&2; die "nothing listening on $HOST:$1 after 5 s"
}

check_ports() {
  local p who
  for p in $ALL_PORTS; do
    if port_busy "$p"; then
      who=$(ss -Htlnp "sport = :$p" 2>/dev/null | grep -o 'users:.*' || true)
      die "port $HOST:$p is already in use${who:+ ($who)}; stop that process first"
    fi
  done
  PORTS_CHECKED=1
}

# ---------------------------------------------------------------- 1. tools
apt_install() {
  [ "$INSTALL" = 1 ] || return 1
  [ "$(id -u)" = 0 ] || return 1
  say "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ "${APT_UPDATED:-0}" = 0 ]; then
    apt-get -qq -o DPkg::Lock::Timeout=300 update || return 1
    APT_UPDATED=1
  fi
  apt-get -y -qq -o DPkg::Lock::Timeout=300 install --no-install-recommends "$@" >/dev/null
}
for tool in curl ss python3 timeout getconf; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
command -v wrk >/dev/null 2>&1 || apt_install wrk || die "wrk is missing and could not be installed (root + apt-get needed; or drop --no-install)"
UPSTREAM_KIND=${BENCH_UPSTREAM:-nginx}
case "$UPSTREAM_KIND" in nginx|python) ;; *) die "BENCH_UPSTREAM must be nginx or python" ;; esac
if [ "$UPSTREAM_KIND" = nginx ] && ! command -v nginx >/dev/null 2>&1; then
  apt_install nginx || true
  if ! command -v nginx >/dev/null 2>&1; then
    UPSTREAM_KIND=python
    echo "gateway.sh: warning: nginx unavailable; using a python3 asyncio upstream (a lower ceiling for 'direct')" >&2
  fi
fi
CLK_TCK=$(getconf CLK_TCK)

check_ports   # fail fast, before the build

# ---------------------------------------------------------------- 2. build
say "cargo build --release --locked -p gatehouse --bin gatehouse"
(cd "$ROOT" && cargo build --release --locked -p gatehouse --bin gatehouse)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/release/gatehouse
[ -x "$BIN" ] || die "no binary at $BIN"
if [ "$FLOOR" = 1 ]; then
  say "cargo build --release --locked -p gateway --example bare_proxy"
  (cd "$ROOT" && cargo build --release --locked -p gateway --example bare_proxy)
  FLOOR_BIN=$TARGET_DIR/release/examples/bare_proxy
  [ -x "$FLOOR_BIN" ] || die "no binary at $FLOOR_BIN"
fi

check_ports   # again: the build may have taken a while
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
mkdir -p "$WORK"/{upstream/tmp,run,wrk}

# ---------------------------------------------------------------- 3. upstream :9101
U=$WORK/upstream
if [ "$UPSTREAM_KIND" = nginx ]; then
  cat >"$U/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $U/nginx.pid;
error_log $U/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path $U/tmp/body;
    proxy_temp_path       $U/tmp/proxy;
    fastcgi_temp_path     $U/tmp/fastcgi;
    uwsgi_temp_path       $U/tmp/uwsgi;
    scgi_temp_path        $U/tmp/scgi;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    server {
        listen $HOST:$PORT_UP;
        location = $UPSTREAM_PATH {
            if (\$request_method != GET) { return 405; }
            default_type application/json;
            # echo the identity the gateway asserted, for the correctness check
            add_header X-Seen-User-ID \$http_x_user_id always;
            return 200 '$UPSTREAM_BODY';
        }
        location / { return 404; }
    }
}
EOF
  chmod go+rx "$WORK"; chmod -R go+rX "$U"   # nginx workers may run as another user
  UP_LOG=$U/nginx.log
  start_bg "$UP_LOG" nginx -p "$U" -c "$U/nginx.conf" -e "$U/error.log"
else
  cat >"$U/upstream.py" <<'PY'
# Fallback upstream: HTTP/1.1 keep-alive, a fixed JSON for GET <path>, 404 otherwise.
import asyncio, sys
host, port, path, body = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4].encode()
def response(status, payload, seen=b""):
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode() + b"\r\nX-Seen-User-ID: " + seen + b"\r\n\r\n" + payload)
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            seen, length = b"", 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"x-user-id": seen = value.strip()
                if name == b"content-length": length = int(value.strip() or b"0")
            if length: await reader.readexactly(length)
            ok = method == b"GET" and target.split(b"?")[0] == path
            writer.write(response(b"200 OK", body, seen) if ok else response(b"404 Not Found", b"{}"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
  UP_LOG=$U/upstream.log
  # the interpreter itself, not a wrapper (pyenv shims fork), so its PID is the server's
  PY=$(python3 -c 'import sys; print(sys.executable)')
  start_bg "$UP_LOG" "$PY" "$U/upstream.py" "$HOST" "$PORT_UP" "$UPSTREAM_PATH" "$UPSTREAM_BODY"
fi
UP_PID=$LAST_PID
wait_port "$PORT_UP" "$UP_PID" "$UP_LOG"
if [ "$UPSTREAM_KIND" = nginx ]; then   # the worker, so its CPU is not counted as "other"
  for _ in $(seq 1 50); do [ -n "$(children_of "$UP_PID")" ] && break; sleep 0.05; done
  [ -n "$(children_of "$UP_PID")" ] || die "nginx started no worker"
fi
UP_PIDS="$UP_PID $(children_of "$UP_PID" | tr '\n' ' ')"

# ---------------------------------------------------------------- 4. gatehouse up :18080 (+ auth :18081, idle services :18082-18084)
RUN=$WORK/run
GW_ENV=(
  PATH="/usr/local/bin:/usr/bin:/bin"
  DATA_DIR="$RUN/data"
  USER_SERVICE_URL="http://$HOST:$PORT_UP"
  AUTH_PORT="$PORT_AUTH" GATEWAY_PORT="$PORT_GW"
  USERS_PORT="$PORT_USERS" PAYMENTS_PORT="$PORT_PAYMENTS" NOTIFICATIONS_PORT="$PORT_NOTIFICATIONS"
  RUST_LOG="$LOG_LEVEL"
  JWT_ALGORITHM="$ALG"
  RATE_LIMIT_PER_MINUTE=100000000 RATE_LIMIT_BURST=1000000
  USER_RATE_LIMIT_PER_MINUTE=100000000 USER_RATE_LIMIT_BURST=1000000
)
[ "$ALG" != HS256 ] || GW_ENV+=(JWT_SECRET="$(head -c 36 /dev/urandom | base64 | tr -d '\n')")   # 48 chars
[ -z "$WORKERS" ] || GW_ENV+=(TOKIO_WORKER_THREADS="$WORKERS")
say "starting $BIN up (JWT $ALG, gateway :$PORT_GW, auth :$PORT_AUTH, upstream :$PORT_UP $UPSTREAM_KIND)"
# A clean environment (no stray DATABASE_URL, REDIS_URL, GATEHOUSE_CONFIG …) in an empty
# working directory (no .env); exec keeps $! the gatehouse process itself.
# shellcheck disable=SC2016  # $1/$@ are the inner sh's
start_bg "$WORK/gatehouse.log" sh -c 'cd "$1" && shift && exec env -i "$@"' sh "$RUN" "${GW_ENV[@]}" "$BIN" up
GW_PID=$LAST_PID

wait_ready() { # wait_ready PORT: /ready answers 200 (keys generated, JWKS loaded)
  local url="http://$HOST:$1/ready" i
  guard_url "$url"
  for i in $(seq 1 300); do
    curl -sf --noproxy '*' --max-time 2 -o /dev/null "$url" && return 0
    alive "$GW_PID" || { cat "$WORK/gatehouse.log" >&2; die "gatehouse exited"; }
    sleep 0.1
  done
  cat "$WORK/gatehouse.log" >&2; die "$url not ready after 30 s"
}
wait_ready "$PORT_AUTH"
wait_ready "$PORT_GW"
[ "$(cat "/proc/$GW_PID/comm" 2>/dev/null)" = gatehouse ] || die "PID $GW_PID is not the gatehouse process"

# ---------------------------------------------------------------- 5. a user and a token, through the gateway
req() { # req NAME URL CURL-ARGS... -> prints the status; body in $WORK/NAME.body, headers in $WORK/NAME.hdr
  local name=$1 url=$2; shift 2
  guard_url "$url"
  curl -s --noproxy '*' --max-time 10 -o "$WORK/$name.body" -D "$WORK/$name.hdr" -w '%{http_code}' "$@" "$url" || true
}
json_field() { python3 -c 'import sys, json
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v[k]
print(v)' "$1" "$2"; }

EMAIL="bench-$(date +%s)-$RANDOM@example.com"
json_body() { python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' "$@"; }
REGISTER=$(json_body email "$EMAIL" password "$PASSWORD" name "Bench User")
CREDS=$(json_body email "$EMAIL" password "$PASSWORD")   # login takes no other field
code=$(req register "http://$HOST:$PORT_GW/api/v1/auth/register" -X POST -H 'Content-Type: application/json' -d "$REGISTER")
[ "$code" = 201 ] || die "register through the gateway: HTTP $code $(cat "$WORK/register.body")"
code=$(req login "http://$HOST:$PORT_GW/api/v1/auth/login" -X POST -H 'Content-Type: application/json' -d "$CREDS")
[ "$code" = 200 ] || die "login through the gateway: HTTP $code $(cat "$WORK/login.body")"
TOKEN=$(json_field "$WORK/login.body" access_token)
USER_ID=$(json_field "$WORK/login.body" user.id)
[ -n "$TOKEN" ] || die "no access_token in the login response"
say "registered and logged in $EMAIL (user $USER_ID) through the gateway"

# ---------------------------------------------------------------- 6. correctness first
GW_URL="http://$HOST:$PORT_GW$GATEWAY_PATH"
UP_URL="http://$HOST:$PORT_UP$UPSTREAM_PATH"
code=$(req gw-check "$GW_URL" -H "Authorization: Bearer $TOKEN")
[ "$code" = 200 ] || die "GET $GW_URL with the token: HTTP $code $(cat "$WORK/gw-check.body")"
[ "$(cat "$WORK/gw-check.body")" = "$UPSTREAM_BODY" ] || die "GET $GW_URL: not the upstream's body: $(cat "$WORK/gw-check.body")"
seen=$(sed -n 's/^[Xx]-[Ss]een-[Uu]ser-[Ii][Dd]: *//p' "$WORK/gw-check.hdr" | tr -d '\r')
[ "$seen" = "$USER_ID" ] || die "the upstream saw X-User-ID '$seen', expected '$USER_ID'"
code=$(req gw-noauth "$GW_URL")
[ "$code" = 401 ] || die "GET $GW_URL without a token: HTTP $code, expected 401"
code=$(req up-check "$UP_URL" -H "Authorization: Bearer $TOKEN")
if [ "$code" != 200 ] || [ "$(cat "$WORK/up-check.body")" != "$UPSTREAM_BODY" ]; then die "GET $UP_URL: HTTP $code"; fi
say "checks passed: gateway 200 + upstream body + X-User-ID $USER_ID; 401 without a token; upstream 200"
FLOOR_PID=""
if [ "$FLOOR" = 1 ]; then
  start_bg "$WORK/floor.log" "$FLOOR_BIN" "$HOST:$PORT_FLOOR" "$HOST:$PORT_UP"
  FLOOR_PID=$LAST_PID
  wait_port "$PORT_FLOOR" "$FLOOR_PID" "$WORK/floor.log"
  FLOOR_URL="http://$HOST:$PORT_FLOOR$UPSTREAM_PATH"
  code=$(req floor-check "$FLOOR_URL" -H "Authorization: Bearer $TOKEN")
  if [ "$code" != 200 ] || [ "$(cat "$WORK/floor-check.body")" != "$UPSTREAM_BODY" ]; then die "GET $FLOOR_URL: HTTP $code"; fi
  say "the floor (bare tokio proxy, :$PORT_FLOOR) answers 200 with the upstream's body"
fi

# ---------------------------------------------------------------- 7. load
cat >"$WORK/wrk/report.lua" <<'LUA'
-- one machine-readable line with exact percentiles (microseconds)
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA

cpu_ticks() { # utime+stime (clock ticks) of the given PIDs, all their threads
  local t=0 p a
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    read -ra a < <(sed 's/^.*) //' "/proc/$p/stat")
    t=$(( t + a[11] + a[12] ))
  done
  echo "$t"
}
host_total() { local _c u n s i w q sq st rest; read -r _c u n s i w q sq st rest </proc/stat; echo $((u+n+s+i+w+q+sq+st)); }
OUR_PIDS="$GW_PID $UP_PIDS $FLOOR_PID"
foreign_ticks() { # CPU ticks (incl. reaped children) of processes outside this benchmark, e.g. a build
  local f line pid ppid a t=0 me=$$ sub=$BASHPID
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    pid=${line%% *}
    read -ra a <<<"${line##*) }"
    ppid=${a[1]}
    if [ "$pid" = "$me" ] || [ "$pid" = "$sub" ] || [ "$ppid" = "$me" ] || [ "$ppid" = "$sub" ] \
       || [ "$pid" = 2 ] || [ "$ppid" = 2 ]; then continue; fi
    case " $OUR_PIDS " in *" $pid "*) continue ;; esac
    t=$(( t + a[11] + a[12] + a[13] + a[14] ))
  done
  echo "$t"
}

run_wrk() { # run_wrk LABEL URL SECS RECORD(0|1) [PID whose CPU is counted; default the gateway's]
  local label=$1 url=$2 secs=$3 record=$4 pid_counted=${5:-$GW_PID} out="$WORK/wrk/$1.$3s.txt" g0 g1 h0 h1 f0 f1 rc=0 res
  guard_url "$url"
  f0=$(foreign_ticks); h0=$(host_total); g0=$(cpu_ticks "$pid_counted")
  # in the background, so a Ctrl-C/SIGTERM reaches the trap at once; timeout forwards it to wrk
  timeout --kill-after=5 $(( secs + 20 )) wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --timeout 2s --latency \
    -s "$WORK/wrk/report.lua" -H "Authorization: Bearer $TOKEN" "$url" >"$out" 2>&1 &
  local pid=$!
  STARTED+=("$pid")
  wait "$pid" || rc=$?
  unset 'STARTED[${#STARTED[@]}-1]'
  g1=$(cpu_ticks "$pid_counted"); h1=$(host_total); f1=$(foreign_ticks)
  [ "$rc" = 0 ] || { cat "$out" >&2; die "wrk failed (exit $rc) against $url"; }
  res=$(grep -m1 '^RESULT ' "$out") || { cat "$out" >&2; die "no RESULT line from wrk ($out)"; }
  alive "$GW_PID" || { cat "$WORK/gatehouse.log" >&2; die "gatehouse died during the run"; }
  [ "$record" = 1 ] || return 0
  printf '%s %s gw_ticks=%s host_ticks=%s foreign_ticks=%s\n' "$label" "${res#RESULT }" \
    "$((g1 - g0))" "$((h1 - h0))" "$((f1 - f0))" >>"$WORK/results.txt"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "warm-up: ${WARMUP}s per target (not recorded)"
run_wrk gateway "$GW_URL" "$WARMUP" 0
[ -z "$FLOOR_PID" ] || run_wrk floor "$FLOOR_URL" "$WARMUP" 0 "$FLOOR_PID"
run_wrk direct "$UP_URL" "$WARMUP" 0
say "measuring: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, gateway$([ -z "$FLOOR_PID" ] || echo ", the floor") then direct"
: >"$WORK/results.txt"
run_wrk gateway "$GW_URL" "$DURATION" 1
[ -z "$FLOOR_PID" ] || run_wrk floor "$FLOOR_URL" "$DURATION" 1 "$FLOOR_PID"
run_wrk direct "$UP_URL" "$DURATION" 1
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
NPROC=$(nproc)
echo
echo "gatehouse gateway vs its upstream — bench/gateway.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:  $NPROC cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); loadavg before $LOAD_BEFORE, after $LOAD_AFTER"
echo "stack:    gatehouse up (gateway + idle auth, users, payments, notifications in one process, SQLite), JWT $ALG, tokio workers ${WORKERS:-default (one per core)}, RUST_LOG=$LOG_LEVEL"
echo "upstream: $([ "$UPSTREAM_KIND" = nginx ] && echo "nginx, 1 worker" || echo "python3 asyncio, 1 process"), $HOST:$PORT_UP; load: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, Bearer token on both, ${WARMUP}s warm-up each"
echo
awk -v clk="$CLK_TCK" -v ncpu="$NPROC" -v gwurl="gateway :$PORT_GW $GATEWAY_PATH" -v upurl="direct  :$PORT_UP $UPSTREAM_PATH" \
    -v floorurl="floor   :$PORT_FLOOR (bare tokio proxy)" '
  {
    delete kv
    for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    lab = $1; n = kv["requests"]; dur = kv["duration_us"] / 1e6
    rps[lab] = n / dur
    counted = (lab != "direct")   # the gateway and the floor: their own process CPU
    line[lab] = sprintf("  %-38s %9.0f %8.3f %8.3f %6d %12s %10s %8.1f",
      (lab == "gateway" ? gwurl : lab == "floor" ? floorurl : upurl), n / dur, kv["p50_us"] / 1000,
      kv["p99_us"] / 1000, kv["errors"],
      (counted ? sprintf("%.1f", kv["gw_ticks"] * 1e6 / clk / n) : "-"),
      (counted ? sprintf("%.0f", 100 * kv["gw_ticks"] / clk / dur) : "-"),
      (kv["host_ticks"] > 0 ? 100 * kv["foreign_ticks"] / kv["host_ticks"] : 0))
    errs += kv["errors"]
    if (kv["host_ticks"] > 0 && 100 * kv["foreign_ticks"] / kv["host_ticks"] > 5) noisy = 1
  }
  END {
    printf "  %-38s %9s %8s %8s %6s %12s %10s %8s\n", "target", "req/s", "p50 ms", "p99 ms", "errors",
      "CPU us/req", "gw core %", "other %"
    print line["gateway"]; if ("floor" in line) print line["floor"]; print line["direct"]
    printf "\n  gateway / direct req/s: %.2f\n", rps["gateway"] / rps["direct"]
    print "\n  CPU us/req: the gatehouse process (all threads) CPU time / requests served (the floor: its own"
    print "  process), as peers.sh reports it for nginx and HAProxy; gw core %: that CPU time in % of one core"
    print "  over the run; other %: CPU of processes outside this benchmark as a share of all " ncpu " cores"
    print "  (above ~5% the run competed, e.g. with a build)."
    print "  wrk, the upstream and the gateway share the " ncpu " cores: req/s is the whole loop on this box."
    if (errs > 0) print "\n  WARNING: socket errors or non-2xx responses during the load; the figures are not valid."
    if (noisy) print "\n  WARNING: other processes used > 5% of the CPUs during a run; figures are depressed and noisy."
  }' "$WORK/results.txt"
echo
if [ -n "$RESULTS_OUT" ]; then
  # The gateway's CPU is the gatehouse process's, the floor's its own; direct is not written (peers.sh
  # counts the upstream nginx's as upstream-direct).
  awk -v clk="$CLK_TCK" -v alg="$ALG" -v workers="${WORKERS:-default}" '
    {
      delete kv
      for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
      n = kv["requests"]; dur = kv["duration_us"] / 1e6
      if ($1 == "gateway") label = sprintf("gatehouse-%s-w%s", alg, workers)
      else if ($1 == "floor") label = "floor-bare-tokio"
      else next
      printf "%s\t%.0f\t%d\t%d\t%d\t%.1f\t%.1f\n", label, n / dur, kv["p50_us"], kv["p99_us"],
        kv["errors"], kv["gw_ticks"] * 1e6 / clk / n, (kv["host_ticks"] > 0 ? 100 * kv["foreign_ticks"] / kv["host_ticks"] : 0)
    }' "$WORK/results.txt" >>"$RESULTS_OUT"
fi

# ---------------------------------------------------------------- perf (optional)
if [ -n "$PERF_OUT" ]; then
  say "profiling: one more ${DURATION}s gateway run under perf record -> $PERF_OUT"
  perf record -q -F 1999 -g --call-graph dwarf,16384 -p "$GW_PID" -o "$PERF_OUT" >"$WORK/perf.log" 2>&1 &
  PERF_PID=$!
  STARTED+=("$PERF_PID")
  sleep 0.5
  run_wrk gateway "$GW_URL" "$DURATION" 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  unset 'STARTED[${#STARTED[@]}-1]'
  [ -s "$PERF_OUT" ] || { cat "$WORK/perf.log" >&2; die "perf wrote nothing"; }
  say "perf data: $PERF_OUT (perf report -i $PERF_OUT --no-children)"
fi

# ---------------------------------------------------------------- peers (optional)
if [ "$WITH_PEERS" = 1 ]; then
  say "stopping our processes, then running $PEERS_SH --quick (ports 9001-9005)"
  stop_all
  [ -x "$PEERS_SH" ] || die "$PEERS_SH not found or not executable"
  peers_args=(--quick)
  [ "$INSTALL" = 1 ] || peers_args+=(--no-install)
  "$PEERS_SH" "${peers_args[@]}" || die "peers.sh failed (exit $?)"
  echo
  say "peers report: $PEERS_REPORT"
fi
OK=1
