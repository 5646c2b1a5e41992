#!/usr/bin/env bash
# End-to-end test of vault-secrets-reloader against the real local control
# plane and OpenBao (scripts/testenv.sh), or any cluster whose variables are
# exported the same way (scripts/kind-up.sh).
#
# It reproduces the original tool's walkthrough and e2e, and more: the daemon
# runs as a process with the ServiceAccount and RBAC from manifests/, logs in
# to the server through the Kubernetes auth method with a policy that can read
# secret metadata only, and runs with 1 s / 2 s periods.
#
# It runs once per server named in E2E_SERVERS (default `openbao,vault`:
# OpenBao, then HashiCorp Vault; either alone when named), each line saying
# which. Ends with "N passed, M failed" over all of them; exits non-zero when
# M > 0.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/harness.sh
source scripts/harness.sh

use_test_env

if [[ -z ${E2E_SERVER:-} ]]; then
  default=openbao,vault
  [[ -n ${HASHICORP_VAULT_ADDR:-} ]] || default=openbao
  IFS=, read -r -a servers <<<"${E2E_SERVERS:-$default}"
  total_passed=0 total_failed=0
  runs=$(mktemp -d)
  for server in "${servers[@]}"; do
    case $server in openbao | vault) ;; *) echo "e2e: unknown server '$server' in E2E_SERVERS" >&2; exit 2 ;; esac
    # The run's lines are tagged with its server; its closing line is summed.
    E2E_SERVER=$server "$0" 2>&1 | sed -u -E "s/^(ok   - |FAIL - |== )/\1[$server] /" |
      tee "$runs/$server.out" || true
    read -r p f < <(sed -n -E 's/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$runs/$server.out" | tail -n 1) || true
    [[ -n ${p:-} ]] || { echo "FAIL - [$server] the run ended without its closing line"; p=0 f=1; }
    total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
    p= f=
  done
  rm -rf "$runs"
  echo
  echo "$total_passed passed, $total_failed failed (servers: ${servers[*]})"
  ((total_failed == 0))
  exit
fi
# One server: the daemon and every check talk to it.
SERVER_KIND=$E2E_SERVER
if [[ $SERVER_KIND == vault ]]; then
  export VAULT_ADDR=${HASHICORP_VAULT_ADDR:?} VAULT_TOKEN=${HASHICORP_VAULT_TOKEN:?}
  export VAULT_AUDIT_LOG=${HASHICORP_VAULT_AUDIT_LOG:?} BAO_ADDR=$HASHICORP_VAULT_ADDR
  export BAO_TOKEN=$HASHICORP_VAULT_TOKEN
fi

NS=reloader-e2e
SA_NS=$RELOADER_NS
SA=$RELOADER_SA
PREFIX=$RELOADER_PREFIX
LEGACY=alpha.vault.security.banzaicloud.io
EDGE_USER=vault-secrets-reloader-edge
WORK=$(mktemp -d)
DAEMON_PID=
SECOND_PID=
EVIL_PID=
LEADER_PIDS=()

stop_daemon() {
  stop_process "$DAEMON_PID"
  DAEMON_PID=
}

cleanup() {
  stop_daemon
  kubectl delete namespace "$NS" "$NS-scoped" "$NS-secrets" --wait=false >/dev/null 2>&1 || true
  kubectl delete -f manifests/optional/follow-secret-refs.yaml --ignore-not-found >/dev/null 2>&1 || true
  [[ -n ${SECOND_PID:-} ]] && kill "$SECOND_PID" 2>/dev/null && wait "$SECOND_PID" 2>/dev/null
  [[ -n ${EVIL_PID:-} ]] && kill "$EVIL_PID" 2>/dev/null && { wait "$EVIL_PID" 2>/dev/null || true; }
  kubectl delete crd rollouts.argoproj.io --wait=false >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding "$EDGE_USER" "$EDGE_USER-argo-rollouts" --ignore-not-found >/dev/null 2>&1 || true
  kubectl -n "$SA_NS" delete rolebinding "$EDGE_USER-leader-election" --ignore-not-found >/dev/null 2>&1 || true
  for pid in "${LEADER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  daemon_log_on_failure "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT

annotation_in() { annotation "$NS" "$@"; }
count() { annotation_in "$1" "${2:-$PREFIX}/secret-reload-count"; }
observed() { annotation_in "$1" "$PREFIX/observed-versions" meta; }
count_is() { [[ $(count "$1" "${3:-$PREFIX}") == "$2" ]]; }
has_state() { [[ -n $(observed "$1") ]]; }
state_mentions() { observed "$1" | grep -qF "$2"; }
state_lacks() { ! state_mentions "$@"; }
replicasets() { kubectl -n "$NS" get rs -l "app=$1" -o name | wc -l; }
replicasets_are() { [[ $(replicasets "$1") -eq $2 ]]; }
log_has() { grep -qF -- "$1" "$WORK/reloader.out" "$WORK/reloader.err"; }
# pods_of NAME: "name ready reload-count" per pod of the workload app=NAME,
# those being deleted included (ready is then False).
pods_of() {
  kubectl -n "$NS" get pods -l "app=$1" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    ready = not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    count = (p["metadata"].get("annotations") or {}).get(sys.argv[1] + "/secret-reload-count", "-")
    print(p["metadata"]["name"], ready, count)' "$PREFIX"
}
# pods_are NAME COUNT: it has pods, all Ready, each with reload count COUNT
# (- for none).
pods_are() {
  local now
  now=$(pods_of "$1")
  [[ -n $now ]] && ! grep -qv " True $2\$" <<<"$now"
}
# pods_replaced NAME BEFORE COUNT: pods_are NAME COUNT, and none of the pods
# named in BEFORE is left.
pods_replaced() {
  pods_are "$1" "$3" && ! pods_of "$1" | cut -d' ' -f1 | grep -qxF -f <(tr ' ' '\n' <<<"$2")
}


say "build"
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$REPO/target}/x86_64-unknown-linux-gnu/release/vault-secrets-reloader
size=$(stat -c %s "$BIN")
check "the release binary is at most 5 MiB ($((size / 1024)) KiB)" test "$size" -le $((5 * 1024 * 1024))
check "it is statically linked (no NEEDED libraries)" bash -c "! readelf -d '$BIN' | grep -q NEEDED"
# An empty root: no libc, no loader, nothing but the binary.
mkdir -p "$WORK/empty-root"
cp "$BIN" "$WORK/empty-root/reloader"
check "it runs with no shared libraries at all" bash -c "chroot '$WORK/empty-root' /reloader --version | grep -q '^vault-secrets-reloader '"
readme_flags() { sed -n '/^FLAGS (Go duration/,/^```/p' README.md | sed '$d'; }
check "README's configuration reference is --help, to the letter" \
  diff <("$BIN" --help | sed -n '/^FLAGS (Go duration/,$p') <(readme_flags)

say "Argo Rollouts: a minimal Rollout API"
# A clean slate: the run before (another server) may have left it terminating.
kubectl delete crd rollouts.argoproj.io --ignore-not-found --wait=true >/dev/null
kubectl apply -f - >/dev/null <<EOF
{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
 "metadata":{"name":"rollouts.argoproj.io"},
 "spec":{"group":"argoproj.io","scope":"Namespaced",
  "names":{"plural":"rollouts","singular":"rollout","kind":"Rollout"},
  "versions":[{"name":"v1alpha1","served":true,"storage":true,
   "schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}
EOF
rollouts_served() { kubectl get rollouts.argoproj.io -A >/dev/null 2>&1; }
check "the Rollout API is served" wait_until 30 rollouts_served

say "cluster: RBAC from manifests/, a token of its ServiceAccount"
# A clean slate even when the environment is reused.
for mount in team/kv kv1 private; do srv secrets disable "$mount" >/dev/null; done
for path in mysql accounts/aws dockerrepo frompath inline other throttle rollout scoped edge lifecycle shared/db shared/api fromsecret; do
  srv kv metadata delete "secret/$path" >/dev/null
done
srv secrets enable -path=team/kv -version=2 kv >/dev/null
# The policy's optional list block too: the main daemon runs with
# --list-secret-metadata, which OpenBao answers and HashiCorp Vault does not.
reloader_identity "$WORK" 'path "team/kv/metadata/*" { capabilities = ["read"] }
path "secret/detailed-metadata/*" { capabilities = ["list"] }'
kubectl delete namespace "$NS" "$NS-scoped" "$NS-secrets" --ignore-not-found --wait=true >/dev/null
kubectl delete -f manifests/optional/follow-secret-refs.yaml --ignore-not-found >/dev/null
kubectl create namespace "$NS" >/dev/null
AS_SA=(--as="system:serviceaccount:$SA_NS:$SA")
kubectl apply -f manifests/optional/argo-rollouts.yaml >/dev/null
# Everything the ServiceAccount may do beyond what any ServiceAccount may
# (a fresh one with no binding gives the baseline), as kubectl lists it.
kubectl -n "$SA_NS" create serviceaccount rbac-baseline --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# granted [USER]: for the ServiceAccount, or for USER.
granted() {
  local as=${1:-system:serviceaccount:$SA_NS:$SA}
  comm -23 <(kubectl auth can-i --list -n "$SA_NS" --as="$as" | awk 'NR > 1 && $2 == "[]"' | tr -s ' ' | sort) \
    <(kubectl auth can-i --list -n "$SA_NS" --as="system:serviceaccount:$SA_NS:rbac-baseline" |
      awk 'NR > 1 && $2 == "[]"' | tr -s ' ' | sort)
}
cat >"$WORK/expected-rbac" <<EOF
configmaps [] [] [get list watch]
daemonsets.apps [] [] [get list watch patch]
deployments.apps [] [] [get list watch patch]
events [] [] [create]
leases.coordination.k8s.io [] [] [get create update]
rollouts.argoproj.io [] [] [get list watch patch]
statefulsets.apps [] [] [get list watch patch]
EOF
check "auth can-i --list: the ServiceAccount may do exactly what manifests/ lists" \
  diff "$WORK/expected-rbac" <(granted)
# Each verb the daemon uses, and nothing beside.
while read -r expected verb resource namespace; do
  if kubectl auth can-i "$verb" "$resource" -n "$namespace" "${AS_SA[@]}" -q; then got=yes; else got=no; fi
  check "RBAC: $verb $resource in $namespace: $expected" test "$got" = "$expected"
done <<EOF
yes list deployments.apps $NS
yes watch daemonsets.apps $NS
yes get statefulsets.apps $NS
yes patch deployments.apps $NS
yes create events $NS
yes watch configmaps $NS
no patch configmaps $NS
yes patch rollouts.argoproj.io $NS
yes update leases.coordination.k8s.io $SA_NS
yes create leases.coordination.k8s.io $SA_NS
no update leases.coordination.k8s.io $NS
no update deployments.apps $NS
no delete deployments.apps $NS
no create deployments.apps $NS
no get secrets $NS
no list secrets $SA_NS
no create pods $NS
no delete events $NS
EOF

say "$SERVER_KIND: secrets, a second KV v2 mount with a slash, a KV v1 mount, metadata-only policy"
srv secrets enable -path=kv1 -version=1 kv >/dev/null
# A KV v2 mount the reloader's policy does not name: its paths get 403.
srv secrets enable -path=private -version=2 kv >/dev/null
srv kv put secret/mysql MYSQL_PASSWORD=3xtr3ms3cr3t >/dev/null
srv kv put secret/accounts/aws AWS_SECRET_ACCESS_KEY=s3cr3t >/dev/null
srv kv put secret/dockerrepo DOCKER_REPO_PASSWORD=dockerrepopassword >/dev/null
srv kv put secret/frompath USER=u >/dev/null
srv kv put secret/inline DB_USER=user >/dev/null
srv kv put secret/other X=1 >/dev/null
srv kv put secret/throttle T=1 >/dev/null
srv kv put secret/rollout R=1 >/dev/null
srv kv put secret/scoped S=1 >/dev/null
srv kv put secret/hostile H=1 >/dev/null
srv kv put secret/abuse A=1 >/dev/null
srv kv put secret/lifecycle L=lifecycle-secret-1 >/dev/null
srv kv put secret/shared/db password=shared-db-1 >/dev/null
srv kv put secret/shared/api key=shared-api-1 >/dev/null
srv kv put secret/fromsecret password=fromsecret-1 >/dev/null
srv kv put team/kv/app KEY=k >/dev/null
srv kv put kv1/legacy K=v >/dev/null
srv kv put private/app K=v >/dev/null
SA_VAULT_TOKEN=$(srv write -field=token "auth/kubernetes/login" role="$SA" jwt="$(cat "$WORK/token")")
vault_status() { curl -s -o /dev/null -w '%{http_code}' -H "X-Vault-Token: $SA_VAULT_TOKEN" "$VAULT_ADDR/v1/$1"; }
check "the reloader's Vault token reads metadata" test "$(vault_status secret/metadata/mysql)" = 200
check "the reloader's Vault token gets 403 on secret data" test "$(vault_status secret/data/mysql)" = 403
# From here on, the server's audit log (made by scripts/testenv.sh) holds
# only what the daemon sends with that role.
AUDIT_FROM=$(($(wc -l <"${VAULT_AUDIT_LOG:?}") + 1))

say "a second OpenBao server, for workloads that name their own Vault"
SECOND_PORT=$(python3 -c '
import socket
for _ in range(50):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 1)); t.close(); print(p); break
    except OSError:
        pass')
SECOND_ADDR=http://127.0.0.1:$SECOND_PORT
BAO_API_ADDR=$SECOND_ADDR bao server -dev -dev-listen-address="127.0.0.1:$SECOND_PORT" \
  -dev-root-token-id=second-root -dev-no-store-token >"$WORK/second-bao.log" 2>&1 &
SECOND_PID=$!
second() { BAO_ADDR=$SECOND_ADDR BAO_TOKEN=second-root bao "$@"; }
wait_until 30 second status >/dev/null
second auth enable kubernetes >/dev/null
second write auth/kubernetes/config kubernetes_host="$KUBE_API_URL" kubernetes_ca_cert=@"$KUBE_CA_FILE" \
  token_reviewer_jwt="$(kubectl -n kube-system create token openbao-token-reviewer --duration=1h)" \
  disable_local_ca_jwt=true disable_iss_validation=true >/dev/null
second policy write "$SA" manifests/vault-policy.hcl >/dev/null
second write "auth/kubernetes/role/$SA" bound_service_account_names="$SA" \
  bound_service_account_namespaces="$SA_NS" policies="$SA" ttl=1h >/dev/null
second kv put secret/mysql MYSQL_PASSWORD=on-the-second-server >/dev/null
check "the second OpenBao server is up on loopback" quiet second kv metadata get secret/mysql
# A tenant's own "Vault": it only records who connects. No workload may make
# the daemon send it anything, least of all a credential.
EVIL_PORT=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(1)
end = time.time() + 900
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    with open(sys.argv[2], "a") as f:
        f.write("connection\n")
    c.close()
' "$EVIL_PORT" "$WORK/evil-connections" &
EVIL_PID=$!

say "workloads (the original walkthrough's, and more)"
container() { # name, env list as JSON
  printf '{"name":"%s","image":"registry.invalid/pause:3","env":%s}' "$1" "$2"
}
workload() { # kind, name, template annotations JSON, containers JSON, [initContainers JSON, [RUNS]]
  local kind=$1 name=$2 extra=''
  [[ $kind == StatefulSet ]] && extra='"serviceName":"'"$name"'",'
  cat <<EOF
{"apiVersion":"apps/v1","kind":"$kind","metadata":{"name":"$name","namespace":"$NS"},
 "spec":{$extra"selector":{"matchLabels":{"app":"$name"}},
  "template":{"metadata":{"labels":{"app":"$name"},"annotations":$3},
   "spec":{${6:-}"containers":$4,"initContainers":${5:-[]}}}}}
EOF
}
# The pod spec fields that let a workload's pods run on the fake nodes of
# scripts/testenv.sh (without them its pods stay Pending). Elsewhere (kind:
# the images are not pulled) no pod runs, and only templates are checked.
RUNS='"tolerations":[{"key":"kwok.x-k8s.io/node","operator":"Exists","effect":"NoSchedule"}],'
FAKE_NODES=$(kubectl get nodes -l type=kwok -o name)
ON='{"'$PREFIX'/reload-on-secret-change":"true"}'
MYSQL='{"name":"MYSQL_PASSWORD","value":"vault:secret/data/mysql#${.MYSQL_PASSWORD}"}'
AWS='{"name":"AWS_SECRET_ACCESS_KEY","value":"vault:secret/data/accounts/aws#AWS_SECRET_ACCESS_KEY"}'
DOCKER='{"name":"DOCKER_REPO_PASSWORD","value":"vault:secret/data/dockerrepo#DOCKER_REPO_PASSWORD"}'
OTHER='{"name":"OTHER","value":"vault:secret/data/other#X"}'
# The webhook injects the vault: values of the ConfigMaps a container names.
shared_refs() { # extra data JSON fields
  printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"shared-refs","namespace":"%s"},
 "data":{"DB_PASS":"vault:secret/data/shared/db#password","PLAIN":"x","BROKEN":"vault:cm-s3cr3t-without-key"%s}}' "$NS" "${1:-}"
}
CM_KEYS='[{"name":"DB_PASS","valueFrom":{"configMapKeyRef":{"name":"shared-refs","key":"DB_PASS"}}},
 {"name":"API_KEY","valueFrom":{"configMapKeyRef":{"name":"shared-refs","key":"API_KEY","optional":true}}}]'
{
  shared_refs
  workload Deployment cm-envfrom "$ON" \
    '[{"name":"app","image":"registry.invalid/pause:3","envFrom":[{"prefix":"CM_","configMapRef":{"name":"shared-refs"}}]}]'
  workload StatefulSet cm-keyref "$ON" "[$(container app "$CM_KEYS")]"
  workload Deployment to-be-reloaded "$ON" "[$(container app "[$MYSQL,$AWS]")]" '[]' "$RUNS"
  workload Deployment no-reload '{}' "[$(container app "[$MYSQL]")]"
  workload Deployment fixed-versions-no-reload "$ON" "[$(container app \
    '[{"name":"P","value":"vault:secret/data/mysql#${.MYSQL_PASSWORD}#1"},{"name":"A","value":"vault:secret/data/accounts/aws#AWS_SECRET_ACCESS_KEY#1"}]')]"
  workload DaemonSet daemonset "$ON" "[$(container app "[$AWS,$DOCKER]")]"
  workload StatefulSet statefulset '{"'$LEGACY'/reload-on-secret-change":"true"}' "[$(container app "[$MYSQL]")]"
  workload Deployment from-path '{"'$PREFIX'/reload-on-secret-change":"true","secrets-webhook.security.bank-vaults.io/vault-from-path":"secret/data/frompath"}' "[$(container app '[]')]"
  workload Deployment from-path-pinned '{"'$PREFIX'/reload-on-secret-change":"true","secrets-webhook.security.bank-vaults.io/vault-from-path":"secret/data/frompath#1"}' "[$(container app '[]')]"
  workload Deployment inline "$ON" "[$(container app '[{"name":"DSN","value":"postgres://${vault:secret/data/inline#DB_USER}@db:5432/app"}]')]"
  workload Deployment slash-mount "$ON" "[$(container app '[{"name":"KEY","value":"vault:team/kv/data/app#KEY"}]')]"
  workload Deployment init-only "$ON" "[$(container app '[]')]" "[$(container init "[$OTHER]")]"
  workload Deployment drop-secret "$ON" "[$(container app "[$DOCKER,$OTHER]")]"
  workload Deployment bad-values "$ON" "[$(container app \
    '[{"name":"BROKEN","value":"vault:s3cr3tvalue-without-key"},{"name":"EMPTY","value":"vault:"},{"name":"V1","value":"vault:kv1/legacy#K"},'"$MYSQL"']')]"
  workload Deployment second-vault '{"'$PREFIX'/reload-on-secret-change":"true","secrets-webhook.security.bank-vaults.io/vault-addr":"'"$SECOND_ADDR"'"}' \
    "[$(container app "[$MYSQL]")]"
  workload Deployment hostile-vault '{"'$PREFIX'/reload-on-secret-change":"true","secrets-webhook.security.bank-vaults.io/vault-addr":"http://127.0.0.1:'"$EVIL_PORT"'"}' \
    "[$(container app '[{"name":"M","value":"vault:secret/data/mysql#P"},{"name":"H","value":"bao:secret/data/hostile#H"}]')]"
  workload Deployment sneaky-vault '{"'$PREFIX'/reload-on-secret-change":"true","secrets-webhook.security.bank-vaults.io/vault-addr":"'"$SECOND_ADDR"'@127.0.0.1:'"$EVIL_PORT"'"}' \
    "[$(container app '[{"name":"M","value":"vault:secret/data/mysql#P"}]')]"
  workload Deployment denied "$ON" "[$(container app '[{"name":"P","value":"vault:private/data/app#K"},'"$MYSQL"']')]"
  workload Deployment health-abuse "$ON" "[$(container app '[{"name":"A","value":"vault:secret/data/abuse#A"}]')]"
  workload Deployment lifecycle "$ON" "[$(container app '[{"name":"L","value":"vault:secret/data/lifecycle#L"}]')]"
  workload Deployment throttled '{"'$PREFIX'/reload-on-secret-change":"true","'$PREFIX'/min-reload-interval":"10s"}' \
    "[$(container app '[{"name":"T","value":"vault:secret/data/throttle#T"}]')]"
  workload Rollout rollout "$ON" "[$(container app '[{"name":"R","value":"vault:secret/data/rollout#R"}]')]" |
    sed 's#"apiVersion":"apps/v1"#"apiVersion":"argoproj.io/v1alpha1"#'
} | kubectl apply -f - >/dev/null
kubectl create namespace "$NS-scoped" >/dev/null
workload Deployment scoped "$ON" "[$(container app '[{"name":"S","value":"vault:secret/data/scoped#S"}]')]" |
  sed "s#\"namespace\":\"$NS\"#\"namespace\":\"$NS-scoped\"#" | kubectl apply -f - >/dev/null
# A corrupted state annotation must be repaired, not crash anything.
kubectl -n "$NS" annotate deployment bad-values "$PREFIX/observed-versions={not json" >/dev/null
# Opted in and using at least one unpinned secret.
WATCHING=(deployment/to-be-reloaded daemonset/daemonset statefulset/statefulset deployment/from-path
  deployment/inline deployment/slash-mount deployment/init-only deployment/drop-secret deployment/bad-values
  deployment/second-vault deployment/hostile-vault deployment/health-abuse deployment/throttled rollout.argoproj.io/rollout
  deployment/lifecycle deployment/denied deployment/cm-envfrom statefulset/cm-keyref)
OPTED_IN=("${WATCHING[@]}" deployment/fixed-versions-no-reload deployment/from-path-pinned)
wait_until 60 replicasets_are to-be-reloaded 1 || true

HEALTH_PORT=$(free_port)
start_daemon() {
  start_reloader "$BIN" "$WORK" "127.0.0.1:$HEALTH_PORT" \
    --collector-sync-period 1s --reloader-run-period 2s --log-level debug \
    --per-workload-vault-addr --allowed-vault-addrs "$SECOND_ADDR@$NS,*.vault.invalid,http://*.plain.invalid" \
    --list-secret-metadata "$@"
  DAEMON_PID=$RELOADER_PID
}

say "first sight: a baseline, no rollout"
start_daemon
all_have_state() { local w; for w in "${WATCHING[@]}"; do has_state "$w" || return 1; done; }
check "every opted-in workload that uses a secret gets a baseline" wait_until 30 all_have_state
none_reloaded() { local w; for w in "${OPTED_IN[@]}"; do [[ -z $(count "$w") ]] || return 1; done; }
check "no workload is reloaded on first sight" none_reloaded
check "a workload without the annotation is not touched" not has_state deployment/no-reload
check "a workload with only pinned versions needs no state" not has_state deployment/fixed-versions-no-reload
check "the corrupted state annotation is repaired" wait_until 10 state_mentions deployment/bad-values '"vault:secret/data/mysql":[1,'
check "a malformed value is warned about, naming the workload and where" \
  log_has 'level=warn msg="Deployment reloader-e2e/bad-values: skipping a reference in container app env BROKEN'
check "the warning never shows the value" bash -c "! grep -q s3cr3tvalue '$WORK/reloader.err' '$WORK/reloader.out'"
check "a KV v1 secret the token cannot see is reported once as not checkable" wait_until 10 bash -c "[[ \$(cat '$WORK/reloader.err' | grep -c 'vault:kv1/legacy cannot be checked') -eq 1 ]]"
denied_warnings() { grep -c "Deployment $NS/denied: Vault secret path private/data/app: the reloader's Vault policy refuses it (403)" "$WORK/reloader.err"; }
denied_events() {
  kubectl -n "$NS" get events --field-selector "involvedObject.name=denied,reason=SecretAccessDenied" -o name | wc -l
}
denied_once() { [[ $(denied_warnings) -eq 1 && $(denied_events) -eq 1 ]]; }
check "a path outside the policy: one warning naming the workload, one SecretAccessDenied Event" \
  wait_until 10 denied_once
check "and not one per pass (after 5 s)" stays 5 denied_once
denied_state() { state_lacks deployment/denied private/ && state_mentions deployment/denied secret/data/mysql; }
check "the denied path is not recorded, the workload's other secret is" denied_state
check "an allowed http:// address off this host: one warning at start" \
  log_has "--allowed-vault-addrs lets workloads name http://*.plain.invalid, plain http:// to a host that is not loopback"
check "none for VAULT_ADDR on loopback" not log_has "to a host that is not loopback: the Vault token"
check "/healthz answers" bash -c "curl -sf http://127.0.0.1:$HEALTH_PORT/healthz | grep -q ok"
if [[ -n $FAKE_NODES ]]; then
  check "to-be-reloaded's pod runs and is Ready" wait_until 30 pods_are to-be-reloaded -
  PODS_BEFORE=$(pods_of to-be-reloaded | cut -d' ' -f1 | paste -sd ' ' -)
fi

say "change one secret: exactly its users roll out, once"
srv kv patch secret/mysql MYSQL_PASSWORD=totallydifferentsecret >/dev/null
check "to-be-reloaded is reloaded (count 1)" wait_until 20 count_is deployment/to-be-reloaded 1
check "the StatefulSet with the older annotation prefix is reloaded under that prefix" \
  wait_until 20 count_is statefulset/statefulset 1 "$LEGACY"
check "the workload with bad values beside a good one is reloaded" wait_until 20 count_is deployment/bad-values 1
check "the workload with a denied path beside a good one is reloaded" wait_until 20 count_is deployment/denied 1
check "the Deployment gets a second ReplicaSet" wait_until 30 replicasets_are to-be-reloaded 2
if [[ -n $FAKE_NODES ]]; then
  check "its pod is replaced: $PODS_BEFORE is gone, the new one is Ready with reload count 1" \
    wait_until 30 pods_replaced to-be-reloaded "$PODS_BEFORE" 1
fi
check "the workload without the annotation is not reloaded" count_is deployment/no-reload ""
check "the workload with only pinned versions is not reloaded" count_is deployment/fixed-versions-no-reload ""
check "nothing is reloaded twice (after 3 more reloader passes)" stays 6 count_is deployment/to-be-reloaded 1
check "the StatefulSet still at 1" count_is statefulset/statefulset 1 "$LEGACY"
check "the reload is logged with old and new version" log_has "reloaded Deployment $NS/to-be-reloaded: vault:secret/data/mysql v1 → v2"
event_says() { # workload, reason, text
  kubectl -n "$NS" get events --field-selector "involvedObject.name=$1,reason=$2" \
    -o jsonpath='{range .items[*]}{.type} {.message}{"\n"}{end}' | grep -qF -- "$3"
}
check "an Event tells why it rolled" event_says to-be-reloaded SecretsReloaded "Normal Rolled out for new secret versions: vault:secret/data/mysql v1 → v2"
check "the workload reading its own Vault is not reloaded for this server's change" count_is deployment/second-vault ""

say "change two secrets at once: the DaemonSet using both rolls out once"
# "At once" means within one reloader period: the two writes are made while
# the daemon is paused just after a pass, so no pass can fall between them.
pause_after_a_pass() {
  local passes deadline=$((SECONDS + 10))
  passes=$(grep -c 'reloader pass:' "$WORK/reloader.out" || true)
  while (($(grep -c 'reloader pass:' "$WORK/reloader.out" || true) == passes)); do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
  kill -STOP "$DAEMON_PID"
}
pause_after_a_pass
srv kv patch secret/accounts/aws AWS_SECRET_ACCESS_KEY=s3cr3t2 >/dev/null
srv kv patch secret/dockerrepo DOCKER_REPO_PASSWORD=dockerrepopassword2 >/dev/null
kill -CONT "$DAEMON_PID"
check "the DaemonSet is reloaded once" wait_until 20 count_is daemonset/daemonset 1
check "the DaemonSet stays at 1" stays 5 count_is daemonset/daemonset 1
check "to-be-reloaded is reloaded again (count 2)" count_is deployment/to-be-reloaded 2

say "a workload edited to drop a secret is not reloaded for it"
before=$(count deployment/drop-secret)
kubectl -n "$NS" set env deployment/drop-secret DOCKER_REPO_PASSWORD- >/dev/null
check "the dropped secret leaves its state" wait_until 15 state_lacks deployment/drop-secret dockerrepo
srv kv patch secret/dockerrepo DOCKER_REPO_PASSWORD=dockerrepopassword3 >/dev/null
check "the DaemonSet still using it is reloaded" wait_until 20 count_is daemonset/daemonset 2
check "the workload that dropped it is not (count still $before)" stays 3 count_is deployment/drop-secret "$before"

say "ConfigMaps named by envFrom and configMapKeyRef"
both_at() { count_is deployment/cm-envfrom "$1" && count_is statefulset/cm-keyref "$1"; }
check "a malformed ConfigMap value is warned about, naming the workload, the ConfigMap and the key" \
  log_has "Deployment $NS/cm-envfrom: skipping a reference in key BROKEN of ConfigMap shared-refs"
check "the warning never shows the value" bash -c "! grep -q cm-s3cr3t '$WORK/reloader.err' '$WORK/reloader.out'"
srv kv patch secret/shared/db password=shared-db-2 >/dev/null
check "a new version reloads the Deployment (envFrom) and the StatefulSet (configMapKeyRef)" wait_until 20 both_at 1
check "each exactly once (after 3 more reloader passes)" stays 6 both_at 1
shared_refs ',"API_KEY":"vault:secret/data/shared/api#key"' | kubectl apply -f - >/dev/null
cm_api_baseline() { state_mentions deployment/cm-envfrom shared/api && state_mentions statefulset/cm-keyref shared/api; }
check "an edit adding a reference gives it a baseline" wait_until 15 cm_api_baseline
check "and no rollout" stays 4 both_at 1
srv kv patch secret/shared/api key=shared-api-2 >/dev/null
check "a later change of that second secret reloads both" wait_until 20 both_at 2
check "once" stays 4 both_at 2
kubectl -n "$NS" delete configmap shared-refs >/dev/null
cm_gone() { state_lacks deployment/cm-envfrom shared/ && state_lacks statefulset/cm-keyref shared/; }
check "a deleted ConfigMap's references leave the states" wait_until 15 cm_gone
srv kv patch secret/shared/db password=shared-db-3 >/dev/null
check "and its secrets reload nothing" stays 5 both_at 2
check "no error or warning about it" \
  bash -c "! grep -E 'level=(error|warn)' '$WORK/reloader.err' | grep -i configmap | grep -qv 'key BROKEN'"
shared_refs | kubectl apply -f - >/dev/null
check "a ConfigMap that appears later is picked up (a baseline, no rollout)" \
  wait_until 15 state_mentions deployment/cm-envfrom shared/db
check "still no rollout" both_at 2

say "inline references, initContainers, a mount with a slash"
srv kv patch secret/inline DB_USER=user2 >/dev/null
srv kv patch secret/other X=2 >/dev/null
srv kv patch team/kv/app KEY=k2 >/dev/null
check "an inline \${vault:...} reference reloads" wait_until 20 count_is deployment/inline 1
check "a reference in an initContainer reloads" wait_until 20 count_is deployment/init-only 1
check "a secret under team/kv/ reloads" wait_until 20 count_is deployment/slash-mount 1

say "KV v2 lifecycle: only a readable new version rolls out"
lc() { srv kv "$@" >/dev/null; }
lc put secret/lifecycle L=lifecycle-secret-2
check "a new version rolls out (count 1)" wait_until 20 count_is deployment/lifecycle 1
lc delete secret/lifecycle
check "kv delete of the version the pods have: a Warning Event says it is deleted" wait_until 15 \
  event_says lifecycle SecretVersionUnreadable "Warning Vault secret path secret/data/lifecycle: its current version v2 is deleted"
check "and no rollout" stays 4 count_is deployment/lifecycle 1
lc undelete -versions=2 secret/lifecycle
check "undelete of the version the pods have: no rollout" stays 5 count_is deployment/lifecycle 1
pause_after_a_pass
lc put secret/lifecycle L=lifecycle-secret-3
lc delete secret/lifecycle
kill -CONT "$DAEMON_PID"
check "a new version deleted before it was seen: a Warning Event names it" wait_until 15 \
  event_says lifecycle SecretVersionUnreadable "its current version v3 is deleted"
check "and no rollout" stays 4 count_is deployment/lifecycle 1
lc undelete -versions=3 secret/lifecycle
check "its undelete rolls out (the pods lack it): count 2" wait_until 20 count_is deployment/lifecycle 2
pause_after_a_pass
lc put secret/lifecycle L=lifecycle-secret-4
lc destroy -versions=4 secret/lifecycle
kill -CONT "$DAEMON_PID"
check "kv destroy: as delete, a Warning Event" wait_until 15 \
  event_says lifecycle SecretVersionUnreadable "its current version v4 is destroyed"
check "and no rollout" stays 4 count_is deployment/lifecycle 2
lc rollback -version=3 secret/lifecycle
check "kv rollback writes a new version (v5): rollout, count 3" wait_until 20 count_is deployment/lifecycle 3
lc metadata put -delete-version-after=10s secret/lifecycle
lc put secret/lifecycle L=lifecycle-secret-6
check "delete_version_after: the version is readable until then (its deletion time is ahead): count 4" \
  wait_until 8 count_is deployment/lifecycle 4
check "once it expires: a Warning Event, as delete" wait_until 25 \
  event_says lifecycle SecretVersionUnreadable "its current version v6 is deleted"
check "and no rollout" stays 4 count_is deployment/lifecycle 4
lc metadata put -delete-version-after=0s -max-versions=2 secret/lifecycle
check "a metadata-only change (delete_version_after, max_versions): no rollout" stays 4 count_is deployment/lifecycle 4
lc put secret/lifecycle L=lifecycle-secret-7
check "a new version pruning old ones (max_versions 2): one rollout, count 5" wait_until 20 count_is deployment/lifecycle 5
has_version() {
  srv kv metadata get -format=json secret/lifecycle |
    python3 -c 'import json, sys; sys.exit(sys.argv[1] not in json.load(sys.stdin)["data"]["versions"])' "$1"
}
check "the versions before the last two are pruned" not has_version 5
lc metadata put -custom-metadata=owner=team-a -cas-required=true secret/lifecycle
check "custom_metadata and cas_required changed: no rollout" stays 5 count_is deployment/lifecycle 5

say "a workload's own Vault (--per-workload-vault-addr)"
second kv patch secret/mysql MYSQL_PASSWORD=changed-on-the-second-server >/dev/null
check "its change on the second server reloads it" wait_until 20 count_is deployment/second-vault 1
check "workloads of the first server are not reloaded for it" stays 4 count_is deployment/to-be-reloaded 2
check "a vault-addr outside --allowed-vault-addrs gets a Warning Event" \
  event_says hostile-vault VaultAddressRefused "Warning Vault address http://127.0.0.1:$EVIL_PORT is not in --allowed-vault-addrs"
check "an allowed address hiding another host (user@host) is refused too" \
  event_says sneaky-vault VaultAddressRefused "Warning its vault-addr annotation is unusable"
check "the refusal is one warning naming the workload" \
  bash -c "[[ \$(grep -c 'Deployment $NS/hostile-vault: Vault address http://127.0.0.1:$EVIL_PORT is not in --allowed-vault-addrs' '$WORK/reloader.err') -eq 1 ]]"
check "the tenant's server was never contacted" test ! -s "$WORK/evil-connections"
srv kv patch secret/hostile H=2 >/dev/null
check "the refused workload's other secret (bao:) still reloads it" wait_until 20 count_is deployment/hostile-vault 1

say "min-reload-interval: changes inside the window wait and go out together"
srv kv patch secret/throttle T=2 >/dev/null
check "the first change reloads at once" wait_until 20 count_is deployment/throttled 1
srv kv patch secret/throttle T=3 >/dev/null
sleep 1
srv kv patch secret/throttle T=4 >/dev/null
check "two more changes inside the 10s window wait" stays 3 count_is deployment/throttled 1
check "the wait is logged" log_has "Deployment reloader-e2e/throttled: waiting"
check "then they go out in one rollout" wait_until 15 count_is deployment/throttled 2
check "and only one" stays 4 count_is deployment/throttled 2

say "Argo Rollouts"
check "the Rollout API was found at start" log_has "Argo Rollouts found"
srv kv patch secret/rollout R=2 >/dev/null
check "a Rollout is reloaded like a Deployment" wait_until 20 count_is rollout.argoproj.io/rollout 1

say "the health port cannot stall the loop: a client dribbling a byte every 150 ms, 300 idle connections"
ABUSE=(python3 scripts/health-abuse.py)
"${ABUSE[@]}" dribble "127.0.0.1:$HEALTH_PORT" --seconds 12 >"$WORK/dribble.out" 2>&1 &
dribble_pid=$!
"${ABUSE[@]}" idle "127.0.0.1:$HEALTH_PORT" --count 300 --seconds 12 >"$WORK/idle.out" 2>&1 &
idle_pid=$!
sleep 1
"${ABUSE[@]}" probe "127.0.0.1:$HEALTH_PORT" --seconds 10 --max-latency 1 >"$WORK/probe.out" 2>&1 &
probe_pid=$!
sleep 1
srv kv patch secret/abuse A=2 >/dev/null
check "a secret changed meanwhile is reloaded within one reloader period + 2 s" \
  wait_until 4 count_is deployment/health-abuse 1
wait "$probe_pid" && code=0 || code=$?
check "/healthz from another client answered within 1 s throughout ($(tail -n 1 "$WORK/probe.out"))" test "$code" -eq 0
wait "$dribble_pid" "$idle_pid" 2>/dev/null || true
check "the daemon is still running" kill -0 "$DAEMON_PID"
check "and it is one thread (/proc/PID/task has one entry)" \
  test "$(find "/proc/$DAEMON_PID/task" -mindepth 1 -maxdepth 1 | wc -l)" -eq 1

say "a deleted secret, then re-created (its version starts again at 1)"
srv kv metadata delete secret/frompath >/dev/null
check "the error line names the missing path" wait_until 15 log_has 'level=error msg="Vault secret path secret/data/frompath not found" app=vault-secrets-reloader worker=reloader'
missing_lines() { grep -c 'msg="Vault secret path secret/data/frompath not found"' "$WORK/reloader.err"; }
missing_once() { [[ $(missing_lines) -eq 1 ]]; }
check "once, not every pass (after 3 more passes)" stays 6 missing_once
check "a deleted secret reloads nothing" count_is deployment/from-path ""
srv kv put secret/frompath USER=u2 >/dev/null
check "the re-created secret reloads the from-path workload" wait_until 20 count_is deployment/from-path 1
check "the pinned from-path workload is not reloaded" count_is deployment/from-path-pinned ""
check "a Warning Event names the missing path" event_says from-path SecretNotFound "Warning Vault secret path secret/data/frompath not found"

say "a workload whose other annotations fill most of the API server's 256 KiB"
# 20 secrets of ~200 bytes each in the state, and room for about 10: the
# state keeps the first ones, a Warning Event says the rest are left out,
# and a change to a kept one still rolls it out (before, every patch failed
# with 422 and it never was).
CROWDED=()
for i in $(seq -w 0 19); do
  CROWDED+=("secret/crowded/$i-$(printf 'x%.0s' $(seq 140))")
  srv kv put "${CROWDED[-1]}" K=v1 >/dev/null
done
python3 - "$NS" "$PREFIX" "${CROWDED[@]}" <<'PY' | kubectl create -f - >/dev/null
import json, sys
ns, prefix, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
key = "example.com/blob"
# What the state may take: 256 KiB less the blob, the state key, room for
# the rollout times and the 4 KiB left for other annotations: about 2.4 KB.
blob = "b" * (262144 - 4096 - 2500 - len(key))
env = [{"name": f"S{i}", "value": "vault:" + p.replace("secret/", "secret/data/", 1) + "#K"} for i, p in enumerate(paths)]
print(json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "crowded", "namespace": ns, "annotations": {key: blob}},
  "spec": {"selector": {"matchLabels": {"app": "crowded"}},
    "template": {"metadata": {"labels": {"app": "crowded"},
      "annotations": {prefix + "/reload-on-secret-change": "true"}},
      "spec": {"containers": [{"name": "app", "image": "registry.invalid/pause:3", "env": env}]}}}}))
