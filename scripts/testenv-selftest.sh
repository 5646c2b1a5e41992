#!/usr/bin/env bash
# Proves that the local test environment (scripts/testenv.sh up) is made of
# real parts: controllers that act, a scheduler and KWOK's fake nodes on which
# pods that tolerate their taint run, TokenRequest tokens that OpenBao and
# HashiCorp Vault verify through the Kubernetes auth method, Vault policies
# that are enforced, and audit logs that record what a client asked.
# Prints one ok/FAIL line per check and ends with "N passed, M failed".
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_lines=$("$REPO/scripts/testenv.sh" env) || {
  echo "testenv-selftest: the test environment is not up (scripts/testenv.sh up)" >&2
  exit 1
}
eval "$env_lines"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

NS=testenv-selftest-$$
ROLE=testenv-selftest
POLICY=testenv-selftest-metadata
SECRET=testenv-selftest
SA=selftest-sa
passed=0
failed=0

ok() { printf 'ok   - %s\n' "$1"; passed=$((passed + 1)); }
fail() {
  printf 'FAIL - %s\n' "$1"
  [[ -n ${2:-} ]] && printf '       %s\n' "$2"
  failed=$((failed + 1))
}
# The server the checks of sections 4 to 6 run against: `use_server openbao`
# or `use_server vault` sets its name, address, root token and audit log.
use_server() {
  SERVER=$1
  case $1 in
    openbao) ADDR=$VAULT_ADDR ROOT=$VAULT_TOKEN AUDIT=$VAULT_AUDIT_LOG CLI=bao ;;
    vault) ADDR=$HASHICORP_VAULT_ADDR ROOT=$HASHICORP_VAULT_TOKEN AUDIT=$HASHICORP_VAULT_AUDIT_LOG CLI=vault ;;
  esac
}
# Root token for setup only; checks use the tokens they obtain.
bao_root() {
  env -u VAULT_NAMESPACE -u BAO_NAMESPACE BAO_ADDR="$ADDR" BAO_TOKEN="$ROOT" VAULT_ADDR="$ADDR" \
    VAULT_TOKEN="$ROOT" "$CLI" "$@"
}

# wait_for SECONDS cmd...: poll until cmd succeeds or the deadline passes.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.3
  done
}

count() { # kind label-selector -> number of objects in $NS
  kubectl -n "$NS" get "$1" -l "$2" -o name 2>/dev/null | grep -c . || true
}
at_least() { (($(count "$1" "$2") >= $3)); }
# pods label-selector -> "name node ready" per pod in $NS that is not being
# deleted, sorted by name.
pods() {
  kubectl -n "$NS" get pods -l "$1" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    if p["metadata"].get("deletionTimestamp"):
        continue
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    print(p["metadata"]["name"], p["spec"].get("nodeName") or "-", ready)' | sort
}
words() { paste -sd " " -; } # lines -> one line
all_ready() { # label-selector n: exactly n pods, all Ready
  local out
  out=$(pods "$1")
  [[ $(grep -c . <<<"$out") -eq $2 && $(grep -c ' True$' <<<"$out") -eq $2 ]]
}

cleanup() {
  [[ -z ${watch_pid:-} ]] || kill "$watch_pid" 2>/dev/null || true
  rm -f "${errfile:-}" "${watchfile:-}"
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  local server
  for server in openbao vault; do
    use_server "$server"
    bao_root delete "auth/kubernetes/role/$ROLE" >/dev/null 2>&1 || true
    bao_root policy delete "$POLICY" >/dev/null 2>&1 || true
    bao_root kv metadata delete "secret/$SECRET" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

kubectl create namespace "$NS" >/dev/null

# 1. Deployment -> ReplicaSet; a pod template change -> a second ReplicaSet.
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: registry.invalid/none:1}]
EOF
if ! wait_for 30 at_least replicasets app=web 1; then
  fail "deployment gets a ReplicaSet" "no ReplicaSet after 30 s"
