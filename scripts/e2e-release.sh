#!/usr/bin/env bash
# Release binaries: scripts/release.sh builds the static musl binaries for
# x86-64 and arm64 (cached: quick when nothing changed), and this checks that
#   - each is within budget, needs no shared library and is stripped,
#   - each starts in an empty chroot (--version, --help); the arm64 one
#     through qemu-aarch64-static copied into the chroot,
#   - their checksums match dist/SHA256SUMS,
#   - the arm64 one, under qemu-user, against the local control plane and
#     OpenBao, takes a baseline, reloads a Deployment once when its secret
#     changes, and exits 0 on SIGTERM.
# Runs against the test environment of scripts/testenv.sh (or the current one
# with E2E_USE_CURRENT_ENV set), in its own namespace.
# Ends with "N passed, M failed"; exits non-zero when M > 0.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/harness.sh
source scripts/harness.sh

use_test_env

NS=reloader-arm64
PREFIX=$RELOADER_PREFIX
MAX_BYTES=$((4 * 1024 * 1024))
WORK=$(mktemp -d)
DAEMON_PID=

cleanup() {
  stop_process "$DAEMON_PID"
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT

say "build: scripts/release.sh"
if ! scripts/release.sh; then
  fail "scripts/release.sh builds and verifies both binaries"
  finish
  exit 1
fi
VERSION=$(awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && /^version *=/ { print $2; exit }' Cargo.toml)
COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
X86=$REPO/dist/vault-secrets-reloader-$VERSION-x86_64-linux-musl
ARM=$REPO/dist/vault-secrets-reloader-$VERSION-aarch64-linux-musl
QEMU=$(command -v qemu-aarch64-static || true)
check "qemu-aarch64-static is installed" test -x "$QEMU"
check "dist/SHA256SUMS matches both binaries" \
  bash -c "cd '$REPO/dist' && sha256sum --quiet -c SHA256SUMS && grep -qF '$(basename "$X86")' SHA256SUMS && grep -qF '$(basename "$ARM")' SHA256SUMS"

# binary_checks BIN TRIPLE RUNNER...: budget, static, stripped; RUNNER starts
# it inside a chroot whose root holds only the binary (and the runner).
binary_checks() {
  local bin=$1 triple=$2 root=$WORK/root-${2%%-*} size
  shift 2
  size=$(stat -c %s "$bin")
  check "$triple: at most 4 MiB ($((size / 1024)) KiB)" test "$size" -le "$MAX_BYTES"
  check "$triple: no NEEDED libraries" bash -c "! readelf -d '$bin' | grep -q NEEDED"
  check "$triple: no program interpreter" bash -c "! readelf -l '$bin' | grep -q INTERP"
  check "$triple: stripped (no symbol table)" bash -c "! readelf -S '$bin' | grep -q '\.symtab'"
  mkdir -p "$root"
  cp "$bin" "$root/reloader"
  check "$triple: --version in an empty chroot names it and this commit" \
    bash -c "chroot '$root' $* /reloader --version | grep -qx 'vault-secrets-reloader $VERSION ($triple, commit $COMMIT)'"
  check "$triple: --help in an empty chroot" \
    bash -c "chroot '$root' $* /reloader --help | grep -q '^USAGE: vault-secrets-reloader'"
}

say "x86-64: static, small, runs alone"
binary_checks "$X86" x86_64-unknown-linux-musl
check "x86-64 chroot holds nothing else" test "$(find "$WORK/root-x86_64" -mindepth 1 | wc -l)" -eq 1

say "arm64: static, small, runs alone under qemu-user"
check "the arm64 binary is an AArch64 executable" bash -c "readelf -h '$ARM' | grep -q 'Machine:.*AArch64'"
mkdir -p "$WORK/root-aarch64"
[[ -n $QEMU ]] && cp "$QEMU" "$WORK/root-aarch64/qemu-aarch64-static"
binary_checks "$ARM" aarch64-unknown-linux-musl /qemu-aarch64-static

say "arm64 under qemu-user: one real reload against the local control plane and OpenBao"
bao kv metadata delete secret/arm64 >/dev/null
bao kv put secret/arm64 K=1 >/dev/null
reloader_identity "$WORK"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"arm","namespace":"$NS"},
 "spec":{"selector":{"matchLabels":{"app":"arm"}},
  "template":{"metadata":{"labels":{"app":"arm"},
    "annotations":{"$PREFIX/reload-on-secret-change":"true"}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3",
    "env":[{"name":"K","value":"vault:secret/data/arm64#K"}]}]}}}}
EOF
# start_reloader runs its first argument; qemu-user takes the binary as its own.
printf '#!/bin/sh\nexec %q %q "$@"\n' "$QEMU" "$ARM" >"$WORK/reloader-arm64"
chmod +x "$WORK/reloader-arm64"
count() { annotation "$NS" deployment/arm "$PREFIX/secret-reload-count"; }
count_is() { [[ $(count) == "$1" ]]; }
has_state() { [[ -n $(annotation "$NS" deployment/arm "$PREFIX/observed-versions" meta) ]]; }
HEALTH_PORT=$(free_port)
start_reloader "$WORK/reloader-arm64" "$WORK" "127.0.0.1:$HEALTH_PORT" \
  --namespaces "$NS" --collector-sync-period 1s --reloader-run-period 2s
DAEMON_PID=$RELOADER_PID
check "it logged in to OpenBao with its Kubernetes identity" \
  wait_until 60 grep -q "logged in to $VAULT_ADDR" "$WORK/reloader.out"
check "the Deployment gets a baseline" wait_until 60 has_state
check "and is not reloaded on first sight" count_is ""
bao kv patch secret/arm64 K=2 >/dev/null
check "a new secret version reloads it: reload count 1" wait_until 60 count_is 1
check "the log says so" grep -qF "reloaded Deployment $NS/arm:" "$WORK/reloader.out"
check "and only once (count still 1 after 6 s)" stays 6 count_is 1
check "/healthz answers" bash -c "curl -sf --max-time 15 http://127.0.0.1:$HEALTH_PORT/healthz >/dev/null"
kill -TERM "$DAEMON_PID"
term_sent=$SECONDS
wait "$DAEMON_PID" && code=0 || code=$?
DAEMON_PID=
check "SIGTERM: exit 0 (was $code) within 15 s" test "$code" -eq 0 -a $((SECONDS - term_sent)) -le 15
finish
