#!/usr/bin/env bash
# Dynamic-secret suite (issue 10): workloads using leased credentials
# (database/creds/…, >>vault:pki/issue/…) are rolled out before those
# credentials expire, and the daemon never reads them nor creates a lease.
# Against the real control plane and OpenBao, with the RBAC of manifests/
# and a least-privilege token (manifests/vault-policy.hcl plus read on the
# mounts' roles and tune), one daemon run (1 s periods) shared by:
#   1. database role app (default_ttl 20s, max_ttl 60s), max-age auto: rolled
#      out again and again at 67% of 20 s minus its jitter (< 2 s), never more
#      than 18 s apart; in daemon mode (either annotation) with the lifetime
#      60 s, from 67% minus the jitter up to the 90% deadline (the fleet of 20,
#      due at the same time, may hold them back: earliest deadline first);
#   2. PKI role web (ttl 30s) through `>>vault:pki/issue/web#…`: at 67% of
#      30 s, daemon mode or not (a certificate is not renewable);
#   3. a fixed max-age 30s overrides auto; a mount the token cannot see gives
#      one Warning Event DynamicSecretLifetimeUnknown and no rollout; a
#      dynamic reference without the annotation is only reported, with a hint;
#   4. kill -9 and a restart mid-window: every next-due time stays the same,
#      the next rollout comes at it, not earlier, not twice;
#   5. first sight: rolled out within the jitter window, or with
#      `first-sight: baseline` only after a full renewal time;
#   6. twenty workloads (fixed 60s: 6 s jitter window) created at once: their
#      first-sight rollouts and their renewals are spread over several passes;
#   7. the audit log: the daemon's token never requested */creds/*,
#      */issue/* nor */sign/*;
#   8. a KV change rolls out and resets the dynamic clock; a KV change just
#      before a renewal gives one rollout, not two;
#   9. --max-renewals-per-namespace-hour: past it, a namespace's renewals
#      wait, with one Warning Event.
# Rollout times are those at which a watch of the namespace saw the
# pod-template annotation secret-reload-count change (to the millisecond).
# Runs against the test environment of scripts/testenv.sh (or the current one
# with E2E_USE_CURRENT_ENV set). The daemon binary: RELOADER_BIN, else this
# repository's release build. E2E_KEEP_LOGS=DIR keeps the logs in DIR;
# E2E_DYNAMIC_RUN_FOR=SECONDS lengthens the shared run (default 95).
# Ends with "N passed, M failed"; exits non-zero when M > 0.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/harness.sh
source scripts/harness.sh

use_test_env
# Each section says when it began (this suite is about time).
say() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

PREFIX=$RELOADER_PREFIX
STATE_KEY=secrets-reloader.security.bank-vaults.io/observed-versions
DAEMON_MODE=secrets-webhook.security.bank-vaults.io/secret-init-daemon
LEGACY_DAEMON_MODE=vault.security.banzaicloud.io/vault-env-daemon
NS=dynamic
FLEET=20
RUN_FOR=${E2E_DYNAMIC_RUN_FOR:-95} # seconds of the shared daemon run
# The names the daemon uses (src/policy/metrics.rs, src/reloader/).
M_NEXT_DUE=vault_secrets_reloader_dynamic_secret_next_renewal_timestamp_seconds
M_RENEWALS=vault_secrets_reloader_dynamic_secret_renewals_total
M_UNKNOWN=vault_secrets_reloader_dynamic_secret_lifetime_unknown_workloads
UNKNOWN_REASON=DynamicSecretLifetimeUnknown
# What the daemon may read besides manifests/vault-policy.hcl: the roles and
# the effective TTLs of the two mounts (manifests/vault-policy.hcl's optional
# block). Nothing at all on hidden-db/.
EXTRA_POLICY='
path "database/roles/*" {
  capabilities = ["read"]
}
path "sys/mounts/database/tune" {
  capabilities = ["read"]
}
path "pki/roles/*" {
  capabilities = ["read"]
}
path "sys/mounts/pki/tune" {
  capabilities = ["read"]
}'
# The interpreter itself, not a version manager's shim: this suite runs
# Python a few hundred times and on time.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
WORK=$(mktemp -d)
DAEMON_PID=
SAMPLER_PID=