PY
recorded() { observed deployment/crowded | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["v"]))'; }
check "it gets a baseline that fits" wait_until 20 has_state deployment/crowded
some_recorded() { local n; n=$(recorded); ((n >= 5 && n < 20)); }
check "of its first secrets only ($(recorded) of 20)" some_recorded
check "a Warning Event says how many are left out" wait_until 10 event_says crowded ObservedVersionsTruncated "of its 20 secrets do not fit"
srv kv put "${CROWDED[0]}" K=v2 >/dev/null
check "a change to a recorded secret rolls it out" wait_until 20 count_is deployment/crowded 1
check "and only once" stays 4 count_is deployment/crowded 1

say "a change while the daemon is down (kill -9) is acted on once after restart"
kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=
srv kv patch secret/mysql MYSQL_PASSWORD=changedwhiledown >/dev/null
srv kv patch secret/inline DB_USER=user3 >/dev/null
srv kv patch secret/scoped S=2 >/dev/null
sleep 1
check "nothing happened while it was down" count_is deployment/to-be-reloaded 2
scoped_count_is() { [[ $(annotation "$NS-scoped" deployment/scoped "$PREFIX/secret-reload-count") == "$1" ]]; }
# once: run_once ARGS... runs one collector and one reloader pass; sets code.
run_once() {
  start_reloader "$BIN" "$WORK" "127.0.0.1:$(free_port)" --once "$@"
  wait "$RELOADER_PID" && code=0 || code=$?
}
run_once --dry-run
check "--once --dry-run exits 0 (was $code)" test "$code" -eq 0
check "--dry-run says what it would reload" log_has "dry run: would reload Deployment $NS/to-be-reloaded: vault:secret/data/mysql v2 → v3"
check "--dry-run patches nothing" count_is deployment/to-be-reloaded 2
run_once --namespaces "$NS-scoped"
check "--once --namespaces exits 0 (was $code)" test "$code" -eq 0
check "--namespaces reloads inside" scoped_count_is 1
check "--namespaces leaves the rest alone" count_is deployment/to-be-reloaded 2

