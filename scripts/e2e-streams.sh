#!/usr/bin/env bash
# Watch-stream suite (issue 11): the collector follows long-lived watch
# streams, one per kind and namespace, and never waits for them. Against the
# real control plane and OpenBao, with the RBAC of manifests/:
#   1. --namespaces naming 30 namespaces, 1 s / 2 s periods: a secret change
#      reloads its workload within 4 s, a workload added while running is in
#      the index within 2 s, and a collector pass at rest makes 0 API
#      requests with 90/90 watches open;
#   2. the API server is really restarted (scripts/testenv.sh
#      restart-apiserver): a secret changes while it is down, a workload is
#      added and one edited after it is back; the daemon and /healthz keep
#      going, the streams are reopened, each affected workload is reloaded
#      exactly once, nothing is lost;
#   3. through scripts/faultproxy.py (TLS on both sides) in mode `gone`,
#      every watch gets 410: each scope is listed again, and afterwards a
#      secret change still reloads exactly once, nothing lost or repeated;
#   4. with a copy of the ClusterRole minus `watch`, the collector falls back
#      to lists, says so once per scope, and still reloads;
#   5. with OpenBao behind the fault proxy in mode `slow` (0.2 s a request),
#      one namespace's 20 secrets do not fit in a pass: the pass ends when
#      the next is due and that namespace goes on next pass while the others
#      are checked every pass; a workload created during the pass is in the
#      index within 1 s, not when the pass ends; the daemon warns about it
#      once, not every pass, and once Vault is fast again, that a pass fits.
# The issue's limits (4 s, 2 s) are measured to the millisecond from the
# moment the change was made (its command returned), by the harness's
# `mark` and `timed`.
# Runs against the test environment of scripts/testenv.sh (or the current one
# with E2E_USE_CURRENT_ENV set; scenario 2 needs scripts/testenv.sh's). The
# daemon binary: RELOADER_BIN, else this repository's release build.
# E2E_KEEP_LOGS=DIR keeps the daemons' logs (and the proxy's) in DIR.
# Ends with "N passed, M failed"; exits non-zero when M > 0.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/harness.sh
source scripts/harness.sh

use_test_env

PREFIX=$RELOADER_PREFIX
NS_COUNT=30
NAMESPACES=()
for ((i = 1; i <= NS_COUNT; i++)); do NAMESPACES+=("$(printf 'streams-%02d' "$i")"); done
NS_LIST=$(IFS=,; echo "${NAMESPACES[*]}")
# Deployments, DaemonSets, StatefulSets and ConfigMaps in each namespace.
SCOPES=$((4 * NS_COUNT))
# The opted-in Deployments at first: NAME NAMESPACE SECRET.
WORKLOADS=("s1 streams-01 s1" "s2 streams-10 s2" "s3 streams-20 s3" "s4 streams-30 s4")
RELOAD_LIMIT=4 # the issue: a secret change reloads within 4 s (2 s period)
INDEX_LIMIT=2  # the issue: a new workload is in the index within 2 s
# /healthz may wait for one API request (the daemon's 10 s limit), as in
# scripts/e2e-faults.sh.
HEALTH_BOUND=11.5
WORK=$(mktemp -d)
DAEMON_PID=
PROXY_PID=

cleanup() {
  stop_process "$DAEMON_PID"
  stop_process "$PROXY_PID"
  kubectl apply -f manifests/02-rbac.yaml >/dev/null 2>&1 || true
  kubectl delete namespace "${NAMESPACES[@]}" --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  if [[ -n ${E2E_KEEP_LOGS:-} ]]; then cp -r "$WORK" "$E2E_KEEP_LOGS"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# deploy NAMESPACE NAME SECRET: an opted-in Deployment using secret/streams/SECRET.
deploy() {
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"$2","namespace":"$1"},
 "spec":{"selector":{"matchLabels":{"app":"$2"}},
  "template":{"metadata":{"labels":{"app":"$2"},
    "annotations":{"$PREFIX/reload-on-secret-change":"true"}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3",
    "env":[{"name":"K","value":"vault:secret/data/streams/$3#K"}]}]}}}}
