#!/usr/bin/env bash
# Fault suite: the daemon survives faults of its servers. Between the daemon
# and OpenBao, and between the daemon and the API server, runs a fault proxy
# (scripts/faultproxy.py) that this suite switches between relaying and a
# fault: OpenBao hangs, answers 500 or 200 with an HTML page, resets
# connections; the API server hangs, resets connections. For each fault,
# secrets change while it lasts, and the suite checks that
#   - each workload using them is reloaded exactly once after the fault ends,
#   - the daemon keeps running,
#   - /healthz answers within 1 s throughout, even while a request hangs
#     (a request's wait serves the health listener),
#   - a failing server costs about one error line per pass, not one per
#     secret or workload (five of each here).
# Then the daemon runs through a CONNECT proxy (scripts/connectproxy.py) with
# HTTPS_PROXY and HTTP_PROXY, naming both servers by names only the proxy
# resolves: every request, watch stream and login goes through it.
# Runs against the test environment of scripts/testenv.sh (or the current one
# with E2E_USE_CURRENT_ENV set), in its own namespace. RELOADER_BIN names a
# daemon binary to use instead of building this repository's.
# Ends with "N passed, M failed"; exits non-zero when M > 0.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/harness.sh
source scripts/harness.sh

use_test_env

NS=reloader-faults
PREFIX=$RELOADER_PREFIX
SECRETS=(1 2 3 4 5)
# The daemon's time limit on Vault requests (VAULT_CLIENT_TIMEOUT, set
# below); API requests have 10 s, fixed in the daemon. /healthz waits for
# neither: HEALTH_BOUND is far below both.
VAULT_TIMEOUT=3
HEALTH_BOUND=1
WORK=$(mktemp -d)
DAEMON_PID=
PROXY_PIDS=()

cleanup() {
  stop_process "$DAEMON_PID"
  for pid in "${PROXY_PIDS[@]}"; do
    stop_process "$pid"
  done
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT

count() { annotation "$NS" "deployment/f$1" "$PREFIX/secret-reload-count"; }
has_state() { [[ -n $(annotation "$NS" "deployment/f$1" "$PREFIX/observed-versions" meta) ]]; }
all_have_state() { local i; for i in "${SECRETS[@]}"; do has_state "$i" || return 1; done; }
# counts_are N: every workload's reload count is N (0: none yet).
counts_are() {
  local i c
  for i in "${SECRETS[@]}"; do
    c=$(count "$i")
    [[ ${c:-0} == "$1" ]] || return 1
  done
}
lines() { wc -l <"$1"; }
# between FILE FROM TO: the lines after line FROM up to line TO.
between() { (($3 > $2)) && sed -n "$(($2 + 1)),$3p" "$1" || true; }
matches() { grep -c -- "$1" || true; }

say "build"
build_daemon
check "the daemon binary is there ($BIN)" test -x "$BIN"

say "setup: identity, five secrets, five Deployments that use one each"
for i in "${SECRETS[@]}"; do bao kv metadata delete "secret/faults/s$i" >/dev/null; done
reloader_identity "$WORK"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
for i in "${SECRETS[@]}"; do
  bao kv put "secret/faults/s$i" K=v0 >/dev/null
  kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"f$i","namespace":"$NS"},
 "spec":{"selector":{"matchLabels":{"app":"f$i"}},
  "template":{"metadata":{"labels":{"app":"f$i"},
    "annotations":{"$PREFIX/reload-on-secret-change":"true"}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3",
    "env":[{"name":"K","value":"vault:secret/data/faults/s$i#K"}]}]}}}}
EOF
done

