#!/usr/bin/env bash
# The whole test suite, as CI runs it: format and lint checks (and the module
# layers, scripts/layers.py), unit tests, the alerting rules' promtool tests,
# then the real local control plane, OpenBao and HashiCorp Vault
# (scripts/testenv.sh), their self-test, the clients' integration tests
# (tests/live.rs), the end-to-end test on both servers, the fault suite,
# the alerting suite (a real Prometheus), the watch-stream suite, the
# dynamic-secret suite, the hostile-tenant suite, rollout waves, reload
# windows, the release binaries
# (scripts/release.sh builds them, installing its tools when missing) and a
# small run of the benchmark. The environment is always taken down.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
step "module layers (no upward import, no import cycle)"
python3 scripts/layers.py
step "unit tests"
cargo test --quiet
step "alerting rules (promtool check and test: scripts/alerts.sh)"
scripts/alerts.sh

step "test environment up"
trap 'step "test environment down"; scripts/testenv.sh down' EXIT
scripts/testenv.sh up
step "test environment self-test"
scripts/testenv-selftest.sh
step "integration tests (the clients against the real servers)"
(eval "$(scripts/testenv.sh env)" && cargo test --quiet --test live -- --ignored --test-threads 1)
step "end-to-end"
scripts/e2e.sh
step "fault suite (a fault-injecting proxy before OpenBao and before the API server)"
scripts/e2e-faults.sh
step "alerting suite (a real Prometheus on the daemon's /metrics: OpenBao fails, the alert fires, then resolves)"
scripts/e2e-alerts.sh
step "watch-stream suite (30 namespaces, an API server restart, 410 through a TLS fault proxy, watch forbidden)"
scripts/e2e-streams.sh
step "dynamic-secret suite (leased credentials renewed by rollouts: database and PKI roles, kill -9, first sight, 20 at once, audit)"
scripts/e2e-dynamic.sh
step "hostile-tenant suite (5,500 missing and denied paths, a spy, renewals at 1%, health abuse: another namespace is not delayed)"
scripts/e2e-tenants.sh
step "rollout waves (40 Deployments whose pods run on KWOK share a secret: at most 5 roll at once; a failed canary holds the rest)"
scripts/e2e-waves.sh
step "reload windows (a window closes for 40 s: a change waits and is rolled once when it opens; a bad window is none)"
scripts/e2e-windows.sh
step "release binaries (musl x86-64 and arm64, the arm64 one under qemu)"
scripts/e2e-release.sh
step "benchmark smoke run (ns5:50/50; the full run is scripts/bench.sh)"
scripts/bench.sh --smoke