say "--follow-secret-refs: references in Secrets, only when granted"
kubectl create namespace "$NS-secrets" >/dev/null
{
  printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"secret-refs","namespace":"%s"},
 "stringData":{"DB_PASS":"vault:secret/data/fromsecret#password","TOKEN":"plain-secret-value-q7"}}' "$NS"
  workload Deployment sec-envfrom "$ON" \
    '[{"name":"app","image":"registry.invalid/pause:3","envFrom":[{"secretRef":{"name":"secret-refs"}}]}]'
  workload StatefulSet sec-keyref "$ON" \
    "[$(container app '[{"name":"DB_PASS","valueFrom":{"secretKeyRef":{"name":"secret-refs","key":"DB_PASS"}}}]')]"
} | sed "s#\"namespace\":\"$NS\"#\"namespace\":\"$NS-secrets\"#" | kubectl apply -f - >/dev/null
sec_count_is() { [[ $(annotation "$NS-secrets" "$1" "$PREFIX/secret-reload-count") == "$2" ]]; }
sec_both_at() { sec_count_is deployment/sec-envfrom "$1" && sec_count_is statefulset/sec-keyref "$1"; }
sec_state_mentions() { annotation "$NS-secrets" "$1" "$PREFIX/observed-versions" meta | grep -qF "$2"; }
sec_both_recorded() {
  sec_state_mentions deployment/sec-envfrom secret/data/fromsecret &&
    sec_state_mentions statefulset/sec-keyref secret/data/fromsecret
}
not_followed="Deployment $NS-secrets/sec-envfrom takes env from a Secret (envFrom); vault: references in Secrets are not followed (--follow-secret-refs does)"
run_once --namespaces "$NS-secrets"
check "without the flag: --once exits 0, so it asked for no Secret (its RBAC grants none) (was $code)" \
  test "$code" -eq 0