else
  kubectl -n "$NS" patch deployment web --type=merge \
    -p '{"spec":{"template":{"metadata":{"annotations":{"selftest/rev":"2"}}}}}' >/dev/null
  if wait_for 30 at_least replicasets app=web 2; then
    ok "deployment gets a ReplicaSet; a pod template change gets a second one"
  else
    fail "pod template change gets a second ReplicaSet" "$(count replicasets app=web) ReplicaSet(s) after 30 s"
  fi
fi

# 2. DaemonSet and StatefulSet -> ControllerRevisions.
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: registry.invalid/none:1}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: registry.invalid/none:1}]
EOF
if wait_for 30 at_least controllerrevisions app=agent 1 && wait_for 30 at_least controllerrevisions app=db 1; then
  ok "daemonset and statefulset get ControllerRevisions"
else
  fail "daemonset and statefulset get ControllerRevisions" \
    "daemonset: $(count controllerrevisions app=agent), statefulset: $(count controllerrevisions app=db)"
fi

# 3. Pods: the scheduler places pods that tolerate the fake nodes' taint,
# KWOK makes them Running and Ready, and the controllers see them; pods that
# do not tolerate it stay Pending (the workloads above).
TOLERATE='tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]'
FAKE_NODES=$(kubectl get nodes -l type=kwok -o name | sed 's#^node/##' | sort)
unschedulable() { # the web pod: the scheduler found no node for it
  kubectl -n "$NS" get pods -l app=web -o \
    jsonpath='{.items[0].status.conditions[?(@.type=="PodScheduled")].reason}' | grep -qx Unschedulable
}
if wait_for 30 unschedulable && [[ $(count pods app=agent) -eq 0 ]]; then
  ok "workloads that do not tolerate the fake nodes' taint get no running pod (Deployment: Unschedulable; DaemonSet: no pod)"
else
  fail "workloads that do not tolerate the taint get no running pod" "$(pods app=web); DaemonSet pods: $(count pods app=agent)"
fi
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: run}
spec:
  replicas: 2
  selector: {matchLabels: {app: run}}
  template:
    metadata: {labels: {app: run}}
    spec:
      $TOLERATE
      containers: [{name: c, image: registry.invalid/none:1}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent-run}
spec:
  selector: {matchLabels: {app: agent-run}}
  template:
    metadata: {labels: {app: agent-run}}
    spec:
      $TOLERATE
      containers: [{name: c, image: registry.invalid/none:1}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db-run}