cleanup() {
  stop_process "$DAEMON_PID"
  stop_process "$SAMPLER_PID"
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  daemon_log_on_failure "$WORK"
  if [[ -n ${E2E_KEEP_LOGS:-} ]]; then cp -r "$WORK" "$E2E_KEEP_LOGS"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The Python half: Deployment manifests, the watch that records rollouts,
# the analysis of their times, /metrics and the audit log.
cat >"$WORK/dyn.py" <<'PYTHON'
import json, os, re, signal, subprocess, sys, time, urllib.request

PREFIX = os.environ["PREFIX"]
STATE_KEY = os.environ["STATE_KEY"]


def deployments(specs):
    """NAME|MAX_AGE|REFERENCE[;;REFERENCE…]|KEY=VALUE,… → a v1 List of
    opted-in Deployments (0 replicas: only their template matters here)."""
    items = []
    for spec in specs:
        name, max_age, ref, extra = (spec.split("|", 3) + [""])[:4]
        notes = {PREFIX + "/reload-on-secret-change": "true"}
        if max_age:
            notes[PREFIX + "/dynamic-secret-max-age"] = max_age
        for pair in filter(None, extra.split(",")):
            key, value = pair.split("=", 1)
            notes[key] = value
        items.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": notes},
                                  "spec": {"containers": [{"name": "app",
                                           "image": "registry.invalid/pause:3",
                                           "env": [{"name": "CRED%d" % i, "value": r}
                                                   for i, r in enumerate(ref.split(";;"))]}]}}}})
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def sample(namespace, out):
    """Watches the namespace's Deployments; appends `MS NAME COUNT R` to
    `out` whenever a workload's reload count or last rollout changes."""
    esc = lambda key: key.replace(".", "\\.")
    template = ('{.metadata.name}|{.spec.template.metadata.annotations.%s}|'
                '{.metadata.annotations.%s}{"\\n"}' % (esc(PREFIX + "/secret-reload-count"), esc(STATE_KEY)))
    child = None

    def stop(*_):
        if child:
            child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    seen = {}
    with open(out, "a") as sink:
        while True:
            child = subprocess.Popen(["kubectl", "-n", namespace, "get", "deployments", "-w",
                                      "-o", "jsonpath=" + template],
                                     stdout=subprocess.PIPE, text=True)
            for line in child.stdout:
                parts = line.rstrip("\n").split("|", 2)
                if len(parts) != 3:
                    continue
                name, count, state = parts
                r = re.search(r'"r":\s*(\d+)', state)
                now = (int(count or 0), int(r.group(1)) if r else 0)
                if seen.get(name) != now:
                    seen[name] = now
                    sink.write("%d %s %d %d\n" % (time.time() * 1000, name, *now))
                    sink.flush()
            child.wait()
            time.sleep(0.2)


def records(path):
    """The rollouts file: per workload, its [(seconds, count, r)]."""
    per = {}
    with open(path) as lines:
        for line in lines:
            ms, name, count, r = line.split()
            per.setdefault(name, []).append((int(ms) / 1000, int(count), int(r)))
    return per


def rollouts(path, name, after=0.0):
    """The times (s) at which NAME's count went up, after `after`."""
    times, last = [], None
    for t, count, _ in records(path).get(name, []):
        if last is not None and count > last and t > after:
            times.append(t)
        last = count if last is None or count > last else last
    return times


def intervals(path, name, after=0.0):
    times = rollouts(path, name, after)
    return [b - a for a, b in zip(times, times[1:])]


def metric(port, name, workload=""):
    """The value of metric NAME for the workload (label name="…"), or nothing."""
    text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=5).read().decode()
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] == name and (not workload or 'name="%s"' % workload in head):
            return value
    return ""


def fleet(path, prefix):
    """Per workload named PREFIX…, its rollout times: `NAME T1 T2 …`."""
    for name, rows in sorted(records(path).items()):
        if name.startswith(prefix):
            print(name, *("%.3f" % t for t in rollouts(path, name)))