check "one info line says the Secret's references are not followed, and which flag does it" \
  test "$(cat "$WORK/reloader.out" "$WORK/reloader.err" | grep -cF -- "$not_followed")" -eq 1
check "and nothing of the Secret is recorded" not sec_state_mentions deployment/sec-envfrom fromsecret
kubectl apply -f manifests/optional/follow-secret-refs.yaml >/dev/null
secrets_granted() { kubectl auth can-i watch secrets -n "$NS-secrets" "${AS_SA[@]}" -q; }
check "manifests/optional/follow-secret-refs.yaml grants reading Secrets" wait_until 10 secrets_granted
run_once --namespaces "$NS-secrets" --follow-secret-refs
check "with --follow-secret-refs: exit 0 (was $code)" test "$code" -eq 0
check "the references of the Secret (envFrom, secretKeyRef) get a baseline" sec_both_recorded
check "and no rollout" sec_both_at ""
srv kv patch secret/fromsecret password=fromsecret-2 >/dev/null
run_once --namespaces "$NS-secrets" --follow-secret-refs
check "a new version reloads both" sec_both_at 1
run_once --namespaces "$NS-secrets" --follow-secret-refs
check "once" sec_both_at 1
check "nothing of the Secret but its references reaches the logs" \
  bash -c "! grep -q plain-secret-value-q7 '$WORK/reloader.out' '$WORK/reloader.err'"
