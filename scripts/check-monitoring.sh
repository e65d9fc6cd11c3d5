#!/usr/bin/env bash
# The monitoring mixin (grafana/): the committed dashboards, rules and PrometheusRule are what
# grafana/generate.py makes (byte for byte: Istio's gen-check), the dashboards and rules pass
# grafana/lint.py, and the rules pass `promtool check rules` and their unit tests
# (`promtool test rules grafana/tests/rules_test.yaml`). No root needed.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "check-monitoring: gen-check"
python3 grafana/generate.py --out "$out"
stale=0
for f in grafana/dashboards/meshwatch-migration.json grafana/dashboards/meshwatch-workload.json \
         grafana/dashboards/meshwatch-agent.json grafana/rules/meshwatch.rules.yaml \
         deploy/prometheus-operator/prometheusrule.yaml; do
    if ! cmp -s "$out/$f" "$f"; then
        echo "  $f differs from what grafana/generate.py makes:" >&2
        diff -u "$f" "$out/$f" | head -20 >&2 || true
        stale=1
    fi
done
# nothing generated that is not committed (a dashboard added to the generator, not to git)
extra=$(cd "$out" && find grafana deploy -type f | sort)
expected=$(printf '%s\n' deploy/prometheus-operator/prometheusrule.yaml grafana/dashboards/meshwatch-agent.json \
    grafana/dashboards/meshwatch-migration.json grafana/dashboards/meshwatch-workload.json \
    grafana/rules/meshwatch.rules.yaml | sort)
if [ "$extra" != "$expected" ]; then
    echo "  the generator writes files this check does not compare:" >&2
    diff <(echo "$expected") <(echo "$extra") >&2 || true
    stale=1
fi
if [ "$stale" != 0 ]; then
    echo "check-monitoring: run 'python3 grafana/generate.py' and commit the result" >&2
    exit 1
fi

echo "check-monitoring: lint"
python3 grafana/lint.py

echo "check-monitoring: promtool"
promtool check rules grafana/rules/meshwatch.rules.yaml
promtool test rules grafana/tests/rules_test.yaml
