#!/usr/bin/env bash
# bench/callgrind.sh — user-space instructions per proxied request of the
# release gateway, counted by valgrind's callgrind: a figure that, unlike
# CPU time on a shared machine, does not drift from run to run, so an A/B of
# a gateway change is a comparison of two numbers.
#
#   bench/callgrind.sh [--bin PATH] [--seconds N] [--nginx | --floor] [--keep] [--help]
#
#   --bin PATH     the gatehouse binary (default: build and use the release one)
#   --nginx        count nginx as a plain reverse proxy instead (one worker,
#                  upstream keepalive, as ../shared/bench/peers.sh configures
#                  it; :29102), under the same load with the same token: the
#                  figure the gateway's is compared with
#   --floor        count the bare tokio proxy instead (the gateway crate's
#                  `bare_proxy` example, built here; :29103): no checks, no
#                  header maps, what any proxy in this runtime pays; the
#                  gateway's count minus this one is the gateway's own
#   --seconds N    length of the counted wrk run, 1..30 (default 4)
#   --keep         keep the work directory with the callgrind output
#                  (read it with callgrind_annotate FILE)
#
# What it does, all on 127.0.0.1: an nginx upstream on :29101 answering a
# fixed 106-byte JSON (as bench/gateway.sh's), `gatehouse up` under
# `valgrind --tool=callgrind --instr-atstart=no` (gateway :29080, auth
# :29081, services :29082-29084, SQLite and keys in a temp dir, EdDSA, one
# tokio worker, rate limits out of the way), one user registered and logged in
# through the gateway, a 2 s warm-up, then instrumentation on for an
# authenticated `wrk -t1 -c8` GET run and off again. It prints requests,
# instructions, and instructions per request (user space of the gatehouse
# process: ours, the libraries', libc's; not the kernel's). With --nginx or
# --floor, gatehouse runs outside valgrind only to issue the token, and the
# counted process is that proxy in front of the same upstream.
#
# Under valgrind, code that picks CPU features at run time takes its portable
# path (SHA-256 is the plain one, not SHA-NI), so the signer weighs more than
# on real hardware; compare two binaries with this script, not with perf.
set -Eeuo pipefail
umask 077
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST=127.0.0.1
PORT_UP=29101 PORT_GW=29080 PORT_AUTH=29081 PORT_NGX=29102 PORT_FLOOR=29103
ALL_PORTS="$PORT_UP $PORT_GW $PORT_AUTH 29082 29083 29084 $PORT_NGX $PORT_FLOOR"
BIN="" SECONDS_RUN=4 KEEP=0 NGINX=0 FLOOR=0
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=${2:?--bin needs a path}; shift ;;
    --seconds) SECONDS_RUN=${2:?--seconds needs a number}; shift ;;
    --keep) KEEP=1 ;;
    --nginx) NGINX=1 ;;
    --floor) FLOOR=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "callgrind.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
die() { printf 'callgrind.sh: error: %s\n' "$*" >&2; exit 1; }
[ "$NGINX" = 0 ] || [ "$FLOOR" = 0 ] || die "--nginx and --floor count different proxies: pick one"
[[ "$SECONDS_RUN" =~ ^[0-9]+$ ]] && [ "$SECONDS_RUN" -ge 1 ] && [ "$SECONDS_RUN" -le 30 ] \
  || die "--seconds must be 1..30 (got '$SECONDS_RUN')"

for tool in valgrind callgrind_control wrk nginx curl python3 ss timeout; do
  command -v "$tool" >/dev/null 2>&1 && continue
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -qq -o DPkg::Lock::Timeout=300 update && \
      apt-get -y -qq -o DPkg::Lock::Timeout=300 install --no-install-recommends valgrind wrk nginx curl >/dev/null
  fi
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install valgrind wrk nginx curl)"
done
for p in $ALL_PORTS; do
  [ -z "$(ss -Htln "sport = :$p")" ] || die "port $HOST:$p is already in use"
