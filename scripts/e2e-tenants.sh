#!/usr/bin/env bash
# Hostile-tenant suite (issue 20): one namespace that wants to hurt the
# others cannot slow, flood, starve or spy on them through the reloader.
# Against the real control plane and OpenBao, with the RBAC of manifests/
# and manifests/vault-policy.hcl (plus one deny block, so some of evil's
# paths get 403), one daemon (2 s reloader period, paths limited with
# --allowed-secret-paths, renewals capped with --max-rollouts-per-pass):
#   - namespace evil: 50 Deployments naming 100 missing paths each (5,000),
#     5 naming 100 paths the policy denies (500), one naming a path of
#     another namespace, 20 renewing dynamic secrets at max-age 10 s / 1%;
#     300 idle connections and 8 /metrics clients that never read;
#   - namespace good: one Deployment using a KV secret, one renewing a
#     dynamic secret (max-age 20 s: due at 13.4 s, deadline 18 s).
# Checked: good's change is rolled within one period + 1 s on the pass
# where evil's paths are first seen, and again later; good's renewals come
# before their deadline; the audit log shows at most one login per pass and
# no request for the refused path; evil's Events are one per state change;
# the daemon's peak RSS stays under the manifests' memory limit. Then, with
# a 60 s period, check-now on good's workload rolls its change within 2 s,
# and a second request 1 s later is served too, 10 s after the first.
# Runs against the test environment of scripts/testenv.sh (or the current
# one with E2E_USE_CURRENT_ENV set). The daemon binary: RELOADER_BIN, else
# this repository's release build. E2E_KEEP_LOGS=DIR keeps the logs in DIR.
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
PERIOD=2 # --reloader-run-period, seconds
MISSING_WORKLOADS=50
DENIED_WORKLOADS=5
PER_WORKLOAD=100 # --max-secrets-per-workload's default
RENEWING=20
# The Deployment's memory limit in manifests/ (MiB).
MEMORY_LIMIT_MIB=$(sed -n 's/^ *memory: \([0-9]*\)Mi$/\1/p' manifests/04-deployment.yaml | tail -n 1)
EXTRA_POLICY='
path "secret/metadata/evil/forbidden/*" {
  capabilities = ["deny"]
}'
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_process "$pid"; done
  stop_process "${RELOADER_PID:-}"
  kubectl delete namespace evil good --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  if [[ -n ${E2E_KEEP_LOGS:-} ]]; then cp -r "$WORK" "$E2E_KEEP_LOGS"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# deployments NS NAME|MAX_AGE|REF,REF…  …: a v1 List of opted-in
# Deployments (0 replicas) with one env value per reference; MAX_AGE (the
# dynamic-secret-max-age, renewal percent after a slash) may be empty.
deployments() {
  python3 - "$PREFIX" "$@" <<'PYTHON'
import json, sys
prefix, namespace, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
items = []
for spec in specs:
    name, max_age, refs = spec.split("|", 2)
    notes = {prefix + "/reload-on-secret-change": "true"}
    if max_age:
        age, _, percent = max_age.partition("/")
        notes[prefix + "/dynamic-secret-max-age"] = age
        if percent:
            notes[prefix + "/dynamic-secret-renewal-percent"] = percent
    env = [{"name": f"S{i}", "value": ref} for i, ref in enumerate(refs.split(","))]
    items.append({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}, "annotations": notes},
                              "spec": {"containers": [{"name": "app",
                                                       "image": "registry.invalid/pause:3",
                                                       "env": env}]}}}})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PYTHON
}
# refs FORMAT N: N references, FORMAT taking the number.
refs() { local i out=; for ((i = 0; i < $2; i++)); do out+="${out:+,}$(printf "$1" "$i")"; done; echo "$out"; }

