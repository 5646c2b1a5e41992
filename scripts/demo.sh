#!/usr/bin/env bash
# The walkthrough on this machine: brings up the local control plane and
# OpenBao (scripts/testenv.sh), creates sample workloads that use Vault
# secrets, starts the reloader, changes a secret, and shows what happened.
#
#   scripts/demo.sh        run it (the reloader keeps running afterwards)
#   scripts/demo.sh down   stop the reloader and the environment
#
# With Docker, scripts/kind-up.sh gives the same variables for a kind cluster:
#   eval "$(scripts/kind-up.sh)" && DEMO_USE_CURRENT_ENV=1 scripts/demo.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

DIR=${TESTENV_DIR:-$REPO/.testenv}/demo
NS=reloader-demo

if [[ ${1:-} == down ]]; then
  if [[ -f $DIR/reloader.pid ]]; then
    kill -TERM "$(cat "$DIR/reloader.pid")" 2>/dev/null || true
  fi
  scripts/testenv.sh down
  exit 0
fi

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "1. Local Kubernetes control plane and OpenBao (first run builds them; later runs take seconds)"
if [[ -z ${DEMO_USE_CURRENT_ENV:-} ]]; then
  scripts/testenv.sh up
  eval "$(scripts/testenv.sh env)"
fi
export BAO_ADDR=$VAULT_ADDR BAO_TOKEN=$VAULT_TOKEN
mkdir -p "$DIR"
if [[ -f $DIR/reloader.pid ]]; then
  kill -TERM "$(cat "$DIR/reloader.pid")" 2>/dev/null || true
fi
rm -f "$DIR"/reloader.*

say "2. Build the reloader"
cargo build --release --quiet
BIN=$REPO/target/x86_64-unknown-linux-gnu/release/vault-secrets-reloader
ls -l "$BIN" | awk '{printf "   %s: %.1f MiB\n", $NF, $5 / 1048576}'

say "3. Secrets in OpenBao, and a reloader identity that can read their metadata only"
bao kv put secret/mysql MYSQL_PASSWORD=3xtr3ms3cr3t >/dev/null
bao kv put secret/accounts/aws AWS_SECRET_ACCESS_KEY=s3cr3t >/dev/null
reloader_identity "$DIR"
echo "   secret/mysql and secret/accounts/aws written; policy: read on secret/metadata/*"

say "4. Sample workloads in namespace $NS"
kubectl delete namespace "$NS" --ignore-not-found >/dev/null
kubectl create namespace "$NS" >/dev/null
deployment() { # name, opt-in (true/false), env JSON
  local annotations='{}'
  [[ $2 == true ]] && annotations='{"'$RELOADER_PREFIX'/reload-on-secret-change":"true"}'
  cat <<EOF
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"$1","namespace":"$NS"},
 "spec":{"selector":{"matchLabels":{"app":"$1"}},"template":{"metadata":{"labels":{"app":"$1"},"annotations":$annotations},
 "spec":{"containers":[{"name":"app","image":"registry.invalid/app:1","env":$3}]}}}}
EOF
}
MYSQL='{"name":"MYSQL_PASSWORD","value":"vault:secret/data/mysql#${.MYSQL_PASSWORD}"}'
{
  deployment to-be-reloaded true "[$MYSQL]"
  deployment no-reload false "[$MYSQL]"
  deployment fixed-version true '[{"name":"MYSQL_PASSWORD","value":"vault:secret/data/mysql#${.MYSQL_PASSWORD}#1"}]'
  deployment aws-user true '[{"name":"AWS","value":"vault:secret/data/accounts/aws#AWS_SECRET_ACCESS_KEY"}]'
} | kubectl apply -f -
echo "   (their pods do not tolerate the test environment's fake nodes and stay Pending, but each rollout makes a new ReplicaSet)"

say "5. Start the reloader (collector every 2s, reloader every 3s)"
LISTEN=127.0.0.1:$(free_port)
start_reloader "$BIN" "$DIR" "$LISTEN" --collector-sync-period 2s --reloader-run-period 3s
echo "$RELOADER_PID" >"$DIR/reloader.pid"
echo "   pid $RELOADER_PID, health and metrics on http://$LISTEN/metrics"

count() { annotation "$NS" "deployment/$1" "$RELOADER_PREFIX/secret-reload-count"; }
baseline() { [[ -n $(annotation "$NS" deployment/to-be-reloaded "$RELOADER_PREFIX/observed-versions" meta) ]]; }
wait_for() { local deadline=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.5; done; }
wait_for 30 baseline || { echo "the reloader did not record a baseline; see $DIR/reloader.err"; exit 1; }
echo "   first sight: it recorded the versions each workload runs with, and reloaded nothing:"
echo "   $(annotation "$NS" deployment/to-be-reloaded "$RELOADER_PREFIX/observed-versions" meta)"

say "6. Change a secret: bao kv patch secret/mysql MYSQL_PASSWORD=totallydifferentsecret"
bao kv patch secret/mysql MYSQL_PASSWORD=totallydifferentsecret >/dev/null
reloaded() { [[ $(count to-be-reloaded) == 1 ]]; }
wait_for 30 reloaded || { echo "no reload seen; see $DIR/reloader.err"; exit 1; }
sleep 4

say "7. What happened"
for name in to-be-reloaded no-reload fixed-version aws-user; do
  c=$(count "$name")
  rs=$(kubectl -n "$NS" get rs -l "app=$name" -o name | wc -l)
  if [[ -n $c ]]; then
    printf '   %-16s reloaded: secret-reload-count=%s, %s ReplicaSets (a new rollout)\n' "$name" "$c" "$rs"
  else
    printf '   %-16s not reloaded, %s ReplicaSet\n' "$name" "$rs"
  fi
done
echo
echo "   no-reload does not opt in; fixed-version pins version 1; aws-user uses another secret."
echo "   The reloader's own words:"
grep -h "reloaded " "$DIR/reloader.out" | sed 's/^/   /'
echo "   The Event on the workload (kubectl describe shows it):"
kubectl -n "$NS" get events --field-selector reason=SecretsReloaded \
  -o custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message | sed 's/^/   /'

say "Try more"
cat <<EOF
   eval "\$(scripts/testenv.sh env)"; export BAO_ADDR=\$VAULT_ADDR BAO_TOKEN=\$VAULT_TOKEN
   bao kv patch secret/accounts/aws AWS_SECRET_ACCESS_KEY=new   # reloads aws-user
   bao kv metadata delete secret/mysql                           # an error line in the log
   tail -f $DIR/reloader.out $DIR/reloader.err
   kubectl -n $NS get deployments,replicasets
Stop everything with: scripts/demo.sh down
EOF