done

target_dir() { # where cargo puts this workspace's builds
  (cd "$ROOT" && cargo metadata --format-version 1 --no-deps --locked) \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["target_directory"])'
}
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --locked -p gatehouse --bin gatehouse)
  BIN=$(target_dir)/release/gatehouse
fi
[ -x "$BIN" ] || die "no binary at $BIN"
BIN=$(realpath "$BIN")
if [ "$FLOOR" = 1 ]; then
  (cd "$ROOT" && cargo build --release --locked -p gateway --example bare_proxy)
  FLOOR_BIN=$(target_dir)/release/examples/bare_proxy
  [ -x "$FLOOR_BIN" ] || die "no bare_proxy example at $FLOOR_BIN"
fi

WORK=$(mktemp -d /tmp/gatehouse-callgrind.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then echo "callgrind.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# What the upstream's and (with --nginx) the proxy's configurations share,
# up to their own lines inside `http {`: one process, no master (so the
# process started is the one that serves), no access log.
nginx_conf_head() { # nginx_conf_head DIR
  cat <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path       $1/tmp/proxy;
    fastcgi_temp_path     $1/tmp/fastcgi;
    uwsgi_temp_path       $1/tmp/uwsgi;
    scgi_temp_path        $1/tmp/scgi;
    keepalive_requests 1000000;
EOF
}

mkdir -p "$WORK/upstream/tmp" "$WORK/run"
{
  nginx_conf_head "$WORK/upstream"
  cat <<EOF
    server {
        listen $HOST:$PORT_UP;
        location = /users/profile {
            default_type application/json;
            return 200 '{"user_id":"usr_7f3a9c2e","name":"Bench User","email":"bench.user@example.com","plan":"pro","active":true}';
        }
        location / { return 404; }
    }
}
EOF
} >"$WORK/upstream/nginx.conf"
nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" >"$WORK/upstream/out.log" 2>&1 &
PIDS+=("$!")

# A clean environment in an empty directory (no .env, no stray DATABASE_URL);
# exec keeps $! valgrind (or, with --nginx, gatehouse) itself.
CALLGRIND=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out")
UNDER=("${CALLGRIND[@]}")
[ "$NGINX" = 0 ] && [ "$FLOOR" = 0 ] || UNDER=()
# shellcheck disable=SC2016  # $1/$@ are the inner sh's
sh -c 'cd "$1" && shift && exec env -i "$@"' sh "$WORK/run" \
  PATH=/usr/local/bin:/usr/bin:/bin DATA_DIR="$WORK/run/data" USER_SERVICE_URL="http://$HOST:$PORT_UP" \
  GATEWAY_PORT=$PORT_GW AUTH_PORT=$PORT_AUTH USERS_PORT=29082 PAYMENTS_PORT=29083 NOTIFICATIONS_PORT=29084 \
  RUST_LOG=warn JWT_ALGORITHM=EdDSA TOKIO_WORKER_THREADS=1 \
  RATE_LIMIT_PER_MINUTE=100000000 RATE_LIMIT_BURST=1000000 \
  USER_RATE_LIMIT_PER_MINUTE=100000000 USER_RATE_LIMIT_BURST=1000000 \
  "${UNDER[@]}" "$BIN" up >"$WORK/gatehouse.log" 2>&1 &
GH=$!
PIDS+=("$GH")

ready=0
for _ in $(seq 1 600); do
  if curl -sf --noproxy '*' --max-time 2 -o /dev/null "http://$HOST:$PORT_GW/ready"; then ready=1; break; fi
  kill -0 "$GH" 2>/dev/null || { cat "$WORK/gatehouse.log" >&2; die "gatehouse exited"; }
  sleep 0.2
done
[ "$ready" = 1 ] || { tail -20 "$WORK/gatehouse.log" >&2; die "the gateway was not ready after 120 s"; }