count() { local c; c=$(annotation "$1" "deployment/$2" "$PREFIX/secret-reload-count"); echo "${c:-0}"; }
count_is() { [[ $(count "$1" "$2") == "$3" ]]; }
count_above() { (($(count "$1" "$2") > $3)); }
has_state() { [[ -n $(annotation "$1" "deployment/$2" "$PREFIX/observed-versions" meta) ]]; }
metric() { curl -sf "http://$LISTEN/metrics" | awk -v m="vault_secrets_reloader_$1" '$1 == m { print $2 }'; }
watched_is() { [[ $(metric watched_workloads) == "$1" ]]; }
events() { kubectl -n "$1" get events --field-selector "reason=$2" -o name | wc -l; }
# rolled_within NTH SECONDS: good/app's NTH rollout was logged by the daemon
# within SECONDS of the mark (the daemon's clock and the mark's are the
# machine's: polling the API server under this load would add its own delay).
rolled_within() {
  python3 - "$WORK/reloader.out" "$1" "$T0" "$2" <<'PYTHON'
import re, sys
from datetime import datetime
log, nth, t0, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
stamps = [re.search(r"time=(\S+)", line).group(1) for line in open(log)
          if 'msg="reloaded Deployment good/app:' in line]
at = datetime.fromisoformat(stamps[nth - 1].replace("Z", "+00:00")).timestamp() * 1000
print("%.3f" % ((at - t0) / 1000))
sys.exit(not at - t0 <= limit * 1000)
PYTHON
}
passes() { grep -c 'reloader pass:' "$WORK/reloader.out" || true; }
# The requests made with the daemon's token or to log it in, from the audit log.
audited() {
  python3 - "$VAULT_AUDIT_LOG" "$AUDIT_FROM" <<'PYTHON'
import json, sys
path, start = sys.argv[1], int(sys.argv[2])
with open(path) as lines:
    for number, line in enumerate(lines, 1):
        if number < start:
            continue
        entry = json.loads(line)
        if entry.get("type") != "request":
            continue
        request = entry.get("request") or {}
        auth = entry.get("auth") or {}
        mine = "vault-secrets-reloader" in ",".join(auth.get("policies") or [])
        if mine or request.get("path", "").startswith("auth/kubernetes/login"):
            print(request.get("path", ""))
PYTHON
}

say "build and setup"
build_daemon
check "the daemon binary is there ($BIN)" test -x "$BIN"
srv secrets disable database >/dev/null 2>&1 || true
srv secrets enable database >/dev/null
check "a database role (no connection) for the dynamic references" \
  quiet srv write database/roles/app db_name=none default_ttl=1h max_ttl=2h
reloader_identity "$WORK" "$EXTRA_POLICY"
kubectl delete namespace evil good --ignore-not-found --wait=true >/dev/null
kubectl create namespace evil >/dev/null
kubectl create namespace good >/dev/null
srv kv put secret/good/db password="v-$RANDOM" >/dev/null
srv kv put secret/good/private token="v-$RANDOM" >/dev/null
srv kv put secret/evil/kv K="v-$RANDOM" >/dev/null
deployments good "app||vault:secret/data/good/db#password" \
  "dyn|20s|vault:database/creds/app#username" | kubectl apply -f - >/dev/null
AUDIT_FROM=$(($(wc -l <"${VAULT_AUDIT_LOG:?}") + 1))
LISTEN=127.0.0.1:$(free_port)
start_reloader "$BIN" "$WORK" "$LISTEN" --collector-sync-period 5s \
  --reloader-run-period "${PERIOD}s" --max-rollouts-per-pass 2 \
  --allowed-secret-paths 'secret/data/{namespace}/**,database/creds/*'
DAEMON=$RELOADER_PID
check "good's workload gets its baseline" wait_until 20 has_state good app

