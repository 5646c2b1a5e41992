#!/usr/bin/env bash
# Optional test environment for machines WITH Docker: a kind cluster with
# OpenBao (dev mode) running inside it, reached through a port-forward on
# 127.0.0.1. CI does not use this (it has no Docker): CI exercises the local
# control plane of scripts/testenv.sh instead.
#
#   eval "$(scripts/kind-up.sh)"   # prints the same export lines as `testenv.sh env`
#   scripts/kind-up.sh down        # stop the port-forward, delete the cluster
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KIND_CLUSTER:-vault-secrets-reloader}
STATE=${KIND_STATE_DIR:-$REPO/.testenv-kind}
OPENBAO_IMAGE=${OPENBAO_IMAGE:-openbao/openbao:2.7.2}
ROOT_TOKEN=testenv-root-token
export KUBECONFIG=$STATE/kubeconfig

log() { printf 'kind-up: %s\n' "$*" >&2; }
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

if [[ ${1:-} == down ]]; then
  if [[ -f $STATE/port-forward.pid ]]; then kill "$(<"$STATE/port-forward.pid")" 2>/dev/null || true; fi
  kind delete cluster --name "$CLUSTER" >&2 || true
  rm -rf "$STATE"
  exit 0
fi

for tool in docker kind kubectl python3; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
mkdir -p "$STATE"

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s >&2
fi
kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >&2

# OpenBao dev server in the cluster; its own ServiceAccount token reviews the
# tokens presented at login, so it is bound to system:auth-delegator.
kubectl apply -f - >&2 <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: openbao}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: openbao, namespace: openbao}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: openbao-token-reviewer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}
subjects: [{kind: ServiceAccount, name: openbao, namespace: openbao}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: openbao, namespace: openbao}
spec:
  replicas: 1
  selector: {matchLabels: {app: openbao}}
  template:
    metadata: {labels: {app: openbao}}
    spec:
      serviceAccountName: openbao
      containers:
      - name: openbao
        image: $OPENBAO_IMAGE
        args: [server, -dev, -dev-listen-address=0.0.0.0:8200, -dev-root-token-id=$ROOT_TOKEN]
        env: [{name: SKIP_SETCAP, value: "true"}]
        ports: [{containerPort: 8200}]
        readinessProbe: {httpGet: {path: /v1/sys/health, port: 8200}}
---
apiVersion: v1
kind: Service
metadata: {name: openbao, namespace: openbao}
spec:
  selector: {app: openbao}
  ports: [{port: 8200, targetPort: 8200}]
EOF
kubectl -n openbao rollout status deployment/openbao --timeout=180s >&2

in_bao() { kubectl -n openbao exec deploy/openbao -- env BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN="$ROOT_TOKEN" bao "$@"; }
# KV v2 at secret/ (the dev server has it; enable it if not) and Kubernetes auth.
in_bao secrets list | grep -q '^secret/' || in_bao secrets enable -path=secret -version=2 kv >&2
in_bao auth list | grep -q '^kubernetes/' || in_bao auth enable kubernetes >&2
in_bao write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc >&2

# Port-forward OpenBao to a free port on 127.0.0.1.
if [[ -f $STATE/port-forward.pid ]]; then kill "$(<"$STATE/port-forward.pid")" 2>/dev/null || true; fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl -n openbao port-forward --address 127.0.0.1 svc/openbao "$port:8200" \
  >"$STATE/port-forward.log" 2>&1 </dev/null &
echo $! >"$STATE/port-forward.pid"
for _ in $(seq 50); do
  curl -sf --noproxy '*' "http://127.0.0.1:$port/v1/sys/health" >/dev/null && break
  sleep 0.2
done

server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
  base64 -d >"$STATE/ca.crt"

printf 'export KUBECONFIG=%s\n' "$(sq "$KUBECONFIG")"
printf 'export KUBE_API_URL=%s\n' "$(sq "$server")"
printf 'export KUBE_CA_FILE=%s\n' "$(sq "$STATE/ca.crt")"
printf 'export VAULT_ADDR=%s\n' "$(sq "http://127.0.0.1:$port")"
printf 'export VAULT_TOKEN=%s\n' "$(sq "$ROOT_TOKEN")"
