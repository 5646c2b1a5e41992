#!/usr/bin/env bash
# Benchmark of rollout waves on pods that run (issue 21): COUNT Deployments
# (default 1000) whose pods run on KWOK's fake nodes share one secret; it
# changes, and the daemon rolls them out with --max-concurrent-rollouts
# LIMIT (default 50). Written down: the time from the write to every one
# rolled out once and done, the most in progress at once (sampled from the
# API server about every second, judged as kubectl rollout status judges
# it), and the daemon's memory. Rewrites the "Rolling out a shared secret
# in waves" section of BENCHMARKS.md (scripts/bench.sh keeps it).
#   scripts/bench-waves.sh [COUNT [LIMIT]]
# A benchmark, not a test: the numbers are written down, not asserted; what
# is checked is that each Deployment was rolled out exactly once.
# The fake nodes of scripts/testenv.sh take 110 pods each: more are created
# for the run (and deleted after), enough for every pod and the surge.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

COUNT=${1:-1000}
LIMIT=${2:-50}
NS=bench-waves
scripts/testenv.sh up
eval "$(scripts/testenv.sh env)"
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$REPO/target}/x86_64-unknown-linux-gnu/release/vault-secrets-reloader
WORK=$(mktemp -d)
RELOADER_PID=
cleanup() {
  [[ -n $RELOADER_PID ]] && kill "$RELOADER_PID" 2>/dev/null
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  kubectl delete nodes -l bench-waves=true --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

reloader_identity "$WORK"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
srv kv put secret/bench-waves/shared K="v-$RANDOM" >/dev/null
LISTEN=127.0.0.1:$(free_port)
python3 scripts/bench_waves.py nodes "$COUNT" "$LIMIT" | kubectl apply -f - >/dev/null
python3 scripts/bench_waves.py setup "$NS" "$COUNT" "$RELOADER_PREFIX"
start_reloader "$BIN" "$WORK" "$LISTEN" --reloader-run-period 2s --collector-sync-period 5s \
  --namespaces "$NS" --max-concurrent-rollouts "$LIMIT"
python3 scripts/bench_waves.py run "$NS" "$COUNT" "$RELOADER_PREFIX" "$LIMIT" "$RELOADER_PID" \
  BENCHMARKS.md "$BIN"
