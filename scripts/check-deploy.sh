#!/usr/bin/env bash
# deploy/ renders with `kubectl kustomize` (the plain install and the prometheus-operator overlay)
# and every rendered object is valid: Kubernetes' kinds against the OpenAPI schemas
# (kubernetes-validate, strict, oldest and newest supported version), the PrometheusRule and
# ServiceMonitor against deploy/schemas/, the PrometheusRule's groups with promtool. The
# kustomizations keep to kustomize 2.0's fields, which Debian 12's kubectl 1.20 understands.
# The generated PrometheusRule is compared with grafana/generate.py's by check-monitoring.sh;
# what the DaemonSet runs (arguments, MESHWATCH_* variables, privileges) by tests/tests/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import glob, os, sys, yaml
# the fields kustomize 2.0.3 (kubectl 1.20, Debian 12's kubernetes-client) knows
known = {"apiVersion", "kind", "namespace", "namePrefix", "nameSuffix", "commonLabels", "commonAnnotations",
         "resources", "bases", "patchesStrategicMerge", "patchesJson6902", "images", "configMapGenerator",
         "secretGenerator", "generatorOptions", "vars", "crds", "configurations"}
bad = []
for path in sorted(glob.glob("deploy/**/kustomization.yaml", recursive=True)):
    k = yaml.safe_load(open(path))
    bad += [f"{path}: `{key}` is newer than kustomize 2.0" for key in k if key not in known]
    if k.get("kind") != "Kustomization":
        bad.append(f"{path}: kind {k.get('kind')} (a Component needs kustomize 3.7)")
    here = os.path.dirname(path)
    bad += [f"{path}: resource {r} is a directory (kustomize 2.0 wants it under bases:)"
            for r in k.get("resources", []) if os.path.isdir(os.path.join(here, r))]
for b in bad:
    print(f"FAIL {b}")
print(f"kustomizations: {0 if bad else 1} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
PY

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
quiet() { grep -v "'bases' is deprecated" >&2 || true; }
kubectl kustomize deploy > "$out/meshwatch.yaml" 2> >(quiet)
kubectl kustomize deploy/overlays/prometheus-operator > "$out/meshwatch-prometheus-operator.yaml" 2> >(quiet)
python3 scripts/validate_manifests.py "$out/meshwatch.yaml" "$out/meshwatch-prometheus-operator.yaml"
