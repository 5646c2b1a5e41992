#!/usr/bin/env bash
# Benchmark of the reloader against the local control plane and OpenBao.
#   scripts/bench.sh           points 100/100, 1000/1000, 5000/2000; rewrites BENCHMARKS.md
#   scripts/bench.sh --smoke   one small point (50/50), checks only that it still works
#   --server openbao|vault     first argument: which server of scripts/testenv.sh
#                              (default openbao; vault is HashiCorp Vault)
# A benchmark, not a test: timings are written down, never asserted. What is
# checked is correctness: each affected workload reloaded exactly once, one
# Vault request per distinct secret.
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
reloader_identity "$WORK"
kubectl -n default create serviceaccount bench-admin --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create clusterrolebinding bench-admin --clusterrole=cluster-admin \
  --serviceaccount=default:bench-admin --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n default create token bench-admin --duration=2h >"$WORK/admin-token"

args=(--bin "$REPO/target/x86_64-unknown-linux-gnu/release/vault-secrets-reloader"
  --token "$WORK/token" --admin-token "$WORK/admin-token" --work "$WORK")
if [[ ${1:-} == --smoke ]]; then
  python3 scripts/bench.py "${args[@]}" --points 50/50
  echo "bench: 1 passed, 0 failed"
else
  python3 scripts/bench.py "${args[@]}" --markdown BENCHMARKS.md
  echo "bench: wrote BENCHMARKS.md"
fi
