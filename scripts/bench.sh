#!/usr/bin/env bash
# Benchmark of the reloader against the local control plane and OpenBao.
#   scripts/bench.sh                  the default points; rewrites BENCHMARKS.md
#   scripts/bench.sh --points LIST    only these points; rewrites BENCHMARKS.md
#   scripts/bench.sh --smoke          one small point (ns5:50/50), checks only that it still works
#                                     (its pass at a distance too: a few seconds, and the
#                                     latency proxy and the pass line's parsing stay tested)
# A point is W/S: W opted-in workloads and W that do not opt in (2W in all,
# over 20 namespaces, the daemon watching the whole cluster) using S shared
# secrets; or nsN:W/S: the same spread over N namespaces, the daemon given
# `--namespaces` naming all N and running as a ServiceAccount whose RBAC is
# the manifests' ClusterRole bound by a RoleBinding in each of them (no
# cluster-wide binding). Either with +cmC:R: C ConfigMaps of 1 KiB more, the
# first R of them each holding a reference to a secret its one naming
# (envFrom) opted-in workload uses anyway, so the checks are the same.
# LIST separates points with commas; the default is
# 100/100,1000/1000,5000/2000,ns100:1000/1000 (16 minutes on 2 cores).
#   --server openbao|vault            first argument: which server of scripts/testenv.sh
#                                     (default openbao; vault is HashiCorp Vault)
# A benchmark, not a test: timings are written down, never asserted. What is
# checked is correctness: each affected workload reloaded once per pass that saw
# a change of its secrets (once, or twice when the batch straddles a pass), the
# Vault requests a pass needs (with OpenBao the list pages of --list-secret-metadata,
# with Vault one read per distinct secret), every workload created reaching the index,
# and a pass at a distance (a round trip added before the server by scripts/faultproxy.py)
# making the same requests, warned about exactly when it outlasts its period.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

SERVER_KIND=openbao
if [[ ${1:-} == --server ]]; then
  SERVER_KIND=${2:-}
  shift 2
fi

# namespaced_identity DIR: the ServiceAccount nsN points run as, with no
# binding of its own (bench.py binds it per namespace), a token of it in
# DIR/namespaced-token, and an OpenBao role with the reloader's policy.
namespaced_identity() {
  local dir=$1
  kubectl -n "$RELOADER_NS" create serviceaccount bench-namespaced --dry-run=client -o yaml |
    kubectl apply -f - >/dev/null
  kubectl -n "$RELOADER_NS" create token bench-namespaced --duration=2h >"$dir/namespaced-token"
  srv write auth/kubernetes/role/bench-namespaced \
    bound_service_account_names=bench-namespaced bound_service_account_namespaces="$RELOADER_NS" \
    policies="$RELOADER_SA" ttl=1h >/dev/null
}

scripts/testenv.sh up
eval "$(scripts/testenv.sh env)"
case $SERVER_KIND in
  openbao) ;;
  vault) export VAULT_ADDR=$HASHICORP_VAULT_ADDR VAULT_TOKEN=$HASHICORP_VAULT_TOKEN ;;
  *) echo "bench: --server openbao|vault, not '$SERVER_KIND'" >&2; exit 2 ;;
esac
cargo build --release --quiet
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# OpenBao lists a directory's metadata (--list-secret-metadata) when the policy
# grants it: the optional block of manifests/vault-policy.hcl. HashiCorp Vault
# has no such listing, so there every secret is read.
listing=()
if [[ $SERVER_KIND == openbao ]]; then
  reloader_identity "$WORK" 'path "secret/detailed-metadata/*" { capabilities = ["list"] }'
  listing=(--list-secret-metadata)
else
  reloader_identity "$WORK"
fi
namespaced_identity "$WORK"
kubectl -n default create serviceaccount bench-admin --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create clusterrolebinding bench-admin --clusterrole=cluster-admin \
  --serviceaccount=default:bench-admin --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n default create token bench-admin --duration=2h >"$WORK/admin-token"

args=(--bin "${CARGO_TARGET_DIR:-$REPO/target}/x86_64-unknown-linux-gnu/release/vault-secrets-reloader"
  --token "$WORK/token" --namespaced-token "$WORK/namespaced-token"
  --admin-token "$WORK/admin-token" --work "$WORK" "${listing[@]}")
started=$SECONDS
if [[ ${1:-} == --smoke ]]; then
  python3 scripts/bench.py "${args[@]}" --points ns5:50/50 --rest-passes 3 --probes 2
  echo "bench: 1 passed, 0 failed"
else
  [[ ${1:-} == --points ]] && args+=(--points "$2")
  python3 scripts/bench.py "${args[@]}" --markdown BENCHMARKS.md
  echo "bench: wrote BENCHMARKS.md in $((SECONDS - started)) s"
fi