kubectl delete -f manifests/optional/follow-secret-refs.yaml >/dev/null

say "back to the change made while the daemon was down: --once without Vault, then the restart"
VAULT_ADDR=http://127.0.0.1:9 run_once
check "--once exits 1 when Vault cannot be reached (was $code)" test "$code" -eq 1
# X-Vault-Namespace: OpenBao answers 404 for a namespace it lacks, HashiCorp
# Vault Community Edition ignores the header.
VAULT_NAMESPACE=no-such-namespace run_once --dry-run
if [[ $SERVER_KIND == openbao ]]; then
  check "a VAULT_NAMESPACE OpenBao lacks: --once exits 1 (was $code)" test "$code" -eq 1
  check "and the error says it is a configuration error, not a missing secret" \
    log_has "not found (404): namespace not found; this is not a missing secret"
else
  check "VAULT_NAMESPACE, which Vault Community Edition ignores: --once exits 0 (was $code)" test "$code" -eq 0
fi
srv kv patch secret/scoped S=3 >/dev/null
# The crowded workload names 20 secrets: past the cap of 15 now. The
# slash-mount workload's team/kv/data/app is outside the allowed paths now.
OUT_FROM=$(($(wc -l <"$WORK/reloader.out") + 1))
start_daemon --exclude-namespaces "$NS-scoped" --max-secrets-per-workload 15 \
  --allowed-secret-paths 'secret/data/**,private/data/*,kv1/*,team/kv/data/{namespace}/**'
