#!/usr/bin/env bash
# Proves that the local test environment (scripts/testenv.sh up) is made of
# real parts: controllers that act, TokenRequest tokens that OpenBao and
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
# The server the checks of sections 3 to 5 run against: `use_server openbao`
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

cleanup() {
  rm -f "${errfile:-}"
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

# 3. A TokenRequest token logs in to the server through auth/kubernetes.
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

  # 4. A metadata-only policy: metadata readable, data forbidden (403).
  bao_root kv put "secret/$SECRET" foo=bar >/dev/null
  token=${login_token:-$(bao_root token create -policy="$POLICY" -ttl=10m -field=token)}
  meta=$(code "secret/metadata/$SECRET")
  data=$(code "secret/data/$SECRET")
  if [[ $meta == 200 && $data == 403 ]]; then
    ok "$SERVER: metadata-only token reads secret/metadata ($meta) and is denied secret/data ($data)"
  else
    fail "$SERVER: metadata-only token reads metadata and is denied data" "metadata: HTTP $meta (want 200), data: HTTP $data (want 403)"
  fi

  # 5. The audit log records that request.
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

# 6. The server at HASHICORP_VAULT_ADDR is HashiCorp Vault, the `vault` on PATH its binary.
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
