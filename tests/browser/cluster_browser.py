#!/usr/bin/env python3
"""The dashboard of the live two-node cluster in headless Chromium.

tests/live/cluster_e2e.py runs this inside node-1's network namespace while its two nodes, two
agents and Prometheus are up. It starts `meshwatch-dashboard --prometheus URL` and then
`meshwatch-dashboard --agent URL --agent URL` (both agents), and for each drives Chromium over
overview -> namespace -> workload (clicking) -> the other workloads -> matrix, asserting what a
person sees against what the harness generated (--expect: a JSON file): each namespace's and
workload's verdict, the blockers with their kind and count (a kubelet probe stays a kubelet
probe through Prometheus), the namespace-wide and workload PeerAuthentication YAML, the
insufficient evidence, the matrix cells. Every page must load without a script error, a CSP
violation or a request leaving the dashboard. Screenshots go to --out.

The page helpers are tests/browser/dashboard_browser.py's (imported).

Usage: cluster_browser.py --dashboard BIN --prometheus URL --window W --agent URL [--agent URL]
                          --expect FILE --out DIR
Prints `cluster browser: N passed, M failed`; exits 1 on any failure.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dashboard_browser import (  # noqa: E402
    Browser, Checks, Dashboard, page_health, policy_of, row_texts, text, texts, visit)

LABEL = {"ready": "ready", "blocked": "blocked", "insufficient": "insufficient",
         "not_in_mesh": "not in mesh"}
KIND = {"no_sidecar": "client without sidecar", "kubelet_probe": "kubelet probe",
        "nodeport": "NodePort / LoadBalancer", "node": "node (hostNetwork)",
        "sidecar_plaintext": "sidecar sending plaintext", "app_tls": "application TLS"}


def namespace_yaml(ns, mode="STRICT"):
    return ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n"
            f"  name: default\n  namespace: {ns}\nspec:\n  mtls:\n    mode: {mode}\n")


def workload_yaml(ns, name, mode="STRICT"):
    return ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n"
            f"  name: {name}-strict\n  namespace: {ns}\nspec:\n  selector:\n"
            f"    matchLabels:\n      app: {name}\n  mtls:\n    mode: {mode}\n")


def one_source(b, c, dash, label, args, expect, out):
    """Every page of the dashboard over one source, against `expect`."""
    d = Dashboard(dash, *args)
    base = d.url
    try:
        print(f"{label}: {' '.join(args)}")
        visit(b, c, base, "/", f"{label} overview", f"{out}/cluster-{label}-overview.png")
        c.check(f"{label}: the source is named", expect["source_detail"][label] in (text(b, "body") or ""),
                expect["source_detail"][label])
        c.check(f"{label}: mesh {expect['mesh']}", text(b, "h1") == f"Mesh {LABEL[expect['mesh']]}", text(b, "h1"))
        rows = {r[0]: r[1] for r in row_texts(b, "namespaces")}
        want = {ns: LABEL[v] for ns, v in expect["namespaces"].items()}
        c.check(f"{label}: every namespace's verdict", rows == want, f"{rows} vs {want}")
        body = b.eval("document.body.innerText") or ""
        c.check(f"{label}: no agent down, evidence complete",
                "Agents not answering" not in body and "agents down" not in body.lower(), body[:400])
        top = sorted((r[0], r[1], r[4]) for r in row_texts(b, "blockers"))
        want_top = sorted((dst, src, KIND[kind]) for dst, bs in expect["blockers"].items()
                          for src, kind, _ in bs)
        c.check(f"{label}: the overview lists every blocker with its kind", top == want_top,
                f"\n  shown {top}\n  want  {want_top}")

        # overview -> namespace -> workload with the mouse
        ns = expect["ready_namespace"]
        b.click(f'table.namespaces a[href="/namespace?ns={ns}"]')
        page_health(b, c, base, f"{label} namespace {ns}")
        c.check(f"{label}: click overview -> namespace {ns}", text(b, "h1") == f"Namespace {ns} ready", text(b, "h1"))
        c.check(f"{label}: namespace-wide STRICT YAML", text(b, "#namespace-apply-yaml") == namespace_yaml(ns),
                text(b, "#namespace-apply-yaml"))
        # neither source knows the policies in force: the rollback deletes the new policy (never a
        # PERMISSIVE one of the same name), says what it cannot know, and saves it first
        pa = "peerauthentications.security.istio.io"
        rollback = text(b, "#namespace-rollback") or ""
        c.check(f"{label}: its rollback deletes the new policy",
                text(b, "#namespace-rollback-cmd") == f"kubectl delete {pa} --namespace={ns} default\n"
                and b.eval("document.querySelector('#namespace-rollback-yaml') === null")
                and "PERMISSIVE" not in rollback, rollback)
        c.check(f"{label}: its rollback says what it cannot know, and saves first",
                f"not known here: if {ns}/default existed before" in rollback
                and (text(b, "#namespace-rollback-save-cmd") or "").startswith(
                    f"kubectl get {pa} --namespace={ns} default -o yaml"), rollback)
        b.screenshot(f"{out}/cluster-{label}-namespace.png")
        w = expect["ready_workload"]
        b.click(f'table.workloads a[href="/workload?ns={ns}&name={w}"]')
        page_health(b, c, base, f"{label} workload {ns}/{w}")
        c.check(f"{label}: click namespace -> workload {ns}/{w}", text(b, "h1") == f"{ns}/{w} ready", text(b, "h1"))
        # Prometheus carries no pod labels: the selector is assumed, with a `# ASSUMED:` caveat
        c.check(f"{label}: {ns}/{w} STRICT YAML", policy_of(text(b, "#workload-apply-yaml")) == workload_yaml(ns, w),
                text(b, "#workload-apply-yaml"))
        c.check(f"{label}: {ns}/{w} kubectl line",
                policy_of(text(b, "#workload-apply-cmd")) == f"kubectl apply -f - <<'EOF'\n{workload_yaml(ns, w)}EOF\n")
        b.screenshot(f"{out}/cluster-{label}-workload-ready.png")

        # every workload: its verdict; the blocked ones their blockers, kinds and counts
        for wl, verdict in sorted(expect["workloads"].items()):
            wns, wname = wl.split("/")
            shot = f"{out}/cluster-{label}-workload-{wns}-{wname}.png"
            visit(b, c, base, f"/workload?ns={wns}&name={wname}", f"{label} workload {wl}", shot)
            c.check(f"{label}: {wl} {verdict}", text(b, "h1") == f"{wl} {LABEL[verdict]}", text(b, "h1"))
            if verdict == "blocked":
                shown = sorted((r[0], r[3], r[4]) for r in row_texts(b, "blockers"))
                want_b = sorted((src, KIND[kind], str(n)) for src, kind, n in expect["blockers"][wl])
                c.check(f"{label}: {wl} blockers, kinds and counts", shown == want_b,
                        f"\n  shown {shown}\n  want  {want_b}")
                remedies = [r[6] for r in row_texts(b, "blockers")]
                c.check(f"{label}: {wl} each blocker has its remedy", all(remedies), remedies)
                c.check(f"{label}: {wl} no policy while blocked",
                        b.eval("document.querySelector('#workload-apply-yaml') === null"))
            if verdict == "insufficient":
                ev = dict(zip(texts(b, "dl.evidence dt"), texts(b, "dl.evidence dd")))
                c.check(f"{label}: {wl} insufficient, saying why",
                        expect["insufficient_reason"] in ev.get("Verdict", ""), ev)

        visit(b, c, base, "/matrix", f"{label} matrix", f"{out}/cluster-{label}-matrix.png")
        titles = texts(b, "svg.matrix g.cell title")
        for cell in expect["matrix"]:
            c.check(f"{label}: matrix cell {cell}", any(t.startswith(cell) for t in titles), titles)
    finally:
        d.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dashboard", required=True)
    p.add_argument("--prometheus", required=True)
    p.add_argument("--window", required=True)
    p.add_argument("--agent", action="append", required=True)
    p.add_argument("--expect", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not shutil.which("chromium"):
        print("  FAIL chromium is installed: run scripts/install-deps.sh")
        print("cluster browser: 0 passed, 1 failed")
        return 1
    with open(a.expect) as f:
        expect = json.load(f)
    expect["source_detail"] = {"prometheus": a.prometheus, "agents": a.agent[0]}
    os.makedirs(a.out, exist_ok=True)
    c = Checks()
    started = time.time()
    sources = [("prometheus", ["--prometheus", a.prometheus, "--window", a.window]),
               ("agents", [x for url in a.agent for x in ("--agent", url)])]
    with tempfile.TemporaryDirectory(prefix="mw-cluster-browser-", ignore_cleanup_errors=True) as work:
        b = Browser(os.path.join(work, "profile"))
        try:
            for label, args in sources:
                try:
                    one_source(b, c, a.dashboard, label, args, expect, a.out)
                except Exception as e:  # a broken source fails, the other still runs
                    traceback.print_exc()
                    c.check(f"{label}: ran to the end", False, e)
        finally:
            b.close()
    print(f"screenshots in {a.out}; {time.time() - started:.1f} s")
    print(f"cluster browser: {c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