def audit(path, start):
    """The paths the reloader's token requested, from line `start` on."""
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            if number < start:
                continue
            entry = json.loads(line)
            if entry.get("type") != "request":
                continue
            auth = entry.get("auth") or {}
            if "vault-secrets-reloader" in (auth.get("display_name") or "") or \
               "vault-secrets-reloader" in ",".join(auth.get("policies") or []):
                print(entry["request"]["path"])


def passes(log, pattern, round_):
    """In how many reloader passes the workloads whose names match `pattern`
    had their `round_`-th rollout (1: the first), from the daemon's log: a
    `reloaded Deployment NS/NAME: …` line belongs to the pass whose
    `reloader pass:` line follows it."""
    number, seen, which = 0, {}, set()
    with open(log, errors="replace") as lines:
        for line in lines:
            if "reloader pass:" in line:
                number += 1
                continue
            found = re.search(r"reloaded Deployment [^/ ]+/(%s):" % pattern, line)
            if found:
                name = found.group(1)
                seen[name] = seen.get(name, 0) + 1
                if seen[name] == round_:
                    which.add(number)
    return len(which)


command, args = sys.argv[1], sys.argv[2:]
if command == "deployments":
    deployments(args)
elif command == "sample":
    sample(*args)
elif command == "rollouts":
    print(" ".join("%.3f" % t for t in rollouts(args[0], args[1], float(args[2]) if len(args) > 2 else 0)))
elif command == "intervals":
    print(" ".join("%.3f" % t for t in intervals(args[0], args[1], float(args[2]) if len(args) > 2 else 0)))
elif command == "metric":
    print(metric(*args))
elif command == "fleet":
    fleet(*args)
elif command == "audit":
    audit(args[0], int(args[1]))
elif command == "passes":
    print(passes(args[0], args[1], int(args[2])))
PYTHON
export PREFIX STATE_KEY
dyn() { "$PYTHON" "$WORK/dyn.py" "$@" || echo "dyn.py $1: failed" >&2; }
apply() { dyn deployments "$@" | kubectl -n "$NS" apply -f - >/dev/null; }

now_s() { echo "$EPOCHREALTIME"; }
# py EXPR: a Python expression's value (for float arithmetic and checks).
py() { "$PYTHON" -c "print($1)" 2>/dev/null || echo error; }
# holds EXPR: the Python expression is true.
holds() { [[ $(py "$1") == True ]]; }