EOF
}
change() { bao kv put "secret/streams/$1" K="v-$RANDOM-$RANDOM" >/dev/null; }
count() { local c; c=$(annotation "$1" "deployment/$2" "$PREFIX/secret-reload-count"); echo "${c:-0}"; }
count_is() { [[ $(count "$1" "$2") == "$3" ]]; }
has_state() { [[ -n $(annotation "$1" "deployment/$2" "$PREFIX/observed-versions" meta) ]]; }
# counts_are "NS NAME COUNT"...: each workload's reload count.
counts_are() {
  local w ns name want
  for w in "$@"; do
    read -r ns name want <<<"$w"
    count_is "$ns" "$name" "$want" || return 1
  done
}
all_have_state() {
  local w ns name
  for w in "${WORKLOADS[@]}"; do
    read -r name ns _ <<<"$w"
    has_state "$ns" "$name" || return 1
  done
}
metric() {
  curl -sf "http://127.0.0.1:$HEALTH_PORT/metrics" |
    awk -v m="vault_secrets_reloader_$1" '$1 == m { print $2 }'
}
watched_is() { [[ $(metric watched_workloads) == "$1" ]]; }
healthy() { curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$HEALTH_PORT/healthz"; }
lines() { wc -l <"$1"; }
# since FILE FROM: the lines after line FROM.
since() { tail -n "+$(($2 + 1))" "$1"; }
# between FILE FROM TO: the lines after line FROM up to line TO.
between() { (($3 > $2)) && sed -n "$(($2 + 1)),$3p" "$1" || true; }
matches() { grep -c -- "$1" || true; }

# start DAEMON_ARGS...: a daemon on a fresh health port, 1 s / 2 s periods.
start() {
  HEALTH_PORT=$(free_port)
  start_reloader "$BIN" "$WORK" "127.0.0.1:$HEALTH_PORT" \
    --collector-sync-period 1s --reloader-run-period 2s --log-level debug "$@"
  DAEMON_PID=$RELOADER_PID
  check "the daemon answers /healthz" wait_until 20 healthy
}
stop() {
  stop_process "$DAEMON_PID"
  DAEMON_PID=
}
# last_passes_at_rest N OPEN: the last N collector pass lines (after line
# OUT0 of reloader.out) made no API request, with OPEN watches open.
last_passes_at_rest() {
  local passes
  passes=$(since "$WORK/reloader.out" "$OUT0" | grep 'collector pass:' | tail -n "$1")
  (($(grep -c . <<<"$passes") == $1)) &&
    ! grep -v -- " 0 API requests, .* $2 watches open" <<<"$passes" >/dev/null
}

say "build"
build_daemon
check "the daemon binary is there ($BIN)" test -x "$BIN"

say "setup: identity, $NS_COUNT namespaces, four secrets and Deployments in four of them"
reloader_identity "$WORK"
kubectl delete namespace "${NAMESPACES[@]}" --ignore-not-found --wait=true >/dev/null
for ns in "${NAMESPACES[@]}"; do
  printf '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"%s"}}\n' "$ns"
done | kubectl apply -f - >/dev/null
for s in s1 s2 s3 s3b s4 a1 a2; do bao kv metadata delete "secret/streams/$s" >/dev/null; change "$s"; done
for w in "${WORKLOADS[@]}"; do
  read -r name ns secret <<<"$w"
  deploy "$ns" "$name" "$secret"
done

say "1. --namespaces with $NS_COUNT namespaces ($SCOPES scopes), 1 s / 2 s periods"
OUT0=0
start --namespaces "$NS_LIST"
check "every workload gets a baseline" wait_until 30 all_have_state
check "none is reloaded on first sight" counts_are "streams-01 s1 0" "streams-10 s2 0" "streams-20 s3 0" "streams-30 s4 0"
check "the index holds the 4 workloads (metric watched_workloads)" wait_until 5 watched_is 4
check "collector passes at rest: 0 API requests, $SCOPES/$SCOPES watches open (last 3 passes)" \
  wait_until 20 last_passes_at_rest 3 "$SCOPES/$SCOPES"
change s1
mark
timed "a secret change reloads its workload within ${RELOAD_LIMIT} s" "$RELOAD_LIMIT" count_is streams-01 s1 1
deploy streams-15 a1 a1
mark
timed "a workload added while running is in the index within ${INDEX_LIMIT} s" "$INDEX_LIMIT" watched_is 5
check "it gets a baseline" wait_until 10 has_state streams-15 a1
change a1
mark
timed "its secret change reloads it within ${RELOAD_LIMIT} s" "$RELOAD_LIMIT" count_is streams-15 a1 1
check "each reloaded once, the others not at all (after 3 s)" stays 3 counts_are \
  "streams-01 s1 1" "streams-15 a1 1" "streams-10 s2 0" "streams-20 s3 0" "streams-30 s4 0"
OUT0=$(lines "$WORK/reloader.out")
check "back at rest: 0 API requests, $SCOPES/$SCOPES watches open (last 3 passes)" \
  wait_until 20 last_passes_at_rest 3 "$SCOPES/$SCOPES"

say "2. the API server restarts (every stream cut)"
OUT_START=$(lines "$WORK/reloader.out") ERR0=$(lines "$WORK/reloader.err")
api_up() { kubectl get --raw /readyz >/dev/null 2>&1; }
scripts/testenv.sh restart-apiserver >"$WORK/restart.log" 2>&1 &
RESTART_PID=$!
check "the API server goes down" wait_until 30 not api_up
change s2
check "a secret changed while it was down" not api_up
PROBES=0 PROBE_FAILS=0 PROBE_WORST=0
while kill -0 "$RESTART_PID" 2>/dev/null; do
  took=$(curl -s -o /dev/null --max-time "$HEALTH_BOUND" -w '%{http_code} %{time_total}' \
    "http://127.0.0.1:$HEALTH_PORT/healthz" || true)
  PROBES=$((PROBES + 1))
  [[ $took == 200\ * ]] || PROBE_FAILS=$((PROBE_FAILS + 1))
  PROBE_WORST=$(python3 -c "print(max($PROBE_WORST, ${took#* }))")
  sleep 0.5
done
check "the API server is back (scripts/testenv.sh restart-apiserver)" wait "$RESTART_PID"
BACK=$(lines "$WORK/reloader.out") ERR_BACK=$(lines "$WORK/reloader.err")
check "the daemon kept running" kill -0 "$DAEMON_PID"
check "/healthz answered every probe within ${HEALTH_BOUND}s ($PROBES probes, $PROBE_FAILS failed, slowest ${PROBE_WORST}s)" test "$PROBE_FAILS" -eq 0
deploy streams-25 a2 a2
deploy streams-20 s3 s3b
OUT0=$BACK
check "the streams are reopened: at rest again, 0 API requests, $SCOPES/$SCOPES watches open (last 2 passes)" \
  wait_until 30 last_passes_at_rest 2 "$SCOPES/$SCOPES"
errors=$(between "$WORK/reloader.err" "$ERR0" "$ERR_BACK" | matches 'level=error')
npasses=$(between "$WORK/reloader.out" "$OUT_START" "$BACK" | grep -cE '(collector|reloader) pass:' || true)
check "the outage was noticed ($errors error lines)" test "$errors" -ge 1
check "one error line per pass at most, not one per scope ($errors errors, $npasses passes)" \
  test "$errors" -le $((npasses + 1))
cut=$(since "$WORK/reloader.out" "$OUT_START" | matches 'the watch of .* ended after')
cut=$((cut + $(since "$WORK/reloader.err" "$ERR0" | matches 'the watch of .* failed')))
check "the daemon saw the streams cut ($cut of $SCOPES)" test "$cut" -ge "$SCOPES"
check "the secret changed during the downtime reloads its workload once" wait_until 30 count_is streams-10 s2 1
check "the added workload is in the index (watched_workloads 6)" wait_until 10 watched_is 6
check "it gets a baseline" wait_until 10 has_state streams-25 a2
change a2
mark
timed "its secret change reloads it within ${RELOAD_LIMIT} s" "$RELOAD_LIMIT" count_is streams-25 a2 1
change s3b
mark
timed "the edited workload follows its new secret: reloaded within ${RELOAD_LIMIT} s" "$RELOAD_LIMIT" count_is streams-20 s3 1
check "each affected workload reloaded exactly once, nothing else (after 3 s)" stays 3 counts_are \
  "streams-01 s1 1" "streams-15 a1 1" "streams-10 s2 1" "streams-25 a2 1" "streams-20 s3 1" "streams-30 s4 0"
check "nothing lost: watched_workloads 6" watched_is 6
stop

say "3. every watch gets 410 Gone (fault proxy with TLS on both sides)"
PROXY_PORT=$(free_port)
API=${KUBE_API_URL#https://}
scripts/faultproxy.py --listen "127.0.0.1:$PROXY_PORT" --target "${API%%/*}" --control "$WORK/kube.mode" \
  --tls-cert "$TESTENV_DIR/pki/serving.crt" --tls-key "$TESTENV_DIR/pki/serving.key" \
  --target-ca "$KUBE_CA_FILE" --max-seconds 600 >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
PROXY_PID=$!
check "the proxy listens" wait_until 20 grep -q . "$WORK/proxy.out"
set_mode() { printf '%s\n' "$1" >"$WORK/kube.mode.tmp"; mv "$WORK/kube.mode.tmp" "$WORK/kube.mode"; }
OUT0=$(lines "$WORK/reloader.out")
KUBE_API_URL=https://127.0.0.1:$PROXY_PORT start
check "the index holds the 6 workloads through the proxy" wait_until 15 watched_is 6
check "passes at rest through the proxy: 0 API requests, 4/4 watches open" \
  wait_until 20 last_passes_at_rest 2 4/4
# The log is read whole before it is searched: `since | grep -q` fails under
# pipefail when grep stops early while thousands of relist lines are still
# being written (SIGPIPE), as it did in CI.
relisted() {
  local kind out
  out=$(since "$WORK/reloader.out" "$OUT0")
  for kind in deployments daemonsets statefulsets configmaps; do
    grep -q "$kind changed too much since its watch began; listing again" <<<"$out" || return 1
  done
}
OUT0=$(lines "$WORK/reloader.out")
set_mode gone
check "each scope (4) logs that it lists again" wait_until 15 relisted
set_mode pass
relists=$(since "$WORK/reloader.out" "$OUT0" | matches 'changed too much since its watch began')
check "the daemon kept running ($relists relists while every watch got 410)" kill -0 "$DAEMON_PID"
OUT0=$(lines "$WORK/reloader.out")
check "then back at rest: 0 API requests, 4/4 watches open" wait_until 20 last_passes_at_rest 2 4/4
check "no workload lost: watched_workloads 6" watched_is 6
change s4
mark
timed "a secret change afterwards reloads within ${RELOAD_LIMIT} s" "$RELOAD_LIMIT" count_is streams-30 s4 1
check "each exactly once, none twice (after 3 s)" stays 3 counts_are \
  "streams-01 s1 1" "streams-15 a1 1" "streams-10 s2 1" "streams-25 a2 1" "streams-20 s3 1" "streams-30 s4 1"
stop
stop_process "$PROXY_PID"
PROXY_PID=

say "4. watching forbidden by RBAC: lists instead, said once per scope"
sed -e 's/\["get", "list", "watch", "patch"\]/["get", "list", "patch"]/' \
  -e 's/\["get", "list", "watch"\]/["get", "list"]/' manifests/02-rbac.yaml >"$WORK/rbac-no-watch.yaml"
check "the copy of the ClusterRole has no watch" not grep -q '"watch"' "$WORK/rbac-no-watch.yaml"
kubectl apply -f "$WORK/rbac-no-watch.yaml" >/dev/null
SA_USER=system:serviceaccount:$RELOADER_NS:$RELOADER_SA
cannot_watch() { [[ $(kubectl auth can-i watch deployments.apps --as "$SA_USER" 2>/dev/null) == no ]]; }
check "the reloader may list but not watch" wait_until 10 cannot_watch
ERR0=$(lines "$WORK/reloader.err") OUT0=$(lines "$WORK/reloader.out")
start
check "the index holds the 6 workloads" wait_until 15 watched_is 6
forbidden() { since "$WORK/reloader.err" "$ERR0" | matches "watching $1 is forbidden"; }
all_forbidden() {
  local kind
  for kind in deployments daemonsets statefulsets configmaps; do
    (($(forbidden "$kind") >= 1)) || return 1
  done
}
check "each scope says it is forbidden" wait_until 10 all_forbidden
listing_passes() { (($(since "$WORK/reloader.out" "$OUT0" | matches 'collector pass: .* 0/4 watches open') >= $1)); }
check "the collector keeps listing (5 passes with 0/4 watches open)" wait_until 20 listing_passes 5
change s1
mark
timed "a secret change still reloads within ${RELOAD_LIMIT} s" "$RELOAD_LIMIT" count_is streams-01 s1 2
for kind in deployments daemonsets statefulsets configmaps; do
  n=$(forbidden "$kind")
  check "'watching $kind is forbidden' said once, not every pass ($n times)" test "$n" -eq 1
done
errors=$(since "$WORK/reloader.err" "$ERR0" | matches 'level=error')
check "no error lines ($errors)" test "$errors" -eq 0
check "each exactly once, none twice (after 3 s)" stays 3 counts_are \
  "streams-01 s1 2" "streams-15 a1 1" "streams-10 s2 1" "streams-25 a2 1" "streams-20 s3 1" "streams-30 s4 1"
stop
kubectl apply -f manifests/02-rbac.yaml >/dev/null

say "5. a reloader pass longer than its period (OpenBao behind the fault proxy in mode slow)"
can_watch() { [[ $(kubectl auth can-i watch deployments.apps --as "$SA_USER" 2>/dev/null) == yes ]]; }
check "the reloader may watch again" wait_until 10 can_watch
LONG_SECRETS=20
env_json=
for ((i = 1; i <= LONG_SECRETS; i++)); do
  change "l$i"
  env_json+="${env_json:+,}{\"name\":\"L$i\",\"value\":\"vault:secret/data/streams/l$i#K\"}"
done
kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"long","namespace":"streams-05"},
 "spec":{"selector":{"matchLabels":{"app":"long"}},
  "template":{"metadata":{"labels":{"app":"long"},
    "annotations":{"$PREFIX/reload-on-secret-change":"true"}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3","env":[$env_json]}]}}}}
EOF
VAULT_PROXY_PORT=$(free_port)
scripts/faultproxy.py --listen "127.0.0.1:$VAULT_PROXY_PORT" --target "${VAULT_ADDR#http://}" \
  --control "$WORK/vault.mode" --max-seconds 600 >"$WORK/vault-proxy.out" 2>"$WORK/vault-proxy.err" &
PROXY_PID=$!
check "the Vault proxy listens" wait_until 20 grep -q . "$WORK/vault-proxy.out"
printf 'slow\n' >"$WORK/vault.mode"
ERR0=$(lines "$WORK/reloader.err") OUT0=$(lines "$WORK/reloader.out")
VAULT_ADDR=http://127.0.0.1:$VAULT_PROXY_PORT start
check "the index holds the 7 workloads" wait_until 15 watched_is 7
pass_ms() { since "$WORK/reloader.out" "$OUT0" | grep 'reloader pass:' | tail -n 1 | grep -oE '[0-9]+ ms, [0-9]+% of the period' | cut -d' ' -f1; }
passes() { since "$WORK/reloader.out" "$OUT0" | matches 'reloader pass:'; }
passes_at_least() { (($(passes) >= $1)); }
check "a first reloader pass ends" wait_until 30 passes_at_least 1
long=$(pass_ms)
# The period, and the last step begun before its end (a lookup, 0.2 s).
check "each request waits 0.2 s: the pass ends when the next is due (${long} ms)" \
  test "${long:-0}" -ge 1800 -a "${long:-0}" -le 2600
carried() { since "$WORK/reloader.err" "$ERR0" | matches 'level=warn msg="reloader pass ran out of --reloader-run-period with [0-9]* secrets of namespace streams-05 ('; }
check "the warning names the namespace left for the next pass" test "$(carried)" -eq 1
# The next pass is due as one ends: be inside it.
n=$(passes)
wait_until 30 passes_at_least $((n + 1))
sleep 0.3
deploy streams-05 a3 a3
mark
timed "a workload created during a long pass is in the index within 1 s" 1 watched_is 8
inside=$(passes)
check "that was before the pass ended (reloader passes: $((n + 1)) then $inside)" test "$inside" -eq $((n + 1))
change s1
check "a secret change still reloads its workload once" wait_until 30 count_is streams-01 s1 3
versions_known() {
  [[ $(annotation streams-05 deployment/long "$PREFIX/observed-versions" meta | grep -o 'vault:secret/data/streams/l' | wc -l) -eq $LONG_SECRETS ]]
}
check "over several passes, streams-05's secrets are all known: its baseline holds all $LONG_SECRETS" \
  wait_until 30 versions_known
check "the baseline rolled nothing" counts_are "streams-05 long 0"
overruns=$(since "$WORK/reloader.err" "$ERR0" | matches 'level=warn msg="reloader pass ran out')
check "running out of its period is said once, not every pass ($overruns warnings in $(passes) passes)" \
  test "$overruns" -eq 1
# While every request is slow, streams-05 always needs several passes (its
# catching up still counts as over): only a fast Vault fits again.
printf 'pass\n' >"$WORK/vault.mode"
fits_again() { (($(since "$WORK/reloader.out" "$OUT0" | matches 'reloader pass fits in its period again') > 0)); }
check "once Vault is fast again, a pass fits and says so" wait_until 30 fits_again
stop
stop_process "$PROXY_PID"
PROXY_PID=
finish
