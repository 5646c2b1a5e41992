#!/usr/bin/env bash
# The alerting rules' unit checks (promtool, no server): the rules of
# manifests/optional/alerts.rules.yml are valid, the PrometheusRule of
# manifests/optional/prometheusrule.yaml holds the same rules, and the tests
# of tests/alerts/ (series as the daemon's /metrics shows them) pass.
# Installs Debian's prometheus package when promtool is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

need_prometheus
RULES=manifests/optional/alerts.rules.yml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
promtool check rules "$RULES"
# The PrometheusRule's spec, unindented, is the rules file without its
# leading comment.
sed -n '/^spec:$/,$p' manifests/optional/prometheusrule.yaml | tail -n +2 | sed 's/^  //' >"$work/spec.yml"
sed '/^#/d' "$RULES" | diff -u - "$work/spec.yml" ||
  { echo "manifests/optional/prometheusrule.yaml differs from $RULES" >&2; exit 1; }
promtool check rules "$work/spec.yml" >/dev/null
promtool test rules tests/alerts/*.yml