ROLLOUTS=$WORK/rollouts
# count NAME: its reload count as last seen by the watch.
count() { awk -v n="$1" '$2 == n { c = $3 } END { print c + 0 }' "$ROLLOUTS"; }
count_is() { [[ $(count "$1") == "$2" ]]; }
# last_r NAME: the last rollout the state annotation records (0: none).
last_r() { awk -v n="$1" '$2 == n { r = $4 } END { print r + 0 }' "$ROLLOUTS"; }
has_r() { [[ $(last_r "$1") != 0 ]]; }
rollout_times() { dyn rollouts "$ROLLOUTS" "$@"; }
gaps() { dyn intervals "$ROLLOUTS" "$@"; }
metric() { dyn metric "$HEALTH_PORT" "$@" 2>/dev/null || true; }
next_due() { metric "$M_NEXT_DUE" "$1"; }
healthy() { curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$HEALTH_PORT/healthz"; }
log_has() { grep -qE -- "$1" "$WORK/reloader.out" "$WORK/reloader.err"; }
# events REASON NAME: the messages of the Events REASON on deployment NAME.
events() {
  kubectl -n "$NS" get events -o json | "$PYTHON" -c '
import json, sys
for e in json.load(sys.stdin)["items"]:
    o = e["involvedObject"]
    if e["reason"] == sys.argv[1] and o["kind"] == "Deployment" and o["name"] == sys.argv[2]:
        print(e["type"], e["message"])' "$1" "$2"
}
has_event() { events "$1" "$2" | grep -E -- "$3" >/dev/null; }
# all_in LO HI VALUES...: at least one value, each within [LO, HI].
all_in() {
  local lo=$1 hi=$2
  shift 2
  (($# > 0)) && holds "all($lo <= v <= $hi for v in [$(IFS=,; echo "$*")])"
}
# renews NAME LIFETIME MIN_GAPS [MAX]: NAME's rollouts came at least
# MIN_GAPS+1 times, each gap from 67% of LIFETIME minus its jitter (< 10%)
# less 1 s (the state's whole seconds) up to MAX, by default the 90%
# deadline plus 1 s (the spread may hold a due renewal back until then,
# earliest deadline first), and, over 3 gaps or more, the median gap at 67%
# (up to 2 s later: passes of 1 s on a loaded machine).
renews() {
  local name=$1 life=$2 min=$3 lo hi mid g n
  lo=$(py "round($life * 0.67 - $life / 10 - 1, 3)")
  hi=${4:-$(py "round($life * 0.9 + 1, 3)")}
  mid=$(py "round($life * 0.67 + 2, 3)")
  read -r -a g <<<"$(gaps "$name")"
  n=${#g[@]}
  check "$name: $((n + 1)) rollouts, $n gaps each in [$lo, $hi] s (gaps: ${g[*]:-none})" \
    eval "((n >= min)) && all_in $lo $hi ${g[*]:-}"
  ((min < 3)) && return
  check "$name: the median gap is at 67% of ${life} s, at most $mid s" \
    eval "((n > 0)) && holds \"sorted([$(IFS=,; echo "${g[*]:-}")])[($n - 1) // 2] <= $mid\""
}

start() {
  HEALTH_PORT=$(free_port)
  start_reloader "$BIN" "$WORK" "127.0.0.1:$HEALTH_PORT" \
    --collector-sync-period 1s --reloader-run-period 1s --log-level debug "$@"
  DAEMON_PID=$RELOADER_PID
  check "the daemon answers /healthz" wait_until 20 healthy
}

say "build"
build_daemon
check "the daemon binary is there ($BIN)" test -x "$BIN"

say "setup: OpenBao mounts (no database, no external system), identity, workloads"
for mount in database pki hidden-db; do srv secrets disable "$mount" >/dev/null 2>&1 || true; done
srv secrets enable database >/dev/null
srv secrets enable -path=hidden-db database >/dev/null
check "OpenBao stores database role app without a connection" \
  quiet srv write database/roles/app db_name=none default_ttl=20s max_ttl=60s
check "and the same on hidden-db/, the mount the daemon cannot see" \
  quiet srv write hidden-db/roles/app db_name=none default_ttl=20s max_ttl=60s
role_ttls() { srv read -format=json "$1" | "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d[sys.argv[1]], d["max_ttl"])' "$2"; }
check "database/roles/app reads back default_ttl 20, max_ttl 60" test "$(role_ttls database/roles/app default_ttl)" = "20 60"
srv secrets enable pki >/dev/null
srv secrets tune -max-lease-ttl=8760h pki >/dev/null
check "a PKI root" quiet srv write pki/root/generate/internal common_name=example.com ttl=8760h 2>/dev/null
check "PKI role web with ttl 30s" \
  quiet srv write pki/roles/web allowed_domains=example.com allow_subdomains=true ttl=30s
check "pki/roles/web reads back ttl 30" test "$(role_ttls pki/roles/web ttl | cut -d' ' -f1)" = 30

reloader_identity "$WORK" "$EXTRA_POLICY"
SA_VAULT_TOKEN=$(srv write -field=token auth/kubernetes/login role="$RELOADER_SA" jwt="$(cat "$WORK/token")")
status_of() { curl -s -o /dev/null -w '%{http_code}' -H "X-Vault-Token: $SA_VAULT_TOKEN" "$VAULT_ADDR/v1/$1"; }
check "the daemon's token reads database/roles/app" test "$(status_of database/roles/app)" = 200
check "and sys/mounts/pki/tune" test "$(status_of sys/mounts/pki/tune)" = 200
check "and the ui/mounts of database/creds/app" test "$(status_of sys/internal/ui/mounts/database/creds/app)" = 200
check "but gets 403 on database/creds/app" test "$(status_of database/creds/app)" = 403
check "and 403 on pki/issue/web" test "$(status_of pki/issue/web)" = 403
check "and 403 on the ui/mounts of hidden-db/creds/app" test "$(status_of sys/internal/ui/mounts/hidden-db/creds/app)" = 403
# From here on, the audit log holds only what the daemon sends as itself
# (the checks above asked only metadata and roles).
AUDIT_FROM=$(($(wc -l <"${VAULT_AUDIT_LOG:?}") + 1))

kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
DB='vault:database/creds/app#username'
KV='vault:secret/data/dynamic/kv#K'
srv kv metadata delete secret/dynamic/kv >/dev/null
srv kv put secret/dynamic/kv K="v-$RANDOM" >/dev/null
PKI='>>vault:pki/issue/web#certificate#{"common_name":"a.example.com"}'
apply "db|auto|$DB" "db-daemon|auto|$DB|$DAEMON_MODE=true" "db-legacy|auto|$DB|$LEGACY_DAEMON_MODE=true" \
  "pki|auto|$PKI" "pki-daemon|auto|$PKI|$DAEMON_MODE=true" "fixed|30s|$DB" \
  "hidden|auto|vault:hidden-db/creds/app#username" "plain||$DB" "kvdyn|auto|$KV;;$DB"
FLEET_SPECS=()
for ((i = 1; i <= FLEET; i++)); do FLEET_SPECS+=("$(printf 'fleet-%02d' "$i")|60s|$DB"); done
: >"$ROLLOUTS"
"$PYTHON" "$WORK/dyn.py" sample "$NS" "$ROLLOUTS" 2>"$WORK/sampler.err" &
SAMPLER_PID=$!
check "the watch records the 9 workloads" wait_until 20 eval '(($(awk "{print \$2}" "$ROLLOUTS" | sort -u | wc -l) >= 9))'

say "one daemon run of ${RUN_FOR} s: 1 s periods"
START=$(now_s)
start
apply "${FLEET_SPECS[@]}"
mark

say "6a. twenty workloads created at once (60s: jitter window 6 s): first sight spread"
fleet_rolled() {
  local i
  for ((i = 1; i <= FLEET; i++)); do count_is "$(printf 'fleet-%02d' "$i")" 1 || return 1; done
}
timed "each is rolled out once within 6 s + 4 s of their creation" 10 fleet_rolled
dyn fleet "$ROLLOUTS" fleet- >"$WORK/fleet1"
n=$(dyn passes "$WORK/reloader.out" 'fleet-[0-9]+' 1)
spread=$(awk 'NF >= 2 { print $2 }' "$WORK/fleet1" | sort -n | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%.3f", b - a }')
check "in several passes ($n passes), not one" test "$n" -ge 3
check "spread over the window: first to last at least 2 s apart ($spread s)" holds "$spread >= 2"

say "3. an unreadable mount, no fallback; a dynamic reference without the annotation"
check "Warning Event $UNKNOWN_REASON on hidden" wait_until 15 has_event "$UNKNOWN_REASON" hidden '^Warning '
check "naming the permission missing ($(events "$UNKNOWN_REASON" hidden | head -n 1 | cut -c1-160))" \
  has_event "$UNKNOWN_REASON" hidden 'missing hidden-db/creds/app: some access under the mount of hidden-db/creds/app .*sys/internal/ui/mounts/hidden-db/creds/app was refused \(403\)'
check "metric $M_UNKNOWN is 1" wait_until 5 eval '[[ $(metric "$M_UNKNOWN") == 1 ]]'
check "the reference of plain (no max-age) is reported with a hint naming $PREFIX/dynamic-secret-max-age" \
  wait_until 10 log_has "database/creds/app cannot be watched.*$PREFIX/dynamic-secret-max-age"

say "4. kill -9 and restart mid-window"
# Mid-window: db rolled out twice already and its next rollout >= 6 s away.
mid_window() {
  local due
  (($(count db) >= 2)) || return 1
  due=$(next_due db)
  [[ -n $due ]] && holds "$due - $(now_s) >= 6"
}
check "db's next rollout is 6 s away or more (gauge $M_NEXT_DUE)" wait_until 30 mid_window
DYNAMIC_NAMES=(db db-daemon db-legacy pki pki-daemon fixed fleet-01 fleet-20)
declare -A DUE_BEFORE COUNT_BEFORE
for name in "${DYNAMIC_NAMES[@]}"; do
  DUE_BEFORE[$name]=$(next_due "$name")
  COUNT_BEFORE[$name]=$(count "$name")
done
disown "$DAEMON_PID" # no "Killed" from bash
kill -KILL "$DAEMON_PID"
KILLED=$(now_s)
check "the daemon is gone (kill -9)" wait_until 5 not kill -0 "$DAEMON_PID" 2>/dev/null
sleep 2
start
all_due() { local n; for n in "${DYNAMIC_NAMES[@]}"; do [[ -n $(next_due "$n") ]] || return 1; done; }
check "after the restart the daemon knows every next-due time" wait_until 10 all_due
# A workload rolled out since the kill (its due time passed while the daemon
# was down) has a new due time; the others must keep theirs to the second.
for name in "${DYNAMIC_NAMES[@]}"; do
  after=$(next_due "$name")
  if [[ $(count "$name") != "${COUNT_BEFORE[$name]}" ]]; then
    check "$name: rolled out since the kill, due ${DUE_BEFORE[$name]}" true
  else
    check "$name: next due unchanged (${DUE_BEFORE[$name]:-none} before, ${after:-none} after)" \
      holds "${after:-0} == ${DUE_BEFORE[$name]:--1}"
  fi
done
DB_DUE=${DUE_BEFORE[db]}
check "db is rolled out after the restart" wait_until 20 eval '(($(count db) > COUNT_BEFORE[db]))'
DB_AT=$(rollout_times db "$KILLED" | awk '{print $1}')
check "at its due time, not earlier (at ${DB_AT:-none}, due ${DB_DUE:-none})" \
  holds "${DB_AT:-None} >= ${DB_DUE:-None} - 1"
# Due at 67% minus the jitter (0-2 s), so the 90% deadline is 4.6-6.6 s
# later: the spread may hold it back until then, not after.
check "nor after its deadline (at ${DB_AT:-none}, due ${DB_DUE:-none}, deadline at most 6.6 s later)" \
  holds "${DB_AT:-None} <= ${DB_DUE:-None} + 6.6 + 1"
sleep 3
n=$(rollout_times db "$KILLED" | awk -v due="${DB_DUE:-0}" '{ for (i = 1; i <= NF; i++) if ($i <= due + 6) n++ } END { print n + 0 }')
check "once, not twice (rollouts from the kill to 6 s after the due time: $n)" test "$n" -eq 1
early=
for name in "${DYNAMIC_NAMES[@]}"; do
  first=$(rollout_times "$name" "$KILLED" | awk '{print $1}')
  [[ -z $first ]] || holds "$first >= ${DUE_BEFORE[$name]:-None} - 1" || early+=" $name"
done
check "no workload rolled out before its due time after the restart (early:${early:- none})" test -z "$early"

say "5. first sight"
apply "fs-rollout|auto|$DB" "fs-baseline|auto|$DB|$PREFIX/dynamic-secret-first-sight=baseline"
mark
FS_AT=$(now_s)
timed "without first-sight: rolled out within its jitter window (2 s) + 4 s" 6 count_is fs-rollout 1
timed "with first-sight: baseline: its state records a last rollout" 6 has_r fs-baseline
check "that is now (r $(last_r fs-baseline), created $FS_AT)" holds "abs($(last_r fs-baseline) - $FS_AT) <= 5"
check "and it is not rolled out for 67% of 20 s minus 2 s of jitter (checked up to 10.5 s)" \
  not within 10.5 count_is fs-baseline 1
timed "then it is rolled out (within 13.4 s + 3 s of its creation)" 16.4 count_is fs-baseline 1

say "8. a KV change resets the dynamic clock; with a renewal due, one rollout"
# due_in NAME LO HI: NAME's next renewal is LO to HI seconds away.
due_in() { local due; due=$(next_due "$1"); [[ -n $due ]] && holds "$2 <= $due - $(now_s) <= $3"; }
check "kvdyn (a KV secret and database/creds/app) is mid-window (next renewal 4 to 7 s away)" \
  wait_until 20 due_in kvdyn 4 7
DUE_OLD=$(next_due kvdyn) KV_COUNT=$(count kvdyn)
srv kv put secret/dynamic/kv K="v-$RANDOM" >/dev/null
mark
timed "the KV change rolls it out (within 4 s)" 4 count_is kvdyn $((KV_COUNT + 1))
KV_AT=$(rollout_times kvdyn | awk '{print $NF}')
moved() { local due; due=$(next_due kvdyn); [[ -n $due ]] && holds "$due >= $DUE_OLD + 3"; }
check "its next renewal moves 3 s later or more (was $DUE_OLD)" wait_until 4 moved
DUE_NEW=$(next_due kvdyn)
check "to 67% of 20 s minus its jitter after that rollout (due $DUE_NEW, rolled ${KV_AT:-never})" \
  holds "10.4 <= $DUE_NEW - ${KV_AT:-0} <= 14"
check "its renewal comes then, not at the old due time ($DUE_OLD)" \
  wait_until 20 count_is kvdyn $((KV_COUNT + 2))
RENEWED_AT=$(rollout_times kvdyn | awk '{print $NF}')
check "at $RENEWED_AT: from its due time $DUE_NEW to the 90% deadline (18 s after ${KV_AT:-never})" \
  holds "$DUE_NEW - 1 <= $RENEWED_AT <= ${KV_AT:-0} + 18 + 1"
check "its next renewal is 1 s away or more" wait_until 20 due_in kvdyn 1 100
# The change is written (by one quick request) 0.4 s before the due time: no
# pass can see the renewal due without the change, so one rollout is right
# whichever pass sees them; most often the same one.
DUE=$(next_due kvdyn) KV_COUNT=$(count kvdyn)
sleep "$(py "max(0, $DUE - 0.4 - $(now_s))")"
curl -sf -o /dev/null -H "X-Vault-Token: $VAULT_TOKEN" -X POST -d "{\"data\":{\"K\":\"v-$RANDOM\"}}" \
  "$VAULT_ADDR/v1/secret/data/dynamic/kv"
WRITTEN=$(now_s)
mark
check "a KV change written before the renewal's due time ($(py "round($DUE - $WRITTEN, 3)") s before)" holds "$WRITTEN < $DUE"
timed "rolled out (within 4 s)" 4 count_is kvdyn $((KV_COUNT + 1))
check "once: no second rollout for the renewal (after 6 s)" stays 6 count_is kvdyn $((KV_COUNT + 1))

say "waiting for the end of the run ($RUN_FOR s after its start)"
left=$(py "max(0, int($START + $RUN_FOR - $(now_s)))")
sleep "$left"
stop_process "$SAMPLER_PID"
SAMPLER_PID=

say "1. database/creds/app (role: default_ttl 20s, max_ttl 60s)"
renews db 20 5
check "never more than 18 s apart (the 90% deadline)" all_in 0 18 $(gaps db)
# The daemon-mode workloads are due when the fleet's renewals are (same
# lifetime): earliest deadline first may hold them back, up to their deadline
# (90% of 60 s); their Events show the lifetime they were given.
renews db-daemon 60 1 55
renews db-legacy 60 1 55
check "db's Event says why: database/creds/app, lifetime 20s" \
  has_event SecretsReloaded db 'database/creds/app.*lifetime 20s[,)]'
check "db-daemon's Event: lifetime 60s (daemon mode: max_ttl)" \
  has_event SecretsReloaded db-daemon 'database/creds/app.*lifetime (60s|1m|1m0s)[,)]'
check "db-legacy's Event too (the legacy daemon-mode annotation)" \
  has_event SecretsReloaded db-legacy 'database/creds/app.*lifetime (60s|1m|1m0s)[,)]'
check "pki-daemon's Event: lifetime 30s (a certificate is not renewed)" \
  has_event SecretsReloaded pki-daemon 'pki/issue/web.*lifetime 30s[,)]'
renewals=$(metric "$M_RENEWALS" db)
check "metric $M_RENEWALS for db counts renewals (${renewals:-none})" holds "${renewals:-0} >= 1"

say "2. pki/issue/web (role: ttl 30s)"
renews pki 30 3
renews pki-daemon 30 3
check "pki's Event: pki/issue/web, lifetime 30s" has_event SecretsReloaded pki 'pki/issue/web.*lifetime 30s[,)]'

say "3. fixed max-age 30s over auto (20s); the unreadable mount; the plain reference"
renews fixed 30 3
check "fixed's Event: lifetime 30s" has_event SecretsReloaded fixed 'database/creds/app.*lifetime 30s[,)]'
check "hidden was never rolled out" count_is hidden 0
n=$(events "$UNKNOWN_REASON" hidden | wc -l)
check "one Warning Event for it per daemon run (2 runs), not one per pass ($n)" eval '((n >= 1 && n <= 2))'
check "plain was never rolled out" count_is plain 0

say "6b. the fleet's renewals (60s: 67% = 40.2 s): spread too"
dyn fleet "$ROLLOUTS" fleet- >"$WORK/fleet2"
late=$(awk 'NF < 3 || $3 - $2 < 33.2 || $3 - $2 > 55 { printf " %s", $1 }' "$WORK/fleet2")
check "each was renewed 67% - 10% to 90% of 60 s (+1 s) after its first rollout (not:${late:- none})" \
  eval '[[ -z $late ]] && (($(wc -l <"$WORK/fleet2") == FLEET))'
n=$(dyn passes "$WORK/reloader.out" 'fleet-[0-9]+' 2)
check "in several passes ($n passes), not one" test "$n" -ge 3

say "7. least privilege, from the audit log"
dyn audit "$VAULT_AUDIT_LOG" "$AUDIT_FROM" | sort | uniq -c | sort -rn >"$WORK/paths"
check "the daemon's requests appear in the audit log" grep -q 'database/roles/app' "$WORK/paths"
asked=$(awk '$2 !~ /^sys\// { printf " %s", $2 }' "$WORK/paths")
check "it never requested */creds/*, */issue/* nor */sign/* (outside sys/ it asked:${asked:- nothing})" \
  not grep -E ' [^ ]*/(creds|issue|sign)/' <(grep -v ' sys/' "$WORK/paths")
check "no token in the logs" not grep -qE "$SA_VAULT_TOKEN|$(cut -c1-40 "$WORK/token")" "$WORK/reloader.out" "$WORK/reloader.err"
stop_process "$DAEMON_PID"
DAEMON_PID=

say "9. --max-renewals-per-namespace-hour 2: a namespace renewing every 6.7 s is held after 2"
CAPPED=$NS-capped
kubectl delete namespace "$CAPPED" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$CAPPED" >/dev/null
dyn deployments "capped|10s|$DB" | kubectl -n "$CAPPED" apply -f - >/dev/null
start --namespaces "$CAPPED" --max-renewals-per-namespace-hour 2
capped_is() { [[ $(annotation "$CAPPED" deployment/capped "$PREFIX/secret-reload-count") == "$1" ]]; }
check "its first sight and one renewal roll it out (count 2)" wait_until 20 capped_is 2
check "a Warning Event says its renewals are held" wait_until 15 bash -c \
  "kubectl -n '$CAPPED' get events --field-selector reason=RenewalsCapped -o name | grep -q ."
check "and no third rollout (after 8 s more, past its next due time)" stays 8 capped_is 2
check "the warning is said once" test "$(grep -c 'renewal is held: namespace' "$WORK/reloader.err")" -eq 1
stop_process "$DAEMON_PID"
DAEMON_PID=
kubectl delete namespace "$CAPPED" --wait=false >/dev/null
finish
