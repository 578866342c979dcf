#!/usr/bin/env bash
# bench/auth.sh — measures the auth service as it runs in production:
# the release binary, `gatehouse auth`, on PostgreSQL (and, for comparison,
# on the embedded SQLite), driven over loopback by the auth_load example.
#
#   bench/auth.sh [--seconds N] [--clients N] [--logins N] [--sqlite-only]
#
# Prints, for PostgreSQL with EdDSA and with RS256 signing and for SQLite
# with EdDSA: login latency (median, p90) at the configured Argon2id cost,
# refreshes per second with N concurrent clients, and a login flood (logins
# per second, and the p50/p99 of an authenticated GET during it vs idle). Figures only: nothing here
# passes or fails on timing. Needs PostgreSQL on 127.0.0.1:5432 (trust auth,
# user postgres), which scripts/test also starts.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

SECONDS_RUN=10 CLIENTS=16 LOGINS=40 SQLITE_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_RUN=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --logins) LOGINS=$2; shift ;;
    --sqlite-only) SQLITE_ONLY=1 ;;
    *) echo "bench/auth.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ "$SECONDS_RUN" =~ ^[0-9]+$ && "$SECONDS_RUN" -le 120 ]] || { echo "--seconds must be 0..120" >&2; exit 2; }

echo "==> building release binaries"
cargo build --release --locked -p gatehouse --bin gatehouse
cargo build --release --locked -p auth-service --example auth_load

WORK=$(mktemp -d)
DB="gatehouse_bench_$$"
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

secret() { head -c 48 /dev/urandom | base64 | tr -d '\n/+='; }
PORT=18181

run_one() { # $1 = label, $2 = DATABASE_URL, $3 = JWT_ALGORITHM
  local label=$1 url=$2 alg=${3:-EdDSA}
  echo "==> $label, $alg"
  ENVIRONMENT=production DATABASE_URL="$url" JWT_ALGORITHM="$alg" \
    JWT_PRIVATE_KEY_FILE="$WORK/key-$alg.pem" CSRF_SECRET="$(secret)" REFRESH_TOKEN_SECRET="$(secret)" \
    MFA_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)" \
    PORT=$PORT BIND_ADDRESS=127.0.0.1 RUST_LOG=warn LOGIN_MAX_FAILURES=1000 \
    target/release/gatehouse auth &
  PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.1; done
  target/release/examples/auth_load --base "http://127.0.0.1:$PORT" --logins "$LOGINS" \
    --clients "$CLIENTS" --seconds "$SECONDS_RUN"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

# Throwaway EdDSA and RS256 keys in PKCS#8 PEM, made by the binary's own key code via dev runs.
for alg in EdDSA RS256; do
  DATA_DIR="$WORK/dev" ENVIRONMENT=development JWT_ALGORITHM=$alg PORT=0 RUST_LOG=error \
    timeout 5 target/release/gatehouse auth >/dev/null 2>&1 || true
  lower=$(echo "$alg" | tr '[:upper:]' '[:lower:]')
  cp "$WORK/dev/keys/jwt-$lower.pem" "$WORK/key-$alg.pem"
done

echo "machine: $(nproc) cores; Argon2id m=19456 KiB t=2 p=1 (OWASP)"
if [ "$SQLITE_ONLY" = 0 ]; then
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "create database $DB" >/dev/null
  run_one "PostgreSQL" "postgres://postgres@127.0.0.1:5432/$DB" EdDSA
  run_one "PostgreSQL" "postgres://postgres@127.0.0.1:5432/$DB" RS256
fi
run_one "SQLite" "sqlite://$WORK/bench.db" EdDSA