check "after restart it is reloaded (count 3)" wait_until 20 count_is deployment/to-be-reloaded 3
check "and only once" stays 6 count_is deployment/to-be-reloaded 3
check "the other change made while down is acted on too" count_is deployment/inline 2
check "--exclude-namespaces leaves that namespace alone" stays 3 scoped_count_is 1
check "--max-secrets-per-workload 15: one warning naming the workload" \
  log_has "Deployment $NS/crowded: it names 20 secrets, more than --max-secrets-per-workload (15); only the first 15 are watched"
too_many_events() {
  kubectl -n "$NS" get events --field-selector "involvedObject.name=crowded,reason=TooManySecrets" -o name | wc -l
}
check "and one TooManySecrets Warning Event" event_says crowded TooManySecrets \
  "Warning it names 20 secrets, more than --max-secrets-per-workload (15): only the first 15 are watched"
check "only one, after more passes" test "$(too_many_events)" -eq 1
check "--allowed-secret-paths: a reference outside gets a Warning Event naming where it is" \
  event_says slash-mount SecretPathRefused "Warning 1 of its references name secret paths outside --allowed-secret-paths and are never checked: a reference in container app env KEY"
check "and that path is never asked about, nor logged" \
  bash -c "! tail -n '+$OUT_FROM' '$WORK/reloader.out' | grep -q 'team/kv/data/app'"

