#!/usr/bin/env bash
# Reload windows (issue 21, <prefix>/reload-window and --reload-window): a
# Deployment whose window, in UTC, closes 20 s after the test starts and
# opens again 40 s later. Its secret changes while the window is closed: it
# is not rolled out (checked several times), one Normal Event
# RolloutWaitsForWindow and one log line say when the window opens, and it
# is rolled out within a few seconds after it opens, exactly once. The
# daemon's own --reload-window is closed the whole time: a Deployment
# without a window of its own waits for it, and one whose window does not
# parse gets one warning and is rolled out at once, as with no window at
# all. No pods are needed (replicas: 0): the reload count tells.
# The window is `* OPEN-CLOSE UTC`, open from OPEN each day until CLOSE
# (the next day when CLOSE is earlier, as it is unless the test straddles
# midnight UTC): every day the window is closed exactly from CLOSE to
# OPEN, so it works at any time of day, across midnight too.
# Runs against the test environment of scripts/testenv.sh. The daemon
# binary: RELOADER_BIN, else this repository's release build.
# E2E_KEEP_LOGS=DIR keeps the logs in DIR. Ends with "N passed, M failed".
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/harness.sh
source scripts/harness.sh

use_test_env
PREFIX=$RELOADER_PREFIX
NS=windows
WORK=$(mktemp -d)

cleanup() {
  stop_process "${RELOADER_PID:-}"
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  if [[ -n ${E2E_KEEP_LOGS:-} ]]; then cp -r "$WORK" "$E2E_KEEP_LOGS"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# deployment NAME [WINDOW]: a Deployment of no pods using secret
# windows/NAME, with WINDOW as its reload-window annotation when given.
deployment() {
  local window=
  [[ -n ${2:-} ]] && window=",\"$PREFIX/reload-window\":\"$2\""
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"$1","namespace":"$NS"},
 "spec":{"replicas":0,"selector":{"matchLabels":{"app":"$1"}},
  "template":{"metadata":{"labels":{"app":"$1"},
   "annotations":{"$PREFIX/reload-on-secret-change":"true"$window}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3",
    "env":[{"name":"K","value":"vault:secret/data/windows/$1#K"}]}]}}}}
EOF
}
count() { annotation "$NS" "deployment/$1" "$PREFIX/secret-reload-count"; }
baselined() { [[ -n $(annotation "$NS" "deployment/$1" "$PREFIX/observed-versions" meta) ]]; }
waits_events() {
  kubectl -n "$NS" get events -o name \
    --field-selector "involvedObject.name=$1,reason=RolloutWaitsForWindow" | wc -l
}
utc() { date -u -d "@$1" "+$2"; }

say "build and setup"
build_daemon
check "the daemon binary is there ($BIN)" test -x "$BIN"
reloader_identity "$WORK"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
for name in timed plain typo; do srv kv put "secret/windows/$name" K="v-$RANDOM" >/dev/null; done
# The default window opens in two hours, for an hour: closed throughout.
start=$(date +%s)
DEFAULT="* $(utc $((start + 7200)) %H:00)-$(utc $((start + 10800)) %H:00) UTC"
LISTEN=127.0.0.1:$(free_port)
start_reloader "$BIN" "$WORK" "$LISTEN" --reloader-run-period 2s --collector-sync-period 5s \
  --namespaces "$NS" --reload-window "$DEFAULT"

say "a window that closes in 20 s and opens again 40 s later"
CLOSE=$(($(date +%s) + 20))
OPEN=$((CLOSE + 40))
WINDOW="* $(utc "$OPEN" %H:%M:%S)-$(utc "$CLOSE" %H:%M:%S) UTC"
echo "window '$WINDOW': closed from $(utc "$CLOSE" %T) to $(utc "$OPEN" %T) UTC"
deployment timed "$WINDOW"
deployment plain
deployment typo "Mon-Fry 22:00-06:00 Mars/Olympus"
for name in timed plain typo; do
  check "$name gets its baseline while the window is open" wait_until 15 baselined "$name"
done
while (($(date +%s) <= CLOSE)); do sleep 0.2; done
for name in timed plain typo; do srv kv put "secret/windows/$name" K="v-$RANDOM" >/dev/null; done

say "while it is closed"
typo_once() { [[ $(count typo) == 1 ]]; }
check "the workload whose window does not parse is rolled out at once, as with no window" \
  wait_until 8 typo_once
one_event() { (($(waits_events timed) == 1)); }
check "a Normal Event RolloutWaitsForWindow says the change waits" wait_until 8 one_event
opens_at=$(utc "$OPEN" %Y-%m-%dT%H:%M:%SZ)
check "the log says when the window opens ($opens_at)" \
  grep -q "Deployment windows/timed: .*its rollout waits for its reload window (its reload-window annotation), which opens at $opens_at" "$WORK/reloader.out"
check "a workload without its own window waits for --reload-window" \
  grep -q "Deployment windows/plain: .*its rollout waits for its reload window (--reload-window)" "$WORK/reloader.out"
samples=0 rolled=
while (($(date +%s) < OPEN - 3)); do
  samples=$((samples + 1))
  [[ -z $(count timed) && -z $(count plain) ]] || rolled=yes
  sleep 3
done
check "not rolled out while closed ($samples samples, every 3 s)" test -z "$rolled" -a "$samples" -ge 5
check "told once ($(waits_events timed) Event)" test "$(waits_events timed)" = 1

say "when it opens"
while (($(date +%s) < OPEN)); do sleep 0.1; done
mark
timed_once() { [[ $(count timed) == 1 ]]; }
timed "rolled out within a few seconds after it opens" 5 timed_once
sleep 6
check "three passes later it was rolled out once, and the others as before" \
  test "$(count timed):$(count typo):$(count plain)" = "1:1:"
pending=$(curl -sf "http://$LISTEN/metrics" | awk '$1 == "vault_secrets_reloader_rollouts{state=\"pending\"}" { print $2 }')
check "only the one waiting for --reload-window is pending ($pending)" test "${pending:-x}" = 1
# Warnings go to stderr; the collector has listed it many times by now.
warned() { cat "$WORK/reloader.out" "$WORK/reloader.err" | grep -c "Deployment windows/typo: annotation $PREFIX/reload-window is not a reload window: range 1: 'Mon-Fry' is not a day"; }
check "one warning, in all that time, named the bad window's workload and annotation ($(warned) lines)" \
  test "$(warned)" = 1
stop_process "$RELOADER_PID"
finish
