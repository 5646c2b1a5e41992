#!/usr/bin/env bash
# Rollout waves (issue 21, --max-concurrent-rollouts): 40 Deployments whose
# pods really run (KWOK's fake nodes, scripts/testenv.sh) share one secret;
# it changes; with --max-concurrent-rollouts 5 the daemon never has more
# than 5 of them rolling at once (sampled every 0.2 s from the API server,
# judged as kubectl rollout status judges it: the maximum seen is reported),
# and all 40 are rolled out, each exactly once. minReadySeconds keeps each
# rollout in progress a few seconds, as real pods would. Then a workload
# annotated <prefix>/reload-paused: "true" is not rolled out (one Warning
# Event) until the annotation goes. Then the health gate, with
# --canary-rollouts 1: 40 more Deployments share another secret, and the
# canary's pods never become Ready (KWOK's never-ready stage, standing for
# a bad value); it fails past its progress deadline, the other 39 are held
# with one Warning Event each and stay unrolled, also after a kill -9 of
# the daemon; <prefix>/rollout-hold: release on one of them lets them all
# go, once each; the fix (a newer version, the canary healthy again) rolls
# each of them out once more.
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
NS=waves
COUNT=40
LIMIT=5
WORK=$(mktemp -d)
SAMPLER_PID=

cleanup() {
  stop_process "$SAMPLER_PID"
  stop_process "${RELOADER_PID:-}"
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  if [[ -n ${E2E_KEEP_LOGS:-} ]]; then cp -r "$WORK" "$E2E_KEEP_LOGS"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The Python half: the Deployments, and the sampler of rollouts in progress
# (with scripts/bench_waves.py's Deployment and judgement of one in progress).
cat >"$WORK/waves.py" <<'PYTHON'
import json, subprocess, sys, time
from bench_waves import deployment, rolling

def deployments(namespace, count, prefix, stem="app", secret="waves/shared"):
    items = [deployment(namespace, f"{stem}-{i:02d}", prefix, secret, min_ready=3) for i in range(count)]
    return {"apiVersion": "v1", "kind": "List", "items": items}

def sample(namespace, out):
    """Every 0.2 s: how many are rolling, and each one's reload count."""
    with open(out, "a") as f:
        while True:
            items = json.loads(subprocess.check_output(
                ["kubectl", "-n", namespace, "get", "deploy", "-o", "json"]))["items"]
            counts = [d["spec"]["template"]["metadata"].get("annotations", {}).get(
                sys.argv[4] + "/secret-reload-count", "0") for d in items]
            # Rolled by the daemon: a reload count. (A Deployment's
            # generation moves with its annotations too, so the daemon's
            # baseline makes the others look busy for a moment.)
            busy = sum(rolling(d) for d, c in zip(items, counts) if c != "0")
            print(busy, " ".join(counts), flush=True, file=f)
            time.sleep(0.2)

if sys.argv[1] == "deployments":
    print(json.dumps(deployments(sys.argv[2], int(sys.argv[3]), *sys.argv[4:])))
elif sys.argv[1] == "sample":
    sample(sys.argv[2], sys.argv[3])
PYTHON

waves_py() { PYTHONPATH="$REPO/scripts" python3 "$WORK/waves.py" "$@"; }

say "build and setup"
build_daemon
check "the daemon binary is there ($BIN)" test -x "$BIN"
check "the fake nodes are there" test "$(kubectl get nodes -o name | wc -l)" -ge 1
reloader_identity "$WORK"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
srv kv put secret/waves/shared K="v-$RANDOM" >/dev/null
waves_py deployments "$NS" "$COUNT" "$PREFIX" | kubectl apply -f - >/dev/null
available() {
  [[ $(kubectl -n "$NS" get deploy -o jsonpath='{range .items[*]}{.status.availableReplicas}{"\n"}{end}' | grep -c '^1$') -eq $COUNT ]]
}
check "the $COUNT Deployments' pods run: all Available" wait_until 120 available
LISTEN=127.0.0.1:$(free_port)
start_reloader "$BIN" "$WORK" "$LISTEN" --reloader-run-period 2s --collector-sync-period 5s \
  --namespaces "$NS" --max-concurrent-rollouts "$LIMIT"
baselined() {
  [[ $(kubectl -n "$NS" get deploy -o json | grep -c '"secrets-reloader.security.bank-vaults.io/observed-versions"') -eq $COUNT ]]
}
check "each gets its baseline" wait_until 30 baselined

say "the shared secret changes"
PYTHONPATH="$REPO/scripts" python3 "$WORK/waves.py" sample "$NS" "$WORK/samples" "$PREFIX" &
SAMPLER_PID=$!
srv kv put secret/waves/shared K="v-$RANDOM" >/dev/null
all_once() {
  local last
  last=$(tail -n 1 "$WORK/samples" 2>/dev/null) || return 1
  read -r rolling counts <<<"$last"
  [[ $rolling == 0 && $(tr ' ' '\n' <<<"$counts" | grep -c '^1$') -eq $COUNT ]]
}
check "all $COUNT are rolled out within 3 minutes" wait_until 180 all_once
stop_process "$SAMPLER_PID"
SAMPLER_PID=
most=$(awk '{ if ($1 > m) m = $1 } END { print m + 0 }' "$WORK/samples")
samples=$(wc -l <"$WORK/samples")
check "never more than $LIMIT in progress at once (at most $most in $samples samples)" test "$most" -le "$LIMIT"
check "several did roll at once" test "$most" -ge 2
once_at_most() { awk '{ for (i = 2; i <= NF; i++) if ($i > 1) bad = 1 } END { exit bad }' "$WORK/samples"; }
check "none was rolled twice" once_at_most
pending=$(curl -sf "http://$LISTEN/metrics" | awk '$1 == "vault_secrets_reloader_rollouts{state=\"pending\"}" { print $2 }')
check "nothing is pending after ($pending)" test "${pending:-x}" = 0
check "the waits were said in the log" grep -q 'rollouts pending: .* at most 5 at once (--max-concurrent-rollouts)' "$WORK/reloader.out"

say "a paused workload waits, and is rolled out once resumed"
srv kv put secret/waves/solo K="v-$RANDOM" >/dev/null
kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"solo","namespace":"$NS",
  "annotations":{"$PREFIX/reload-paused":"true"}},
 "spec":{"replicas":0,"selector":{"matchLabels":{"app":"solo"}},
  "template":{"metadata":{"labels":{"app":"solo"},"annotations":{"$PREFIX/reload-on-secret-change":"true"}},
   "spec":{"containers":[{"name":"app","image":"registry.invalid/pause:3",
    "env":[{"name":"K","value":"vault:secret/data/waves/solo#K"}]}]}}}}