CREDS='{"email":"callgrind@example.com","password":"bench passphrase 2026"}'
REGISTER='{"email":"callgrind@example.com","password":"bench passphrase 2026","name":"Callgrind"}'
code=$(curl -s --noproxy '*' --max-time 60 -o "$WORK/register.json" -w '%{http_code}' -X POST \
  -H 'Content-Type: application/json' -d "$REGISTER" "http://$HOST:$PORT_GW/api/v1/auth/register")
[ "$code" = 201 ] || die "register: HTTP $code $(cat "$WORK/register.json")"
TOKEN=$(curl -sf --noproxy '*' --max-time 60 -X POST -H 'Content-Type: application/json' -d "$CREDS" \
  "http://$HOST:$PORT_GW/api/v1/auth/login" | python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])')
URL="http://$HOST:$PORT_GW/api/v1/users/profile"
code=$(curl -s --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL")
[ "$code" = 200 ] || die "GET $URL with the token: HTTP $code"
VG=$GH COUNTED=$BIN

await_proxy() { # await_proxy NAME LOG: $URL answers 200 through the proxy $VG (started under valgrind: slow)
  local code=000
  for _ in $(seq 1 300); do
    code=$(curl -s --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$URL" || true)
    [ "$code" = 200 ] && return 0
    kill -0 "$VG" 2>/dev/null || { cat "$2" >&2; die "$1 exited"; }
    sleep 0.2
  done
  die "GET $URL through $1: HTTP $code"
}

if [ "$NGINX" = 1 ]; then
  # The peers' plain proxy (../shared/bench/peers.sh): one worker, upstream
  # keepalive; without a master process, so valgrind's process is the worker.
  mkdir -p "$WORK/proxy/tmp"
  {
    nginx_conf_head "$WORK/proxy"
    cat <<EOF
    server_tokens off;
    keepalive_timeout 65s;
    upstream app {
        server $HOST:$PORT_UP;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen $HOST:$PORT_NGX;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
  } >"$WORK/proxy/nginx.conf"
  "${CALLGRIND[@]}" nginx -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" -e "$WORK/proxy/error.log" >"$WORK/proxy/out.log" 2>&1 &
  VG=$! COUNTED="nginx proxy ($(nginx -v 2>&1 | sed 's/^nginx version: //'))"
  PIDS+=("$VG")
  URL="http://$HOST:$PORT_NGX/users/profile"
  await_proxy "the nginx proxy" "$WORK/proxy/out.log"
fi

if [ "$FLOOR" = 1 ]; then
  "${CALLGRIND[@]}" "$FLOOR_BIN" "$HOST:$PORT_FLOOR" "$HOST:$PORT_UP" >"$WORK/floor.log" 2>&1 &
  VG=$! COUNTED="bare tokio proxy ($FLOOR_BIN)"
  PIDS+=("$VG")
  URL="http://$HOST:$PORT_FLOOR/users/profile"
  await_proxy "the bare proxy" "$WORK/floor.log"
fi

timeout 30 wrk -t1 -c8 -d2s -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
callgrind_control -i on "$VG" >/dev/null
REQUESTS=$(timeout $((SECONDS_RUN + 30)) wrk -t1 -c8 -d"${SECONDS_RUN}s" -H "Authorization: Bearer $TOKEN" "$URL" \
  | awk '/requests in/ { print $1 }')
callgrind_control -i off "$VG" >/dev/null
callgrind_control -d "$VG" >/dev/null
sleep 1
[ -n "$REQUESTS" ] && [ "$REQUESTS" -gt 0 ] || die "wrk served no requests"
IR=$(cat "$WORK"/callgrind.out* | awk '/^totals:/ { s += $2 } END { print s + 0 }')
[ "$IR" -gt 0 ] || die "callgrind counted nothing"
printf 'counted       %s\nrequests      %d\ninstructions  %d\nper request   %d\n' "$COUNTED" "$REQUESTS" "$IR" $((IR / REQUESTS))
