#!/usr/bin/env bash
# Alerting suite: a real Prometheus (Debian's package, installed when missing)
# on 127.0.0.1 scrapes the daemon every second and evaluates the shipped
# rules of manifests/optional/alerts.rules.yml, with their `for:` and rate
# windows shortened from minutes to seconds (a test copy; nothing else
# changes). The daemon reaches OpenBao through the fault proxy
# (scripts/faultproxy.py). The suite checks that
#   - while all is well, no alert fires or is pending (the rules read the
#     real /metrics without false alarms),
#   - when OpenBao answers 500, VaultSecretsReloaderVaultLookupsFailing and
#     VaultSecretsReloaderPassesFailing (reloader) fire,
#   - once OpenBao answers again, they resolve,
#   - a workload using a secret that does not exist sets off
#     VaultSecretsReloaderSecretsUnavailable for its namespace, until the
#     secret is written.
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

NS=reloader-alerts
WORK=$(mktemp -d)
DAEMON_PID=
PROXY_PID=
PROM_PID=

cleanup() {
  stop_process "$DAEMON_PID"
  stop_process "$PROXY_PID"
  stop_process "$PROM_PID"
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  if ((FAILED > 0)); then
    echo "--- prometheus log (last 20 lines)"
    tail -n 20 "$WORK/prometheus.log" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say "build, and Prometheus"
build_daemon
check "the daemon binary is there ($BIN)" test -x "$BIN"
need_prometheus
check "prometheus and promtool are installed" command -v prometheus promtool

say "setup: identity, a secret, a Deployment that uses it"
srv kv put secret/alerts/s K=v0 >/dev/null
reloader_identity "$WORK"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a","namespace":"$NS"},
 "spec":{"selector":{"matchLabels":{"app":"a"}},
  "template":{"metadata":{"labels":{"app":"a"},
    "annotations":{"$RELOADER_PREFIX/reload-on-secret-change":"true"}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3",
    "env":[{"name":"K","value":"vault:secret/data/alerts/s#K"}]}]}}}}
EOF

say "the daemon, through a fault proxy before OpenBao"
VAULT_PROXY=$(free_port)
scripts/faultproxy.py --listen "127.0.0.1:$VAULT_PROXY" --target "${VAULT_ADDR#*://}" \
  --control "$WORK/vault.mode" --max-seconds 600 >"$WORK/proxy.out" 2>"$WORK/proxy.err" &
PROXY_PID=$!
check "the proxy listens" wait_until 10 grep -q . "$WORK/proxy.out"
# set_mode MODE: switch the proxy; it reads the file every 100 ms.
set_mode() { printf '%s\n' "$1" >"$WORK/vault.mode.tmp"; mv "$WORK/vault.mode.tmp" "$WORK/vault.mode"; sleep 0.3; }
METRICS_PORT=$(free_port)
VAULT_ADDR=http://127.0.0.1:$VAULT_PROXY VAULT_CLIENT_TIMEOUT=2s \
  start_reloader "$BIN" "$WORK" "127.0.0.1:$METRICS_PORT" --collector-sync-period 1s --reloader-run-period 2s
DAEMON_PID=$RELOADER_PID
has_state() { [[ -n $(annotation "$NS" deployment/a "$RELOADER_PREFIX/observed-versions" meta) ]]; }
check "the workload gets a baseline" wait_until 30 has_state

say "Prometheus on 127.0.0.1, scraping it every second, with the shipped rules"
# The shipped rules, their `for:` minutes and 5-minute windows as seconds.
sed -E 's/for: [0-9]+m/for: 3s/; s/\[5m\]/[5s]/g' manifests/optional/alerts.rules.yml >"$WORK/rules.yml"
check "the test copy of the rules is valid (promtool)" quiet promtool check rules "$WORK/rules.yml"
cat >"$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: [rules.yml]
scrape_configs:
  - job_name: vault-secrets-reloader
    static_configs: [{targets: ["127.0.0.1:$METRICS_PORT"]}]