EOF
solo_count() { annotation "$NS" deployment/solo "$PREFIX/secret-reload-count"; }
solo_baselined() { [[ -n $(annotation "$NS" deployment/solo "$PREFIX/observed-versions" meta) ]]; }
check "the paused workload gets its baseline" wait_until 20 solo_baselined
srv kv put secret/waves/solo K="v-$RANDOM" >/dev/null
paused_events() { kubectl -n "$NS" get events --field-selector "involvedObject.name=solo,reason=RolloutPaused" -o name | wc -l; }
one_paused_event() { (($(paused_events) == 1)); }
check "a Warning Event RolloutPaused says its change waits" wait_until 10 one_paused_event
sleep 6
check "three passes later it is still not rolled out, and told once ($(paused_events) Event)" \
  test "$(solo_count):$(paused_events)" = ":1"
kubectl -n "$NS" annotate deploy/solo "$PREFIX/reload-paused-" >/dev/null
solo_once() { [[ $(solo_count) == 1 ]]; }
check "resumed, it is rolled out once" wait_until 10 solo_once
stop_process "$RELOADER_PID"

say "canaries and the health gate: a canary whose pods never become Ready holds the others"
CNS=canary
kubectl delete namespace "$CNS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$CNS" >/dev/null
srv kv put secret/waves/canary K="v-$RANDOM" >/dev/null
waves_py deployments "$CNS" "$COUNT" "$PREFIX" can waves/canary | kubectl apply -f - >/dev/null
# can-00 comes first (same change, then by name): the canary, never Ready.
NEVER=vault-secrets-reloader.test/never-ready
kubectl -n "$CNS" patch deploy/can-00 --type merge >/dev/null -p \
  "{\"spec\":{\"progressDeadlineSeconds\":15,\"template\":{\"metadata\":{\"labels\":{\"$NEVER\":\"true\"}}}}}"
