# Shared by scripts/e2e.sh and scripts/demo.sh (source it; it runs nothing).
# Expects the variables of `scripts/testenv.sh env` (or scripts/kind-up.sh).

RELOADER_NS=bank-vaults-infra
RELOADER_SA=vault-secrets-reloader
RELOADER_PREFIX=secrets-reloader.security.bank-vaults.io

# srv ARGS...: the CLI of the server at VAULT_ADDR, as VAULT_TOKEN: HashiCorp's
# `vault` when SERVER_KIND=vault, else OpenBao's `bao`.
srv() {
  if [[ ${SERVER_KIND:-openbao} == vault ]]; then
    env -u VAULT_NAMESPACE VAULT_ADDR="$VAULT_ADDR" VAULT_TOKEN="$VAULT_TOKEN" vault "$@"
  else
    BAO_ADDR=$VAULT_ADDR BAO_TOKEN=$VAULT_TOKEN bao "$@"
  fi
}

# reloader_identity DIR [EXTRA_POLICY_HCL]: the ServiceAccount and RBAC from
# manifests/, a token of it in DIR/token, and a role on the server (see srv)
# for it whose policy is manifests/vault-policy.hcl (plus EXTRA_POLICY_HCL).
reloader_identity() {
  local dir=$1 extra=${2:-}
  kubectl apply -f manifests/00-namespace.yaml -f manifests/01-serviceaccount.yaml \
    -f manifests/02-rbac.yaml -f manifests/03-leader-election.yaml >/dev/null
  kubectl -n "$RELOADER_NS" create token "$RELOADER_SA" --duration=2h >"$dir/token"
  { cat manifests/vault-policy.hcl; printf '%s\n' "$extra"; } >"$dir/policy.hcl"
  srv policy write "$RELOADER_SA" "$dir/policy.hcl" >/dev/null
  srv write "auth/kubernetes/role/$RELOADER_SA" \
    bound_service_account_names="$RELOADER_SA" bound_service_account_namespaces="$RELOADER_NS" \
    policies="$RELOADER_SA" ttl=1h >/dev/null 2>"$dir/role.err" || { cat "$dir/role.err" >&2; return 1; }
}

# start_reloader BIN DIR LISTEN ARGS...: runs the daemon in the background as
# it would run in the cluster (its own token, Kubernetes auth to the server, no
# root token), logging to DIR/reloader.out and DIR/reloader.err; sets
# RELOADER_PID.
start_reloader() {
  local bin=$1 dir=$2 listen=$3
  shift 3
  env -u VAULT_TOKEN -u BAO_ADDR -u BAO_TOKEN \
    VAULT_ADDR="$VAULT_ADDR" VAULT_AUTH_METHOD=kubernetes VAULT_ROLE="$RELOADER_SA" \
    VAULT_PATH=kubernetes LISTEN_ADDRESS="$listen" \
    "$bin" --kube-api-url "$KUBE_API_URL" --kube-token-file "$dir/token" \
    --kube-ca-file "$KUBE_CA_FILE" "$@" >>"$dir/reloader.out" 2>>"$dir/reloader.err" &
  RELOADER_PID=$!
}

# annotation NAMESPACE KIND/NAME KEY [meta]: a pod-template annotation (with
# "meta": a metadata annotation) of a workload; empty when unset.
annotation() {
  kubectl -n "$1" get "$2" -o json | python3 -c '
import json, sys
obj = json.load(sys.stdin)
meta = obj["metadata"] if sys.argv[2] == "meta" else obj["spec"]["template"]["metadata"]
print((meta.get("annotations") or {}).get(sys.argv[1], ""))' "$3" "${4:-template}"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# need_prometheus: installs Debian's prometheus package (prometheus and
# promtool) when promtool is missing. Its maintainer scripts would start the
# service through invoke-rc.d, listening on every address: a policy-rc.d that
# refuses (when there is none) keeps it from starting; the tests start their
# own on loopback.
need_prometheus() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return
  local policy=/usr/sbin/policy-rc.d added=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  local rc=0
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || rc=$?
  [[ -n $added ]] && rm -f "$policy"
  return "$rc"
}