EOF
PROM_PORT=$(free_port)
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PROM=http://127.0.0.1:$PROM_PORT
check "Prometheus is ready" wait_until 30 curl -sf -o /dev/null "$PROM/-/ready"
# value QUERY: the first value of an instant query (empty when none).
value() {
  curl -sf "$PROM/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(result[0]["value"][1] if result else "")'
}
scraped() { [[ $(value 'vault_secrets_reloader_vault_lookups_total{result="success"} > 0') ]]; }
check "it scrapes the daemon's lookups" wait_until 30 scraped
# alerts: the active alerts, one per line: `STATE NAME {LABELS}`.
alerts() {
  curl -sf "$PROM/api/v1/alerts" | python3 -c '
import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    labels = {k: v for k, v in a["labels"].items() if k != "alertname"}
    print(a["state"], a["labels"]["alertname"], json.dumps(labels, sort_keys=True))'
}
# firing NAME [LABEL_TEXT]: the alert NAME fires (on a series whose labels
# hold LABEL_TEXT).
firing() { alerts | grep -q "^firing $1 .*${2:-}"; }
# none_active: no alert is pending or firing (those that are, logged to
# $WORK/active).
none_active() { local a; a=$(alerts); [[ -z $a ]] || echo "$a" >>"$WORK/active"; [[ -z $a ]]; }
# Until the first scrapes are evaluated, VaultSecretsReloaderDown may be
# active (no series yet). Then 8 s, longer than the rules' `for:` and
# windows: anything the healthy series would set off is active by then.
quiet_for_8s() { wait_until 10 none_active && rm -f "$WORK/active" && stays 8 none_active; }
check "while all is well, no alert is pending or firing (for 8 s)" quiet_for_8s
if [[ -e $WORK/active ]]; then sort -u "$WORK/active" | sed 's/^/    /'; rm "$WORK/active"; fi

say "OpenBao answers 500"
set_mode http500
mark
timed "VaultSecretsReloaderVaultLookupsFailing fires" 30 firing VaultSecretsReloaderVaultLookupsFailing
check "VaultSecretsReloaderPassesFailing fires for the reloader's passes" \
  wait_until 10 firing VaultSecretsReloaderPassesFailing '"pass": "reloader"'
summary=$(curl -sf "$PROM/api/v1/alerts" | python3 -c '
import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    if a["labels"]["alertname"] == "VaultSecretsReloaderVaultLookupsFailing":
        print(a["annotations"]["summary"])')
check "its summary names the daemon ($summary)" \
  test "$summary" = "Secret version lookups of 127.0.0.1:$METRICS_PORT have failed for 10 minutes."

say "OpenBao answers again"
set_mode pass
mark
lookups_quiet() { ! alerts | grep -q VaultSecretsReloaderVaultLookupsFailing; }
timed "VaultSecretsReloaderVaultLookupsFailing resolves" 30 lookups_quiet
check "no alert is left pending or firing" wait_until 15 none_active
if [[ -e $WORK/active ]] && ! none_active; then sort -u "$WORK/active" | sed 's/^/    /'; fi

say "a workload uses a secret that does not exist"
srv kv metadata delete secret/alerts/missing >/dev/null
kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"m","namespace":"$NS"},
 "spec":{"selector":{"matchLabels":{"app":"m"}},
  "template":{"metadata":{"labels":{"app":"m"},
    "annotations":{"$RELOADER_PREFIX/reload-on-secret-change":"true"}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3",
    "env":[{"name":"K","value":"vault:secret/data/alerts/missing#K"}]}]}}}}
EOF
mark
timed "VaultSecretsReloaderSecretsUnavailable fires for its namespace" 30 \
  firing VaultSecretsReloaderSecretsUnavailable "\"namespace\": \"$NS\", \"reason\": \"missing\""
srv kv put secret/alerts/missing K=v1 >/dev/null
mark
unavailable_quiet() { ! alerts | grep -q VaultSecretsReloaderSecretsUnavailable; }
timed "once the secret is written, it resolves" 30 unavailable_quiet
finish