others_available() {
  [[ $(kubectl -n "$CNS" get deploy -o jsonpath='{range .items[*]}{.status.availableReplicas}{"\n"}{end}' | grep -c '^1$') -ge $((COUNT - 1)) ]]
}
check "the other $((COUNT - 1)) Deployments' pods run" wait_until 120 others_available
canary_daemon() {
  start_reloader "$BIN" "$WORK" "$LISTEN" --reloader-run-period 2s --collector-sync-period 5s \
    --namespaces "$CNS" --max-concurrent-rollouts "$LIMIT" --canary-rollouts 1
}
canary_daemon
canary_baselined() {
  [[ $(kubectl -n "$CNS" get deploy -o json | grep -c '"secrets-reloader.security.bank-vaults.io/observed-versions"') -eq $COUNT ]]
}
check "each gets its baseline" wait_until 30 canary_baselined
counts() { kubectl -n "$CNS" get deploy -o jsonpath="{range .items[*]}{.metadata.name}={.spec.template.metadata.annotations.${PREFIX//./\\.}/secret-reload-count}{\"\\n\"}{end}"; }
rolled_others() { counts | grep -v '^can-00=' | grep -c '=[0-9]' || true; }
srv kv put secret/waves/canary K="bad-$RANDOM" >/dev/null
BAD=v$(srv kv metadata get -format=json secret/waves/canary | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["current_version"])')
canary_rolled() { counts | grep -q '^can-00=1$'; }
check "the canary alone is rolled out" wait_until 15 canary_rolled
check "the others wait for it ($(rolled_others) rolled)" test "$(rolled_others)" = 0
held_events() { kubectl -n "$CNS" get events --field-selector reason=RolloutHeld -o name | wc -l; }
all_held() { (($(held_events) == COUNT - 1)); }
check "past its progress deadline it has failed: one RolloutHeld Event on each of the others" wait_until 60 all_held
check "the Event names the failed workload and the version ($BAD)" \
  bash -c "kubectl -n $CNS get events --field-selector reason=RolloutHeld -o jsonpath='{.items[0].message}' | grep -q 'vault:secret/data/waves/canary $BAD is held: the rollout of Deployment $CNS/can-00 for that version failed'"
metric() { curl -sf "http://$LISTEN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
held_metric() { [[ $(metric 'vault_secrets_reloader_rollouts{state="held"}') == $((COUNT - 1)) ]]; }
check "/metrics counts them held" wait_until 10 held_metric
sleep 6
check "three passes later none is rolled out ($(rolled_others)) and each was told once ($(held_events) Events)" \
  test "$(rolled_others):$(held_events)" = "0:$((COUNT - 1))"
kill -9 "$RELOADER_PID"
wait "$RELOADER_PID" 2>/dev/null || true
canary_daemon
check "after a kill -9 the new daemon holds them too" wait_until 20 held_metric
sleep 6
check "and rolls none of them out ($(rolled_others))" test "$(rolled_others)" = 0

say "an operator releases the hold on one held workload: all held by that version go"
kubectl -n "$CNS" annotate deploy/can-07 "$PREFIX/rollout-hold=release" >/dev/null
others_at() { [[ $(counts | grep -v '^can-00=' | grep -c "=$1\$") -eq $((COUNT - 1)) ]]; }
others_once() { others_at 1; }
check "each of the $((COUNT - 1)) others is rolled out once" wait_until 120 others_once
check "the release was used up by the rollout it let go" \
  test -z "$(annotation "$CNS" deployment/can-07 "$PREFIX/rollout-hold" meta)"

say "the fix: a newer version, and the canary healthy again"
srv kv put secret/waves/canary K="good-$RANDOM" >/dev/null
kubectl -n "$CNS" patch deploy/can-00 --type json >/dev/null \
  -p "[{\"op\":\"remove\",\"path\":\"/spec/template/metadata/labels/${NEVER//\//~1}\"}]"
fixed() { counts | grep -q '^can-00=2$' && others_at 2; }
check "the canary, then each of the others, is rolled out once more" wait_until 180 fixed
done_metric() { [[ $(metric 'vault_secrets_reloader_rollouts{state="held"}'):$(metric 'vault_secrets_reloader_rollouts{state="pending"}') == 0:0 ]]; }
check "nothing is held or pending after" wait_until 10 done_metric
stop_process "$RELOADER_PID"
kubectl delete namespace "$CNS" --wait=false >/dev/null 2>&1 || true
finish