say "SIGHUP runs both passes now"
stop_daemon
start_daemon --collector-sync-period 1h --reloader-run-period 1h
check "restarted with 1h periods, up" wait_until 10 bash -c "curl -sf http://127.0.0.1:$HEALTH_PORT/healthz >/dev/null"
sleep 2
srv kv patch secret/other X=3 >/dev/null
sleep 2
check "no pass ran by itself" count_is deployment/init-only 1
kill -HUP "$DAEMON_PID"
check "SIGHUP reloads at once" wait_until 10 count_is deployment/init-only 2

say "metrics, shutdown, bad configuration"
check "/metrics counts the reload" bash -c "curl -sf http://127.0.0.1:$HEALTH_PORT/metrics | grep -q 'vault_secrets_reloader_reloads_total{kind=\"Deployment\",namespace=\"$NS\",name=\"init-only\"} 1'"
# The body is read whole first: under pipefail, grep -q leaving at its match
# can fail curl's write (SIGPIPE) and with it the check.
metric_line() {
  local body
  body=$(curl -sf "http://127.0.0.1:$HEALTH_PORT/metrics") &&
    grep -q "^vault_secrets_reloader_$1 [1-9]" <<<"$body"
}
check "/metrics counts patches by verb and status" metric_line 'kubernetes_requests_total{verb="patch",code="2xx"}'
check "/metrics counts Vault metadata reads" metric_line 'vault_requests_total{request="metadata",code="2xx"}'
check "/metrics shows the watched workloads" metric_line 'watched_workloads'
check "/metrics shows the watched ConfigMaps" metric_line 'watched_configmaps'
check "/readyz is ready" bash -c "curl -sf http://127.0.0.1:$HEALTH_PORT/readyz >/dev/null"
kill -TERM "$DAEMON_PID"
term_sent=$SECONDS
wait "$DAEMON_PID" && code=0 || code=$?
DAEMON_PID=
check "SIGTERM: exit 0 (was $code) within 5 s" test "$code" -eq 0 -a $((SECONDS - term_sent)) -le 5
say "Vault unreachable: the daemon keeps running, one error per pass, not ready"
mkdir -p "$WORK/down"
cp "$WORK/token" "$WORK/down/token"
DOWN_PORT=$(free_port)
VAULT_ADDR=http://127.0.0.1:9 start_reloader "$BIN" "$WORK/down" "127.0.0.1:$DOWN_PORT" \
  --collector-sync-period 1s --reloader-run-period 1s
down_pid=$RELOADER_PID
LEADER_PIDS+=("$down_pid")
sleep 8
check "it is still running" kill -0 "$down_pid"
check "/readyz says not ready" test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DOWN_PORT/readyz")" = 503
check "/healthz still answers" quiet curl -sf "http://127.0.0.1:$DOWN_PORT/healthz"
kill -TERM "$down_pid"
wait "$down_pid" 2>/dev/null || true
# Counted once it has stopped: a pass logs its errors before its own line.
down_passes=$(grep -c 'reloader pass:' "$WORK/down/reloader.out" || true)
down_errors=$(grep -c 'level=error' "$WORK/down/reloader.err" || true)
check "at most one error per reloader pass ($down_errors errors in $down_passes passes)" \
  test "$down_passes" -ge 1 -a "$down_errors" -le "$down_passes"

