#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests (multi-document YAML on stdin or in files).

Kubernetes' own kinds: against the OpenAPI schemas kubernetes-validate carries, strict (unknown
fields are errors), for each Kubernetes version given with -k (default: the oldest and the
newest this deployment supports). prometheus-operator kinds: against deploy/schemas/ (written
for this repository; kubernetes-validate has no schema for custom resources). Any other kind is
an error: nothing in deploy/ may go unchecked. A PrometheusRule's groups must also pass
`promtool check rules`.

Prints one line per object and 'manifests: N passed, M failed'; exits 1 on a failure.
Usage: python3 scripts/validate_manifests.py [-k 1.27.0 -k 1.33.0] FILE...
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUSTOM = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "deploy/schemas/prometheusrule-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "deploy/schemas/servicemonitor-v1.json",
}
VERSIONS = ["1.27.0", "1.33.0"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", "--kubernetes-version", action="append")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    versions = a.kubernetes_version or VERSIONS
    passed, failed = 0, []
    for path in a.files:
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        if not docs:
            failed.append(f"{path}: no objects")
        for doc in docs:
            name = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('namespace', '')}/{doc.get('metadata', {}).get('name')}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            errors = []
            if key in CUSTOM:
                schema = json.load(open(os.path.join(ROOT, CUSTOM[key])))
                v = jsonschema.Draft202012Validator(schema)
                errors += [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]
                if doc["kind"] == "PrometheusRule" and not errors:
                    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                        yaml.safe_dump(doc["spec"], f)
                        f.flush()
                        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
                        if r.returncode != 0:
                            errors.append("promtool check rules: " + (r.stdout + r.stderr).strip()[-500:])
                checked = CUSTOM[key]
            else:
                checked = []
                for version in versions:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                        checked.append(version)
                    except kubernetes_validate.SchemaNotFoundError:
                        errors.append(f"no schema for {key} in Kubernetes {version}")
                    except kubernetes_validate.ValidationError as e:
                        path_ = "/".join(map(str, e.path)) if hasattr(e, "path") else ""
                        errors.append(f"Kubernetes {version}: {path_}: {e.message}")
                checked = "Kubernetes " + ", ".join(checked)
            if errors:
                failed.append(name + ": " + "; ".join(errors))
                print(f"FAIL {name}")
                for e in errors:
                    print(f"     {e}")
            else:
                passed += 1
                print(f"ok   {name} ({checked})")
    print(f"manifests: {passed} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