say "fault proxies in front of OpenBao and the API server"
# start_proxy NAME TARGET_URL PORT: a proxy on PORT to the URL's host:port,
# switched through $WORK/NAME.mode.
start_proxy() {
  local name=$1 target=${2#*://}
  scripts/faultproxy.py --listen "127.0.0.1:$3" --target "${target%%/*}" \
    --control "$WORK/$name.mode" --max-seconds 900 >"$WORK/$name-proxy.out" 2>"$WORK/$name-proxy.err" &
  PROXY_PIDS+=($!)
}
VAULT_PROXY=$(free_port)
KUBE_PROXY=$(free_port)
start_proxy vault "$VAULT_ADDR" "$VAULT_PROXY"
start_proxy kube "$KUBE_API_URL" "$KUBE_PROXY"
check "both proxies listen" wait_until 20 bash -c "grep -q . '$WORK/vault-proxy.out' && grep -q . '$WORK/kube-proxy.out'"
# set_mode NAME MODE: switch a proxy; it reads the file every 100 ms.
set_mode() { printf '%s\n' "$2" >"$WORK/$1.mode.tmp"; mv "$WORK/$1.mode.tmp" "$WORK/$1.mode"; sleep 0.3; }

say "the daemon, through both proxies"
HEALTH_PORT=$(free_port)
VAULT_ADDR=http://127.0.0.1:$VAULT_PROXY KUBE_API_URL=https://127.0.0.1:$KUBE_PROXY \
  VAULT_CLIENT_TIMEOUT=${VAULT_TIMEOUT}s start_reloader "$BIN" "$WORK" "127.0.0.1:$HEALTH_PORT" \
  --collector-sync-period 1s --reloader-run-period 2s --log-level debug
DAEMON_PID=$RELOADER_PID
check "every workload gets a baseline" wait_until 30 all_have_state
check "none is reloaded on first sight" counts_are 0
check "it logged in to OpenBao through the proxy" grep -q "logged in to http://127.0.0.1:$VAULT_PROXY" "$WORK/reloader.out"

# probe_health SECONDS BOUND: asks /healthz again and again for SECONDS, each
# time allowing BOUND seconds; sets PROBES, PROBE_FAILS and PROBE_WORST.
probe_health() {
  local until=$((SECONDS + $1)) bound=$2 out code took
  PROBES=0 PROBE_FAILS=0 PROBE_WORST=0
  while ((SECONDS < until)); do
    out=$(curl -s -o /dev/null --max-time "$bound" -w '%{http_code} %{time_total}' \
      "http://127.0.0.1:$HEALTH_PORT/healthz" || true)
    read -r code took <<<"$out"
    PROBES=$((PROBES + 1))
    [[ $code == 200 ]] || PROBE_FAILS=$((PROBE_FAILS + 1))
    PROBE_WORST=$(python3 -c "print(max($PROBE_WORST, ${took:-$bound}))")
    sleep 0.5
  done
}

# fault NAME PROXY MODE HOLD BOUND PASSES: while PROXY is in MODE for HOLD
# seconds, every secret changes; /healthz must answer within BOUND seconds;
# error lines are weighed against the passes matching the PASSES pattern.
fault() {
  local name=$1 proxy=$2 mode=$3 hold=$4 bound=$5 passes=$6
  say "$name"
  local before i err0 out0 err1 out1 errors npasses
  before=$(count 1)
  before=${before:-0}
  check "all workloads start at the same count ($before)" counts_are "$before"
  err0=$(lines "$WORK/reloader.err") out0=$(lines "$WORK/reloader.out")
  set_mode "$proxy" "$mode"
  for i in "${SECRETS[@]}"; do bao kv patch "secret/faults/s$i" K="$mode-$RANDOM" >/dev/null; done
  probe_health "$hold" "$bound"
  check "nothing is reloaded while it lasts" counts_are "$before"
  set_mode "$proxy" pass
  check "the daemon is still running" kill -0 "$DAEMON_PID"
  check "/healthz answered every probe within ${bound}s ($PROBES probes, $PROBE_FAILS failed, slowest ${PROBE_WORST}s)" \
    test "$PROBE_FAILS" -eq 0
  check "after it ends, each workload is reloaded once (count $((before + 1)))" \
    wait_until 30 counts_are $((before + 1))
  err1=$(lines "$WORK/reloader.err") out1=$(lines "$WORK/reloader.out")
  errors=$(between "$WORK/reloader.err" "$err0" "$err1" | matches 'level=error')
  npasses=$(between "$WORK/reloader.out" "$out0" "$out1" | grep -cE -- "$passes" || true)
  check "the fault was noticed ($errors error lines)" test "$errors" -ge 1
  check "one error line per pass at most, not one per secret ($errors errors, $npasses passes)" \
    test "$errors" -le $((npasses + 1))
  if ((errors > npasses + 1)); then
    between "$WORK/reloader.err" "$err0" "$err1" | grep 'level=error' | sed 's/^/    /' | head -n 12
  fi
  check "and only once (count still $((before + 1)) after 4 s)" stays 4 counts_are $((before + 1))
}

RELOADER_PASS='reloader pass:'
ANY_PASS='(reloader|collector) pass:'
fault "OpenBao hangs" vault hang 10 "$HEALTH_BOUND" "$RELOADER_PASS"
fault "OpenBao answers 500" vault http500 6 "$HEALTH_BOUND" "$RELOADER_PASS"
fault "OpenBao answers 200 with an HTML page" vault html200 6 "$HEALTH_BOUND" "$RELOADER_PASS"
fault "OpenBao resets connections" vault reset 6 "$HEALTH_BOUND" "$RELOADER_PASS"
# Longer than one API request's time limit, so a hung request ends inside it.
fault "the API server hangs" kube hang 16 "$HEALTH_BOUND" "$ANY_PASS"
fault "the API server resets connections" kube reset 6 "$HEALTH_BOUND" "$ANY_PASS"

say "through a CONNECT proxy (HTTPS_PROXY, HTTP_PROXY), with names only the proxy resolves"
# The API server's certificate names kubernetes.default.svc; the daemon
# cannot look up either name, so every request, watch stream and login must
# go through the proxy, which maps them to the servers on loopback.
stop_process "$DAEMON_PID"
DAEMON_PID=
api=${KUBE_API_URL#https://} vault=${VAULT_ADDR#http://}
CONNECT_PROXY=$(free_port)
scripts/connectproxy.py --listen "127.0.0.1:$CONNECT_PROXY" --log "$WORK/connect.log" --max-seconds 900 \
  --map "kubernetes.default.svc=127.0.0.1:${api##*:}" --map "vault.proxied.test=127.0.0.1:${vault##*:}" \
  >"$WORK/connect-proxy.out" 2>&1 &
PROXY_PIDS+=($!)
check "the CONNECT proxy listens" wait_until 10 grep -q . "$WORK/connect-proxy.out"
before=$(count 1)
HTTPS_PROXY=http://127.0.0.1:$CONNECT_PROXY HTTP_PROXY=http://127.0.0.1:$CONNECT_PROXY \
  VAULT_ADDR=http://vault.proxied.test:${vault##*:} KUBE_API_URL=https://kubernetes.default.svc:${api##*:} \
  start_reloader "$BIN" "$WORK" "127.0.0.1:$HEALTH_PORT" --collector-sync-period 1s --reloader-run-period 2s --log-level debug
DAEMON_PID=$RELOADER_PID
check "it says the servers are reached through the proxy" \
  wait_until 10 grep -q "https://kubernetes.default.svc:${api##*:} is reached through the proxy http://127.0.0.1:$CONNECT_PROXY" "$WORK/reloader.out"
check "it logs in to Vault through the proxy" wait_until 20 grep -q "logged in to http://vault.proxied.test" "$WORK/reloader.out"
for i in "${SECRETS[@]}"; do bao kv patch "secret/faults/s$i" K="proxied-$RANDOM" >/dev/null; done
check "a change is rolled out once through it (count $((before + 1)))" wait_until 30 counts_are $((before + 1))
check "and only once" stays 4 counts_are $((before + 1))
tunnels() { grep -c "^CONNECT $1:.* -> relayed$" "$WORK/connect.log" || true; }
check "the API server's requests and watch streams were tunnelled ($(tunnels kubernetes.default.svc) CONNECTs)" \
  test "$(tunnels kubernetes.default.svc)" -ge 4
check "Vault's requests were tunnelled ($(tunnels vault.proxied.test) CONNECTs)" test "$(tunnels vault.proxied.test)" -ge 1
check "nothing was asked of the proxy that it refused" not grep -q refused "$WORK/connect.log"
finish