say "two replicas with --leader-elect: one acts, a standby takes over"
lease_holder() { kubectl -n "$SA_NS" get lease vault-secrets-reloader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
held() { [[ -n $(lease_holder) ]]; }
held_by() { [[ $(lease_holder) == "$1" ]]; }
kubectl -n "$SA_NS" delete lease vault-secrets-reloader --ignore-not-found >/dev/null
declare -A REPLICA_PID REPLICA_PORT
for replica in replica-a replica-b; do
  REPLICA_PORT[$replica]=$(free_port)
  # A host name, not an address: the static binary must resolve it.
  VAULT_ADDR=${VAULT_ADDR/127.0.0.1/localhost} POD_NAME=$replica \
    start_reloader "$BIN" "$WORK" "127.0.0.1:${REPLICA_PORT[$replica]}" \
    --collector-sync-period 1s --reloader-run-period 2s --leader-elect --lease-namespace "$SA_NS"
  REPLICA_PID[$replica]=$RELOADER_PID
  LEADER_PIDS+=("$RELOADER_PID")
done
check "one replica holds the Lease" wait_until 20 held
leader=$(lease_holder)
standby=replica-a
[[ $leader == replica-a ]] && standby=replica-b
ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/readyz") == 200 ]]; }
check "the leader's /readyz is 200" wait_until 15 ready "${REPLICA_PORT[$leader]}"
check "the standby's /readyz is 200 too (a rolling update of two replicas can finish)" \
  wait_until 10 ready "${REPLICA_PORT[$standby]}"
check "the standby says so" bash -c "curl -s http://127.0.0.1:${REPLICA_PORT[$standby]}/readyz | grep -qx 'ok (standby)'"
check "/metrics shows who leads" bash -c "curl -sf http://127.0.0.1:${REPLICA_PORT[$leader]}/metrics | grep -qx 'vault_secrets_reloader_leader 1' &&
  curl -sf http://127.0.0.1:${REPLICA_PORT[$standby]}/metrics | grep -qx 'vault_secrets_reloader_leader 0'"
before=$(count deployment/init-only)
srv kv patch secret/other X=4 >/dev/null
check "one change, two replicas (VAULT_ADDR=http://localhost:…): reloaded exactly once" wait_until 20 count_is deployment/init-only $((before + 1))
check "and not again" stays 5 count_is deployment/init-only $((before + 1))
kill -KILL "${REPLICA_PID[$leader]}"
srv kv patch secret/other X=5 >/dev/null
check "the leader killed during a change: the standby reloads it (lease 15 s + a period)" \
  wait_until 25 count_is deployment/init-only $((before + 2))
check "exactly once" stays 5 count_is deployment/init-only $((before + 2))
check "the standby holds the Lease now" held_by "$standby"
kill -TERM "${REPLICA_PID[$standby]}"
wait "${REPLICA_PID[$standby]}" 2>/dev/null || true
check "SIGTERM releases the Lease" held_by ""

set +e
"$BIN" --reloader-run-period soon --kube-api-url "$KUBE_API_URL" >"$WORK/bad.out" 2>"$WORK/bad.err"
code=$?
set -e
check "a bad flag: exit 2 (was $code) and one line naming it" \
  bash -c "[[ $code -eq 2 && \$(wc -l <'$WORK/bad.err') -eq 1 ]] && grep -q -- --reloader-run-period '$WORK/bad.err'"

say "outside a cluster: --kubeconfig with a client certificate, then with a token"
# As on an edge cluster (k3s): a kubeconfig whose user is a client
# certificate from the cluster's CA, for a user bound to the daemon's roles.
EDGE=$WORK/edge
mkdir -p "$EDGE"
# run_with_kubeconfig ARGS...: one --once run with no --kube-* setting (nor
# KUBECONFIG, unless given), logging in to OpenBao as start_reloader does,
# with the ServiceAccount's token as VAULT_JWT_FILE; sets code.
run_with_kubeconfig() {
  env -u VAULT_TOKEN -u BAO_ADDR -u BAO_TOKEN -u KUBE_API_URL -u KUBE_TOKEN_FILE -u KUBE_CA_FILE \
    -u KUBERNETES_SERVICE_HOST KUBECONFIG="${EDGE_KUBECONFIG:-}" \
    VAULT_ADDR="$VAULT_ADDR" VAULT_AUTH_METHOD=kubernetes VAULT_ROLE="$SA" VAULT_PATH=kubernetes \
    VAULT_JWT_FILE="$WORK/token" LISTEN_ADDRESS="127.0.0.1:$(free_port)" \
    "$BIN" --once "$@" >>"$WORK/reloader.out" 2>>"$WORK/reloader.err" && code=0 || code=$?
}
edge_count_is() { count_is deployment/edge "$1"; }
if [[ -r ${TESTENV_DIR:-}/pki/ca.key ]]; then
  # A SEC1 EC key, as k3s writes them.
  openssl ecparam -name prime256v1 -genkey -noout -out "$EDGE/edge.key"
  openssl req -new -key "$EDGE/edge.key" -subj "/CN=$EDGE_USER" -out "$EDGE/edge.csr"
  printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature \
    extendedKeyUsage=clientAuth >"$EDGE/edge.ext"
  openssl x509 -req -in "$EDGE/edge.csr" -CA "$TESTENV_DIR/pki/ca.crt" -CAkey "$TESTENV_DIR/pki/ca.key" \
    -CAserial "$EDGE/ca.srl" -CAcreateserial -days 1 -extfile "$EDGE/edge.ext" -out "$EDGE/edge.crt" 2>/dev/null
  bind() { kubectl create --dry-run=client -o yaml "$@" | kubectl apply -f - >/dev/null; }
  bind clusterrolebinding "$EDGE_USER" --clusterrole="$SA" --user="$EDGE_USER"
  bind clusterrolebinding "$EDGE_USER-argo-rollouts" --clusterrole="$SA-argo-rollouts" --user="$EDGE_USER"
  bind -n "$SA_NS" rolebinding "$EDGE_USER-leader-election" --role="$SA-leader-election" --user="$EDGE_USER"
  check "auth can-i --list: the certificate's user may do exactly what the ServiceAccount may" \
    diff "$WORK/expected-rbac" <(granted "$EDGE_USER")
  cat >"$EDGE/config" <<KUBECONFIG
apiVersion: v1
kind: Config
current-context: edge
clusters:
- name: edge
  cluster:
    server: $KUBE_API_URL
    certificate-authority-data: $(base64 -w0 "$TESTENV_DIR/pki/ca.crt")
contexts:
- name: edge
  context: {cluster: edge, user: $EDGE_USER}
users:
- name: $EDGE_USER
  user:
    client-certificate: edge.crt
    client-key: edge.key
KUBECONFIG
  srv kv put secret/edge E=1 >/dev/null
  workload Deployment edge "$ON" "[$(container app '[{"name":"E","value":"vault:secret/data/edge#E"}]')]" |
    kubectl apply -f - >/dev/null
  run_with_kubeconfig --kubeconfig "$EDGE/config"
  check "--once --kubeconfig (client certificate, relative paths): exit 0 (was $code)" test "$code" -eq 0
  check "it recorded a baseline" has_state deployment/edge
  srv kv patch secret/edge E=2 >/dev/null
  run_with_kubeconfig --kubeconfig "$EDGE/config"
  check "after a change: exit 0 (was $code)" test "$code" -eq 0
  check "the workload is reloaded (count 1)" edge_count_is 1
  cp "$TESTENV_DIR/pki/ca.crt" "$EDGE/ca.crt"
  cat >"$EDGE/token-config" <<KUBECONFIG
apiVersion: v1
kind: Config
current-context: token
clusters:
- {name: by-ca, cluster: {server: "$KUBE_API_URL", certificate-authority: ca.crt}}
- {name: insecure, cluster: {server: "$KUBE_API_URL", insecure-skip-tls-verify: true}}
contexts:
- {name: token, context: {cluster: by-ca, user: sa}}
- {name: insecure, context: {cluster: insecure, user: sa}}
- {name: cloud, context: {cluster: by-ca, user: cloud}}
users:
- {name: sa, user: {token: "$(cat "$WORK/token")"}}
- {name: cloud, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}}}
KUBECONFIG
  srv kv patch secret/edge E=3 >/dev/null
  EDGE_KUBECONFIG=$EDGE/token-config:$EDGE/config run_with_kubeconfig
  check "KUBECONFIG=token-config:config (its first file, an inline token): exit 0 (was $code)" \
    test "$code" -eq 0
  check "the workload is reloaded again (count 2)" edge_count_is 2
  run_with_kubeconfig --kubeconfig "$EDGE/token-config" --context insecure
  check "--context with insecure-skip-tls-verify: exit 0 (was $code)" test "$code" -eq 0
  check "and a warning says verification is off" log_has "is off (the kubeconfig's insecure-skip-tls-verify)"
  run_with_kubeconfig --kubeconfig "$EDGE/token-config" --context cloud
  check "an exec user: exit 2 (was $code)" test "$code" -eq 2
  check "with one line naming it" bash -c "tail -n 1 '$WORK/reloader.err' |
    grep -q \"user 'cloud' authenticates with an exec credential plugin (exec), which is not supported\""
  check "nothing reloaded it twice (count 2)" edge_count_is 2
else
  say "skipped: no \$TESTENV_DIR/pki/ca.key to issue a client certificate with"
fi

say "least privilege, from the server's audit log"
audit_paths() {
  tail -n "+$AUDIT_FROM" "$VAULT_AUDIT_LOG" | python3 -c '
import json, sys
for line in sys.stdin:
    entry = json.loads(line)
    if entry.get("type") != "request":
        continue
    auth = entry.get("auth") or {}
    if "vault-secrets-reloader" in (auth.get("display_name") or "") or \
       "vault-secrets-reloader" in ",".join(auth.get("policies") or []):
        print(entry["request"]["path"])
'
}
audit_paths | sort | uniq -c | sort -rn >"$WORK/paths"
check "the daemon's requests appear in the audit log" grep -qE 'secret/(detailed-)?metadata/' "$WORK/paths"
if [[ $SERVER_KIND == openbao ]]; then
  check "the secrets at secret/ are read by listing the directory (--list-secret-metadata)" \
    grep -qE ' secret/detailed-metadata/$' "$WORK/paths"
else
  said_once() { # the listing's failure: at least once, at most once per daemon started
    local said starts
    said=$(grep -c 'listing secret/detailed-metadata/ failed: not found (404)' "$WORK/reloader.out")
    starts=$(grep -c 'vault-secrets-reloader .* starting' "$WORK/reloader.out")
    ((said >= 1 && said <= starts))
  }
  check "HashiCorp Vault has no detailed-metadata: said once per daemon, and each secret is read" \
    bash -c "$(declare -f said_once); WORK='$WORK'; said_once && grep -q ' secret/metadata/mysql$' '$WORK/paths'"
fi
# Logins: one per daemon started (a token lives 1 h here); a 403 on a path
# never makes it log in again. The tokens of daemons stopped by SIGTERM are
# revoked.
audit_auth_paths() { # the paths of the requests answered to the reloader's role, from the responses
  tail -n "+$AUDIT_FROM" "$VAULT_AUDIT_LOG" | python3 -c '
import json, sys
for line in sys.stdin:
    entry = json.loads(line)
    auth = entry.get("auth") or {}
    if entry.get("type") == "response" and \
       "vault-secrets-reloader" in ",".join(auth.get("policies") or []) + (auth.get("display_name") or ""):
        print(entry["request"]["path"])
'
}
logins=$(audit_auth_paths | grep -c '^auth/kubernetes/login$' || true)
starts=$(cat "$WORK"/*.out "$WORK"/*/*.out 2>/dev/null | grep -c 'vault-secrets-reloader .* starting' || true)
check "at most one login per daemon started, whatever the 403s ($logins logins, $starts starts)" \
  test "$logins" -ge 1 -a "$logins" -le "$starts"
check "tokens are revoked at shutdown (auth/token/revoke-self)" grep -qE ' auth/token/revoke-self$' "$WORK/paths"
check "the daemon never requested a secret's data" bash -c "! grep -E '(^| )[^ ]*/data/' '$WORK/paths' | grep -v 'sys/internal/ui/mounts/'"
check "no token or secret value in the logs" bash -c "! grep -qE 'totallydifferentsecret|changedwhiledown|s3cr3t2|changed-on-the-second-server|lifecycle-secret-|$SA_VAULT_TOKEN|$(cut -c1-40 "$WORK/token")' '$WORK/reloader.out' '$WORK/reloader.err'"
finish