say "evil arrives, with abusive clients on the health port"
python3 scripts/health-abuse.py idle "$LISTEN" --count 300 --seconds 120 >"$WORK/idle.out" 2>&1 &
PIDS+=($!)
python3 scripts/health-abuse.py stuck "$LISTEN" --count 8 --seconds 120 >"$WORK/stuck.out" 2>&1 &
PIDS+=($!)
specs=()
for ((w = 0; w < MISSING_WORKLOADS; w++)); do
  specs+=("missing-$w||$(refs "vault:secret/data/evil/missing/$w/%d#K" "$PER_WORKLOAD")")
done
for ((w = 0; w < DENIED_WORKLOADS; w++)); do
  specs+=("denied-$w||$(refs "vault:secret/data/evil/forbidden/$w/%d#K" "$PER_WORKLOAD")")
done
specs+=("spy||vault:secret/data/good/private#token,vault:secret/data/evil/kv#K")
for ((w = 0; w < RENEWING; w++)); do specs+=("renew-$w|10s/1|vault:database/creds/app#username"); done
deployments evil "${specs[@]}" >"$WORK/evil.json"
kubectl apply -f "$WORK/evil.json" >/dev/null
# change_good NTH WHAT: changes good's secret; its NTH rollout comes within
# one period + 1 s (WHAT says when).
change_good() {
  local took rc=0
  mark
  srv kv put secret/good/db password="v-$RANDOM" >/dev/null
  check "good's change is rolled" wait_until 20 count_is good app "$1"
  took=$(rolled_within "$1" "$((PERIOD + 1))") || rc=$?
  check "within one period + 1 s of the change ($took s), $2" test "$rc" -eq 0
}
# At once: the passes that follow are the first to ask about evil's paths.
change_good 1 "while evil's paths are first asked"
# evil_done_after_good: from the daemon's log, good's first rollout came
# before evil's workloads were decided (the warning for its denied paths is
# said as they are).
evil_done_after_good() {
  python3 - "$WORK/reloader.out" "$WORK/reloader.err" <<'PYTHON'
import re, sys
def first(path, text):
    for line in open(path):
        if text in line:
            return re.search(r"time=(\S+)", line).group(1)
    return "~"  # never: later than any time
good = first(sys.argv[1], 'msg="reloaded Deployment good/app:')
evil = first(sys.argv[2], "the reloader's Vault policy refuses them (403)")
print(good, evil)
sys.exit(not good < evil)
PYTHON
}
check "evil was not done with its first lookups then (good rolled before evil was decided)" \
  evil_done_after_good
ALL=$((2 + MISSING_WORKLOADS + DENIED_WORKLOADS + 1 + RENEWING))
check "the daemon watches all $ALL workloads" wait_until 30 watched_is "$ALL"
left_for() { grep -c "ran out of --reloader-run-period with [0-9]* secrets of namespace evil (" "$WORK/reloader.err" || true; }
said_left() { (($(left_for) == 1)); }
check "the daemon says that evil's secrets go on next pass" wait_until 10 said_left

say "a while later"
# A workload whose every path is denied has no version to record: its
# Event says it was decided.
evil_done() {
  has_state evil "missing-$((MISSING_WORKLOADS - 1))" &&
    (($(events evil SecretAccessDenied) == DENIED_WORKLOADS))
}
check "evil's workloads are all decided within 60 s" wait_until 60 evil_done
sleep "$((3 * PERIOD))"
change_good 2 "once evil is known too"
check "one SecretNotFound Event per evil workload missing its paths ($(events evil SecretNotFound))" \
  test "$(events evil SecretNotFound)" -eq "$MISSING_WORKLOADS"
check "one SecretAccessDenied Event per workload denied its paths ($(events evil SecretAccessDenied))" \
  test "$(events evil SecretAccessDenied)" -eq "$DENIED_WORKLOADS"
check "one SecretPathRefused Event for the spy ($(events evil SecretPathRefused))" \
  test "$(events evil SecretPathRefused)" -eq 1
before=$(($(events evil SecretNotFound) + $(events evil SecretAccessDenied)))
not_found() { grep -c 'msg="Vault secret path secret/data/evil/missing/.* not found"' "$WORK/reloader.err" || true; }
lines_before=$(not_found)
check "one error line per missing path so far ($lines_before)" \
  test "$lines_before" -eq "$((MISSING_WORKLOADS * PER_WORKLOAD))"
sleep "$((5 * PERIOD))"
check "no Event again over five more passes" \
  test "$(($(events evil SecretNotFound) + $(events evil SecretAccessDenied)))" -eq "$before"
check "nor an error line again ($(not_found) after $lines_before)" test "$(not_found)" -eq "$lines_before"

say "renewals: good's before their deadline"
# Keep the run going until good's dynamic workload was renewed twice since
# its first-sight rollout.
check "good's dynamic workload is renewed again and again" wait_until 60 count_above good dyn 2
renewed=$(python3 - "$WORK/reloader.out" <<'PYTHON'
import re, sys
from datetime import datetime
times = []
for line in open(sys.argv[1]):
    if 'msg="reloaded Deployment good/dyn' in line:
        stamp = re.search(r"time=(\S+)", line).group(1).replace("Z", "+00:00")
        times.append(datetime.fromisoformat(stamp).timestamp())
gaps = [b - a for a, b in zip(times, times[1:])]
print(len(times), "%.1f" % max(gaps) if gaps else "none")
PYTHON
)
read -r rollouts widest <<<"$renewed"
check "good/dyn rolled $rollouts times, never more than 18 s apart (90% of 20 s; widest $widest s)" \
  python3 -c "import sys; sys.exit(not ($rollouts >= 3 and float('$widest') <= 18.0))"
check "evil's renewals happened too, capped per pass" count_above evil renew-0 0

say "the audit log, memory and health"
audited >"$WORK/audited"
logins=$(grep -c '^auth/kubernetes/login' "$WORK/audited" || true)
check "at most one login per pass ($logins logins, $(passes) passes)" test "$logins" -le "$(passes)"
check "running over the period was said once, not each time evil catches up" test "$(left_for)" -eq 1
check "the refused path of another namespace was never asked about" \
  not grep -q 'good/private' "$WORK/audited"
check "evil's denied paths were asked (the policy said 403)" grep -q '^secret/metadata/evil/forbidden/' "$WORK/audited"
peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DAEMON/status")
check "peak RSS $((peak / 1024)) MiB is under the manifests' limit of ${MEMORY_LIMIT_MIB} MiB" \
  test "$peak" -lt "$((MEMORY_LIMIT_MIB * 1024))"
check "/healthz answers, with the abusive clients still there" curl -sf -m 2 "http://$LISTEN/healthz" -o /dev/null
check "the daemon is still running" kill -0 "$DAEMON"
stop_process "$DAEMON"
for pid in "${PIDS[@]}"; do stop_process "$pid"; done
PIDS=()

say "check now: good's owner asks, with a 60 s reloader period"
: >"$WORK/reloader.out"
start_reloader "$BIN" "$WORK" "$LISTEN" --reloader-run-period 60s --namespaces good
DAEMON=$RELOADER_PID
first_pass() { grep -q 'reloader pass:' "$WORK/reloader.out"; }
check "the first pass is done" wait_until 20 first_pass
check_now() { kubectl -n good annotate --overwrite deploy/app "$PREFIX/check-now=$1" >/dev/null; }
reloads=$(count good app)
mark
srv kv put secret/good/db password="v-$RANDOM" >/dev/null
check_now "first-$RANDOM"
sleep 1
check_now "second-$RANDOM"
check "the check rolls good/app out" wait_until 10 count_is good app "$((reloads + 1))"
took=$(rolled_within 1 2) && rc=0 || rc=$?
check "within 2 s of the change and the annotation ($took s), not at the next pass" test "$rc" -eq 0
checks() { grep -c 'msg="check now:' "$WORK/reloader.out" || true; }
two_checks() { (($(checks) == 2)); }
check "the second annotation, 1 s later, is served too" wait_until 20 two_checks
gap=$(python3 - "$WORK/reloader.out" <<'PYTHON'
import re, sys
from datetime import datetime
times = [datetime.fromisoformat(re.search(r"time=(\S+)", l).group(1).replace("Z", "+00:00")).timestamp()
         for l in open(sys.argv[1]) if 'msg="check now:' in l]
print("%.1f" % (times[1] - times[0]))
PYTHON
)
check "the two checks come at least 10 s apart ($gap s)" python3 -c "import sys; sys.exit(not float('$gap') >= 10)"
said() { kubectl -n good get events --field-selector "involvedObject.name=app,reason=SecretsChecked" -o jsonpath='{.items[*].message}'; }
check "an Event says what they found: no new version" wait_until 5 grep -q "no new version to roll out" <(said)
check "and the secret's own change was rolled once" count_is good app "$((reloads + 1))"
stop_process "$DAEMON"
finish