spec:
  serviceName: db-run
  replicas: 3
  selector: {matchLabels: {app: db-run}}
  template:
    metadata: {labels: {app: db-run}}
    spec:
      $TOLERATE
      containers: [{name: c, image: registry.invalid/none:1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: never}
spec:
  replicas: 1
  selector: {matchLabels: {app: never}}
  template:
    metadata: {labels: {app: never, vault-secrets-reloader.test/never-ready: "true"}}
    spec:
      $TOLERATE
      containers: [{name: c, image: registry.invalid/none:1}]
EOF
if kubectl -n "$NS" wait --for=condition=Available deployment/run --timeout=30s >/dev/null 2>&1 &&
  all_ready app=run 2; then
  ok "a Deployment of 2 replicas becomes Available (2 pods Running and Ready)"
else
  fail "a Deployment of 2 replicas becomes Available" "$(pods app=run)"
fi
before=$(pods app=run | cut -d' ' -f1)
kubectl -n "$NS" rollout restart deployment/run >/dev/null
replaced() { # 2 Ready pods, none of them one of those before, and those gone
  all_ready app=run 2 &&
    [[ -z $(comm -12 <(echo "$before") <(kubectl -n "$NS" get pods -l app=run -o name | sed 's#^pod/##' | sort)) ]]
}
if kubectl -n "$NS" rollout status deployment/run --timeout=30s >/dev/null 2>&1 && wait_for 30 replaced; then
  ok "kubectl rollout restart replaces its pods ($(words <<<"$before") -> $(pods app=run | cut -d' ' -f1 | words))"
else
  fail "kubectl rollout restart replaces its pods" "before: $(words <<<"$before"); now: $(pods app=run | words)"
fi
one_per_node() {
  all_ready app=agent-run "$(grep -c . <<<"$FAKE_NODES")" &&
    [[ $(pods app=agent-run | cut -d' ' -f2 | sort) == "$FAKE_NODES" ]]
}
if wait_for 30 one_per_node; then
  ok "a DaemonSet has one pod per fake node ($(words <<<"$FAKE_NODES"))"
else
  fail "a DaemonSet has one pod per fake node" "nodes: $(words <<<"$FAKE_NODES"); pods: $(pods app=agent-run | words)"
fi
# A StatefulSet's rolling update, watched event by event: the pods move to
# the new revision from the highest ordinal down, each Ready before the next
# is replaced, so never more than one pod is not Ready.
watchfile=$(mktemp)
if kubectl -n "$NS" rollout status statefulset/db-run --timeout=30s >/dev/null 2>&1 &&
  wait_for 10 all_ready app=db-run 3; then
  kubectl -n "$NS" get pods -l app=db-run --watch --output-watch-events -o json >"$watchfile" 2>/dev/null &
  watch_pid=$!
  wait_for 10 test -s "$watchfile" || true
  kubectl -n "$NS" patch statefulset db-run --type=merge \
    -p '{"spec":{"template":{"metadata":{"annotations":{"selftest/rev":"2"}}}}}' >/dev/null
  kubectl -n "$NS" rollout status statefulset/db-run --timeout=60s >/dev/null 2>&1 || true
  wait_for 10 all_ready app=db-run 3 || true
  sleep 0.5 # the watch's last events
  kill "$watch_pid" 2>/dev/null || true
  wait "$watch_pid" 2>/dev/null || true
  watch_pid=
  revision=$(kubectl -n "$NS" get statefulset db-run -o jsonpath='{.status.updateRevision}')
  if verdict=$(python3 - "$watchfile" "$revision" <<'EOF'
import json, sys
text, rev = open(sys.argv[1]).read(), sys.argv[2]
dec, i, events = json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i == len(text):
        break
    event, i = dec.raw_decode(text, i)
    events.append(event)
ready, order, least = {}, [], 3
for n, event in enumerate(events):
    pod = event["object"]
    name = pod["metadata"]["name"]
    if event["type"] == "DELETED":
        ready.pop(name, None)
    else:
        ready[name] = not pod["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        if ready[name] and pod["metadata"]["labels"].get("controller-revision-hash") == rev \
                and name not in order:
            order.append(name)
    if n >= 2:  # from the listing of the 3 pods on
        least = min(least, sum(ready.values()))
print(f"new revision Ready in the order {' '.join(order)}; at least {least} of 3 Ready throughout")
sys.exit(0 if order == ["db-run-2", "db-run-1", "db-run-0"] and least == 2 else 1)
EOF
  ); then
    ok "a StatefulSet rolls pod by pod ($verdict)"
  else
    fail "a StatefulSet rolls pod by pod" "$verdict"
  fi
else
  fail "a StatefulSet rolls pod by pod" "its 3 pods were not Ready at first: $(pods app=db-run)"
fi
never_ready() {
  [[ $(pods app=never) == *' False' ]] &&
    [[ $(kubectl -n "$NS" get pods -l app=never -o jsonpath='{.items[0].status.phase}') == Running ]] &&
    [[ $(kubectl -n "$NS" get deployment never -o jsonpath='{.status.conditions[?(@.type=="Available")].status}') == False ]]
}
if wait_for 30 never_ready && sleep 2 && never_ready; then
  ok "a pod labelled vault-secrets-reloader.test/never-ready=true runs and is never Ready (its Deployment not Available)"
else
  fail "a pod labelled never-ready runs and is never Ready" "$(pods app=never)"
fi

# 4. A TokenRequest token logs in to the server through auth/kubernetes.
kubectl -n "$NS" create serviceaccount "$SA" >/dev/null
setup_login() {
  printf 'path "secret/metadata/*" {\n  capabilities = ["read"]\n}\n' |
    bao_root policy write "$POLICY" - >/dev/null
  bao_root write "auth/kubernetes/role/$ROLE" \
    bound_service_account_names="$SA" bound_service_account_namespaces="$NS" \
    token_policies="$POLICY" token_ttl=10m >/dev/null 2>&1
}
login() { # prints the client token if the login returns our policy and SA
  local jwt out
  jwt=$(kubectl -n "$NS" create token "$SA" --duration=10m) || return 1
  out=$(curl -sS --max-time 10 -X POST -d "{\"role\":\"$ROLE\",\"jwt\":\"$jwt\"}" \
    "$ADDR/v1/auth/kubernetes/login" 2>&1) || { echo "$out" >&2; return 1; }
  python3 -c '
import json, sys
a = json.loads(sys.argv[1]).get("auth") or sys.exit(sys.argv[1])
assert sys.argv[2] in a["policies"], a["policies"]
assert a["metadata"]["service_account_name"] == sys.argv[3], a["metadata"]
print(a["client_token"])' "$out" "$POLICY" "$SA"
}
code() { curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "X-Vault-Token: $token" "$ADDR/v1/$1"; }
errfile=$(mktemp)
server_checks() {
  local login_token= token meta data
  if ! setup_login; then
    fail "$SERVER: TokenRequest token logs in via auth/kubernetes" "setup of policy/role failed"
  elif login_token=$(login 2>"$errfile"); then
    ok "$SERVER: TokenRequest token logs in via auth/kubernetes (policy $POLICY)"
  else
    login_token=
    fail "$SERVER: TokenRequest token logs in via auth/kubernetes" "$(tail -n 3 "$errfile")"
  fi

  # 5. A metadata-only policy: metadata readable, data forbidden (403).
  bao_root kv put "secret/$SECRET" foo=bar >/dev/null
  token=${login_token:-$(bao_root token create -policy="$POLICY" -ttl=10m -field=token)}
  meta=$(code "secret/metadata/$SECRET")
  data=$(code "secret/data/$SECRET")
  if [[ $meta == 200 && $data == 403 ]]; then
    ok "$SERVER: metadata-only token reads secret/metadata ($meta) and is denied secret/data ($data)"
  else
    fail "$SERVER: metadata-only token reads metadata and is denied data" "metadata: HTTP $meta (want 200), data: HTTP $data (want 403)"
  fi

  # 6. The audit log records that request.
  if wait_for 10 grep -q "\"path\":\"secret/metadata/$SECRET\"" "$AUDIT"; then
    ok "$SERVER: the audit log $AUDIT records the request"
  else
    fail "$SERVER: the audit log records the request" "no secret/metadata/$SECRET in $AUDIT"
  fi
}
for server in openbao vault; do
  use_server "$server"
  server_checks
done

# 7. The server at HASHICORP_VAULT_ADDR is HashiCorp Vault, the `vault` on PATH its binary.
use_server vault
health=$(curl -sS --max-time 10 "$ADDR/v1/sys/health" 2>&1 || true)
if vault version | grep -q '^Vault v1\.' && grep -q '"version":"1\.' <<<"$health" &&
  ! grep -qi openbao <<<"$health$(vault version)"; then
  ok "HashiCorp Vault answers at $ADDR ($(vault version | cut -d' ' -f1,2 | tr -d ,))"
else
  fail "HashiCorp Vault answers at \$HASHICORP_VAULT_ADDR" "$(vault version 2>&1 | head -n 1); $health"
fi

echo "$passed passed, $failed failed"
((failed == 0))
