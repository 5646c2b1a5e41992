# The test scripts' harness (source it after scripts/lib.sh; it runs
# nothing): the test environment, and checks counted up to the closing line
# "N passed, M failed" that CI reads.

# use_test_env: brings up scripts/testenv.sh and takes its variables, unless
# E2E_USE_CURRENT_ENV says they are exported already (scripts/kind-up.sh).
use_test_env() {
  if [[ -z ${E2E_USE_CURRENT_ENV:-} ]]; then
    scripts/testenv.sh up
    eval "$(scripts/testenv.sh env)"
  fi
  : "${KUBE_API_URL:?}" "${KUBE_CA_FILE:?}" "${VAULT_ADDR:?}" "${VAULT_TOKEN:?}"
  # The bao CLI reads BAO_* and talks to OpenBao itself; the daemon is
  # started without them (BAO_ADDR would name a second server).
  export BAO_ADDR=$VAULT_ADDR BAO_TOKEN=$VAULT_TOKEN
  export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
}

PASSED=0
FAILED=0
say() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok   - %s\n' "$1"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL - %s\n' "$1"; FAILED=$((FAILED + 1)); }
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }
not() { ! "$@"; }
quiet() { "$@" >/dev/null; }
# wait_until SECONDS CMD...: poll CMD until it succeeds or the time is up.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}
# Timing to the millisecond from a mark: bash's SECONDS counts whole seconds,
# so `wait_until 2` may give up after little more than 1 s.
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
mark() { T0=$(now_ms); }
# within LIMIT CMD...: CMD holds within LIMIT seconds (decimals allowed) of
# the last mark (polled every 0.2 s); TOOK is how long it took, in seconds.
within() {
  local limit_ms took
  limit_ms=$(awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }')
  shift
  while :; do
    if "$@"; then
      took=$(($(now_ms) - T0))
      TOOK=$(printf '%d.%03d' $((took / 1000)) $((took % 1000)))
      ((took <= limit_ms))
      return
    fi
    (($(now_ms) - T0 <= limit_ms)) || { TOOK="> $((limit_ms / 1000))"; return 1; }
    sleep 0.2
  done
}
# timed NAME LIMIT CMD...: a check that CMD holds within LIMIT seconds of
# the last mark, named NAME and the time it took.
timed() {
  local name=$1 rc=0
  shift
  within "$@" || rc=$?
  check "$name (took $TOOK s)" test "$rc" -eq 0
}
# stays SECONDS CMD...: CMD holds now and still holds after SECONDS.
stays() { local s=$1; shift; "$@" && sleep "$s" && "$@"; }
# stop_process PID: SIGTERM, then wait for it (nothing when it is gone).
stop_process() {
  if [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
# daemon_log_on_failure DIR: the daemon's last log lines (it logs to stdout)
# and anything on its stderr, when a check failed.
daemon_log_on_failure() {
  if ((FAILED > 0)); then
    echo "--- daemon log (last 40 lines)"
    tail -n 40 "$1/reloader.out" 2>/dev/null || true
    echo "--- daemon stderr (last 10 lines)"
    tail -n 10 "$1/reloader.err" 2>/dev/null || true
  fi
}
# finish: the closing line; fails when a check failed.
finish() {
  echo
  echo "$PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

# build_daemon: sets BIN to RELOADER_BIN, else to this repository's release
# build (built now, in the repository's own target dir whatever
# CARGO_TARGET_DIR says).
build_daemon() {
  if [[ -n ${RELOADER_BIN:-} ]]; then
    BIN=$RELOADER_BIN
  else
    CARGO_TARGET_DIR=$REPO/target cargo build --release --quiet
    BIN=$REPO/target/x86_64-unknown-linux-gnu/release/vault-secrets-reloader
  fi
}
