#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium driven over the DevTools protocol.

For reports made by `meshwatch analyze --format json` from pcaps/ (istio-migration-before,
nat-node-any, in-pod-node, and the first one again under hostile workload names), and for a live
`--agent` source (two local servers replaying answers recorded from real agents), it loads every
page, checks the verdicts, blockers and YAML a person sees, clicks overview -> namespace ->
workload with the mouse, copies a policy with its button, watches a live page reload itself, and
saves screenshots. Any script error, CSP violation or request that leaves the dashboard fails.

Usage: dashboard_browser.py --dashboard BIN --meshwatch BIN [--out DIR]
Prints `dashboard browser: N passed, M failed`; exits 1 on any failure.
"""

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

import websocket  # python3-websocket (Debian) / websocket-client (PyPI)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
]
WIDTH, HEIGHT = 1366, 900

# hostile names: each would set window.__pwned if it ever ran
HOSTILE = {
    "ns_script": '<script>window.__pwned="script"</script>',
    "wl_attr": '"><img src=x onerror="window.__pwned=\'img\'">',
    "wl_quote": "' onmouseover='window.__pwned=1' x='",
    "ns_close": "</pre></textarea><svg onload=\"window.__pwned='svg'\">&amp;",
    "wl_js": "javascript:window.__pwned=1",
    "big": "A" * 5000 + "<b>bold</b>" + "B" * 5000,
}


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok   {name}")
        else:
            self.failed.append(name)
            print(f"  FAIL {name}{': ' + str(detail)[:600] if detail else ''}")
        return ok


class Browser:
    """One Chromium, one page, the DevTools protocol over a WebSocket."""

    def __init__(self, profile):
        self.proc = subprocess.Popen(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start (DevToolsActivePort missing)")
            time.sleep(0.05)
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0
        self.events = []
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})

    def send(self, method, params=None):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method, timeout=15):
        deadline = time.time() + timeout
        for i, e in enumerate(self.events):
            if e["method"] == method:
                return self.events.pop(i)
        self.ws.settimeout(timeout)
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                if msg["method"] == method:
                    return msg
                self.events.append(msg)
        raise TimeoutError(method)

    def drain(self, kinds):
        """The events of `kinds` seen so far (removed)."""
        self.send("Runtime.evaluate", {"expression": "1"})  # flush what is in flight
        got = [e for e in self.events if e["method"] in kinds]
        self.events = [e for e in self.events if e["method"] not in kinds]
        return got

    def navigate(self, url):
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def eval(self, expression, await_promise=False):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": await_promise})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def click(self, selector, navigates=True):
        """A real mouse click at the centre of the element's first line box."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getClientRects()[0];"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if box is None:
            raise RuntimeError(f"nothing matches {selector}")
        if navigates:
            self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1})
        if navigates:
            self.wait_event("Page.loadEventFired")

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Dashboard:
    """meshwatch-dashboard on a free port."""

    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"serving (http://127\.0\.0\.1:\d+)/", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"the dashboard did not start: {line!r}")
        self.url = m.group(1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def report(meshwatch, pcap, workloads, out):
    with open(out, "w") as f:
        subprocess.run([meshwatch, "analyze", "--format", "json", "--workloads", workloads, pcap],
                       stdout=f, check=True)
    return out


def text(b, selector):
    return b.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || null")


def policy_of(t):
    """A suggested policy without its caveats: `# ASSUMED:` (a selector resting on the
    `app: <workload>` convention where the pod labels are not known) and `# UNCHECKED:` (a new
    workload policy where the policies in force are not known)."""
    return "".join(l for l in (t or "").splitlines(keepends=True)
                   if not l.startswith(("# ASSUMED: ", "# UNCHECKED: ")))


def texts(b, selector):
    return b.eval(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)")


def row_texts(b, table):
    return b.eval(f"[...document.querySelectorAll('table.{table} tbody tr')]"
                  ".map(r => [...r.cells].map(c => c.textContent.trim()))")


HEALTH_EVENTS = {"Runtime.exceptionThrown", "Log.entryAdded", "Network.requestWillBeSent",
                 "Runtime.consoleAPICalled"}


def page_health(b, c, base, label):
    """No script error, no CSP violation, no request outside the dashboard, nothing injected."""
    events = b.drain(HEALTH_EVENTS)
    errors = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    errors += [e["params"]["entry"]["text"] for e in events if e["method"] == "Log.entryAdded"
               and e["params"]["entry"]["level"] == "error"]
    errors += [e["params"] for e in events if e["method"] == "Runtime.consoleAPICalled"
               and e["params"]["type"] == "error"]
    c.check(f"{label}: no script error or CSP violation", not errors, errors)
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    outside = [u for u in urls if not (u.startswith(base) or u.startswith("data:"))]
    c.check(f"{label}: every request goes to the dashboard", not outside, outside)
    c.check(f"{label}: nothing injected ran", b.eval("window.__pwned === undefined"),
            b.eval("String(window.__pwned)"))


def visit(b, c, base, path, label, shots=None):
    b.drain(HEALTH_EVENTS)  # what an earlier page left
    b.navigate(base + path)
    page_health(b, c, base, label)
    if shots:
        b.screenshot(shots)


PA = "peerauthentications.security.istio.io"
BAR_NS_STRICT = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n"
                 "  name: default\n  namespace: bar\nspec:\n  mtls:\n    mode: STRICT\n")
BAR_HTTPBIN_STRICT = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n"
                      "  name: httpbin-strict\n  namespace: bar\nspec:\n  selector:\n"
                      "    matchLabels:\n      app: httpbin\n  mtls:\n    mode: STRICT\n")


def migration(b, c, dash, meshwatch, work, shots):
    rep = report(meshwatch, f"{ROOT}/pcaps/istio-migration-before.pcap",
                 f"{ROOT}/pcaps/istio-migration-before.workloads.yaml", f"{work}/migration.json")
    d = Dashboard(dash, "--report", rep)
    base = d.url
    try:
        print("istio-migration-before")
        visit(b, c, base, "/", "overview", f"{shots}/overview.png")
        c.check("overview: mesh blocked", text(b, "h1") == "Mesh blocked", text(b, "h1"))
        rows = row_texts(b, "namespaces")
        c.check("overview: bar ready, foo blocked, legacy insufficient",
                [r[:2] for r in rows] == [["bar", "ready"], ["foo", "blocked"],
                                          ["legacy", "insufficient"]], rows)
        blockers = row_texts(b, "blockers")
        c.check("overview: the blocker, its kind and remedy",
                blockers and blockers[0][:6] == ["foo/httpbin", "legacy/sleep", "8000", "plaintext",
                                                 "client without sidecar", "3"]
                and blockers[0][7].startswith("the client has no sidecar"), blockers)

        # overview -> namespace -> workload, with the mouse
        b.click('table.namespaces a[href="/namespace?ns=bar"]')
        page_health(b, c, base, "namespace bar")
        c.check("click: overview -> namespace bar",
                b.eval("location.pathname + location.search") == "/namespace?ns=bar")
        c.check("namespace bar: ready", text(b, "h1") == "Namespace bar ready", text(b, "h1"))
        c.check("namespace bar: namespace-wide STRICT YAML",
                text(b, "#namespace-apply-yaml") == BAR_NS_STRICT, text(b, "#namespace-apply-yaml"))
        # the report knows no policy in force: the rollback deletes the new policy (never a
        # PERMISSIVE one of the same name), says what it cannot know, and saves it first
        c.check("namespace bar: rollback deletes the new policy",
                text(b, "#namespace-rollback-cmd") == f"kubectl delete {PA} --namespace=bar default\n"
                and b.eval("document.querySelector('#namespace-rollback-yaml') === null")
                and "PERMISSIVE" not in (text(b, "#namespace-rollback") or ""),
                text(b, "#namespace-rollback"))
        c.check("namespace bar: rollback says what it cannot know, and saves first",
                "not known here: if bar/default existed before" in (text(b, "#namespace-rollback") or "")
                and (text(b, "#namespace-rollback-save-cmd") or "").startswith(
                    f"kubectl get {PA} --namespace=bar default -o yaml"),
                text(b, "#namespace-rollback"))
        b.screenshot(f"{shots}/namespace.png")
        b.click('table.workloads a[href="/workload?ns=bar&name=httpbin"]')
        page_health(b, c, base, "workload bar/httpbin")
        c.check("click: namespace -> workload bar/httpbin",
                b.eval("location.search") == "?ns=bar&name=httpbin")
        c.check("bar/httpbin: ready", text(b, "h1") == "bar/httpbin ready", text(b, "h1"))
        # the bundled workloads file lists no pod labels: the selector is assumed, and says so
        c.check("bar/httpbin: STRICT YAML", policy_of(text(b, "#workload-apply-yaml")) == BAR_HTTPBIN_STRICT,
                text(b, "#workload-apply-yaml"))
        c.check("bar/httpbin: the YAML says what its selector assumes",
                (text(b, "#workload-apply-yaml") or "").startswith("# ASSUMED: the pod labels are not known here"))
        c.check("bar/httpbin: the YAML says an older policy, unseen, may win",
                "\n# UNCHECKED: the PeerAuthentications in force are not known here: an older one in bar"
                in (text(b, "#workload-apply-yaml") or ""), text(b, "#workload-apply-yaml"))
        c.check("bar/httpbin: the rollback deletes the new policy",
                text(b, "#workload-rollback-cmd") == f"kubectl delete {PA} --namespace=bar httpbin-strict\n"
                and "PERMISSIVE" not in (text(b, "#workload-rollback") or ""),
                text(b, "#workload-rollback"))
        c.check("bar/httpbin: kubectl command",
                policy_of(text(b, "#workload-apply-cmd")) == f"kubectl apply -f - <<'EOF'\n{BAR_HTTPBIN_STRICT}EOF\n")
        c.check("bar/httpbin: all mTLS, so a lock", b.eval("document.querySelectorAll('main > p svg.lock').length") == 1)
        b.send("Browser.grantPermissions", {"origin": base,
                                            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        b.click('button[data-copy="workload-apply-yaml"]', navigates=False)
        time.sleep(0.3)
        c.check("copy button: says Copied", text(b, 'button[data-copy="workload-apply-yaml"]') == "Copied",
                text(b, 'button[data-copy="workload-apply-yaml"]'))
        copied = b.eval("navigator.clipboard.readText()", await_promise=True)
        c.check("copy button: the clipboard holds the YAML", copied == text(b, "#workload-apply-yaml")
                and policy_of(copied) == BAR_HTTPBIN_STRICT, copied)
        b.screenshot(f"{shots}/workload-ready.png")

        visit(b, c, base, "/workload?ns=foo&name=httpbin", "workload foo/httpbin", f"{shots}/workload-blocked.png")
        c.check("foo/httpbin: blocked", text(b, "h1") == "foo/httpbin blocked", text(b, "h1"))
        c.check("foo/httpbin: honest share, no lock",
                text(b, "main > p .pct") == "66 % Istio mTLS" and b.eval("document.querySelectorAll('svg.lock').length") == 0,
                text(b, "main > p .pct"))
        blockers = row_texts(b, "blockers")
        c.check("foo/httpbin: blocker legacy/sleep with its remedy",
                blockers and blockers[0][:5] == ["legacy/sleep", "8000", "plaintext", "client without sidecar", "3"]
                and "needs a sidecar, ambient, or an explicit exception" in blockers[0][6], blockers)
        exempt = texts(b, "ul.exempted li")
        c.check("foo/httpbin: exempted probes and why",
                len(exempt) == 2 and "Istio's merged metrics and rewritten kubelet probes" in exempt[0]
                and "health check" in exempt[1], exempt)
        c.check("foo/httpbin: no policy while blocked",
                b.eval("document.querySelector('#workload-apply-yaml') === null")
                and "fix the blockers first" in (text(b, "main") or ""))

        visit(b, c, base, "/workload?ns=foo&name=sleep", "workload foo/sleep")
        ev = dict(zip(texts(b, "dl.evidence dt"), texts(b, "dl.evidence dd")))
        c.check("foo/sleep: insufficient, with its evidence",
                text(b, "h1") == "foo/sleep insufficient"
                and ev.get("Verdict") == "insufficient: no inbound connections seen"
                and ev.get("Packet drops") == "not recorded in capture files"
                and ev.get("Decode errors") == "none" and ev.get("Window", "").startswith("the capture, "), ev)

        visit(b, c, base, "/matrix", "matrix", f"{shots}/matrix.png")
        titles = texts(b, "svg.matrix g.cell title")
        c.check("matrix: legacy/sleep -> foo/httpbin all plaintext",
                any(t.startswith("legacy/sleep → foo/httpbin: 3 connections, 100 % plaintext") for t in titles), titles)
        c.check("matrix: mTLS pairs at 0 %",
                any(t.startswith("foo/sleep → bar/httpbin: 3 connections, 0 % plaintext") for t in titles), titles)
        c.check("matrix: drawn", b.eval("document.querySelector('svg.matrix rect').getBoundingClientRect().width") == 26)

        visit(b, c, base, "/namespace?ns=foo", "namespace foo")
        visit(b, c, base, "/namespace?ns=legacy", "namespace legacy")
        for w in ("bar&name=sleep", "legacy&name=sleep"):
            visit(b, c, base, f"/workload?ns={w}", f"workload {w}")
        b.navigate(base + "/api/overview")
        api = json.loads(b.eval("document.body.innerText"))
        c.check("JSON: /api/overview", api["mesh"]["verdict"] == "blocked" and api["totals"]["ready"] == 1)
    finally:
        d.stop()


def nat_and_in_pod(b, c, dash, meshwatch, work, shots):
    print("nat-node-any")
    rep = report(meshwatch, f"{ROOT}/pcaps/nat-node-any.pcap", f"{ROOT}/pcaps/nat-node-any.workloads.yaml",
                 f"{work}/nat.json")
    d = Dashboard(dash, "--report", rep)
    try:
        visit(b, c, d.url, "/", "nat overview")
        rows = row_texts(b, "namespaces")
        c.check("nat: legacy not in mesh", ["legacy", "not in mesh"] in [r[:2] for r in rows], rows)
        visit(b, c, d.url, "/workload?ns=foo&name=httpbin", "nat foo/httpbin", f"{shots}/workload-nat.png")
        kinds = sorted(r[3] for r in row_texts(b, "blockers"))
        c.check("nat: four kinds of blockers",
                kinds == ["NodePort / LoadBalancer", "client without sidecar", "kubelet probe", "node (hostNetwork)"], kinds)
        visit(b, c, d.url, "/matrix", "nat matrix")
    finally:
        d.stop()
    print("in-pod-node")
    rep = report(meshwatch, f"{ROOT}/pcaps/in-pod-node.pcap", f"{ROOT}/pcaps/in-pod-node.workloads.yaml",
                 f"{work}/in-pod.json")
    d = Dashboard(dash, "--report", rep)
    try:
        visit(b, c, d.url, "/", "in-pod overview")
        visit(b, c, d.url, "/workload?ns=bar&name=httpbin", "in-pod bar/httpbin")
        rows = row_texts(b, "blockers")
        c.check("in-pod: a sidecar sending plaintext",
                rows and rows[0][3] == "sidecar sending plaintext" and "DestinationRule" in rows[0][6], rows)
    finally:
        d.stop()


def hostile(b, c, dash, meshwatch, work, shots):
    print("hostile names")
    h = HOSTILE
    q = json.dumps
    workloads = (
        "workloads:\n"
        f"  - {{namespace: {q(h['ns_script'])}, workload: {q(h['wl_attr'])}, ips: [\"10.244.1.21\"], labels: {{app: {q(h['wl_quote'])}}}}}\n"
        f"  - {{namespace: {q(h['ns_script'])}, workload: {q(h['wl_quote'])}, ips: [\"10.244.1.22\"]}}\n"
        f"  - {{namespace: {q(h['ns_close'])}, workload: {q(h['big'])}, ips: [\"10.244.1.11\"]}}\n"
        f"  - {{namespace: {q(h['ns_close'])}, workload: {q(h['wl_js'])}, ips: [\"10.244.1.12\"]}}\n"
        f"  - {{namespace: {q(h['big'])}, workload: sleep, ips: [\"10.244.1.31\"]}}\n"
        f"nodes:\n  - {{name: {q(h['wl_attr'])}, ips: [10.244.1.1]}}\n")
    wpath = f"{work}/hostile.workloads.yaml"
    with open(wpath, "w") as f:
        f.write(workloads)
    rep = report(meshwatch, f"{ROOT}/pcaps/istio-migration-before.pcap", wpath, f"{work}/hostile.json")
    d = Dashboard(dash, "--report", rep)
    try:
        visit(b, c, d.url, "/", "hostile overview", f"{shots}/hostile-overview.png")
        names = [r[0] for r in row_texts(b, "namespaces")]
        c.check("hostile: namespace names shown as the very text",
                h["ns_close"] in names and h["ns_script"] in names
                and any(n.startswith("A" * 79) and n.endswith("…") and len(n) == 80 for n in names), names)
        hrefs = b.eval("[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
        for href in hrefs:
            visit(b, c, d.url, href, f"hostile {href[:60]}")
        c.check("hostile: every link stays in the dashboard", all(x.startswith("/") for x in hrefs), hrefs)
        # the workload page of the ready one: its YAML names the hostile names as data
        ns_link = [x for x in hrefs if x.startswith("/namespace?ns=%3Cscript")]
        if c.check("hostile: the namespace link", len(ns_link) == 1, hrefs):
            b.navigate(d.url + ns_link[0])
            b.click("table.workloads a")
            page_health(b, c, d.url, "hostile workload")
            yaml = text(b, "#workload-apply-yaml") or ""
            c.check("hostile: YAML names them as quoted strings",
                    f"namespace: {q(h['ns_script'])}" in yaml and f"app: {q(h['wl_quote'])}" in yaml, yaml)
            b.screenshot(f"{shots}/hostile-workload.png")
        visit(b, c, d.url, "/matrix", "hostile matrix")
    finally:
        d.stop()


class AgentHandler(http.server.BaseHTTPRequestHandler):
    """Answers /api/v1/* as a recorded agent did."""

    def do_GET(self):
        m = re.fullmatch(r"/api/v1/(edges|verdicts|status)", self.path)
        if not m:
            self.send_error(404)
            return
        body = open(os.path.join(self.server.fixtures, f"{self.server.node}.{m.group(1)}.json"), "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def fake_agent(node):
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), AgentHandler)
    srv.daemon_threads = True
    srv.fixtures = os.path.join(ROOT, "dashboard", "tests", "fixtures", "agents")
    srv.node = node
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def live(b, c, dash, shots):
    print("live: two agents")
    a1, a2 = fake_agent("node-1"), fake_agent("node-2")
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in (a1, a2)]
    d = Dashboard(dash, "--agent", urls[0], "--agent", urls[1], "--refresh", "2", "--timeout", "2")
    try:
        visit(b, c, d.url, "/", "live overview", f"{shots}/live-overview.png")
        c.check("live: verdicts from the merged agents",
                text(b, "h1") == "Mesh blocked" and [r[:2] for r in row_texts(b, "namespaces")][0] == ["bar", "ready"],
                row_texts(b, "namespaces"))
        b.eval("window.__marker = 1")
        a2.shutdown()
        a2.server_close()
        time.sleep(5)  # the dashboard re-reads (2 s); the page reloads itself (2 s)
        c.check("live: the page reloaded itself", b.eval("window.__marker === undefined"))
        page_health(b, c, d.url, "live reload")
        c.check("live: the agent that stopped is named",
                f"Agents not answering: {urls[1]}" in (b.eval("document.body.innerText") or ""))
        rows = row_texts(b, "namespaces")
        c.check("live: nothing is ready with a node missing", all(r[1] != "ready" for r in rows), rows)
        b.screenshot(f"{shots}/live-agent-down.png")
    finally:
        d.stop()
        a1.shutdown()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dashboard", required=True)
    p.add_argument("--meshwatch", required=True)
    p.add_argument("--out", default=os.path.join(ROOT, "target", "screenshots"))
    a = p.parse_args()
    if not shutil.which("chromium"):
        print("chromium not found: run scripts/install-deps.sh", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    c = Checks()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mw-browser-", ignore_cleanup_errors=True) as work:
        b = Browser(os.path.join(work, "profile"))
        try:
            for part in (functools.partial(migration, b, c, a.dashboard, a.meshwatch, work, a.out),
                         functools.partial(nat_and_in_pod, b, c, a.dashboard, a.meshwatch, work, a.out),
                         functools.partial(hostile, b, c, a.dashboard, a.meshwatch, work, a.out),
                         functools.partial(live, b, c, a.dashboard, a.out)):
                try:
                    part()
                except Exception as e:  # a broken step fails, the others still run
                    traceback.print_exc()
                    c.check(f"{part.func.__name__}: ran to the end", False, e)
        finally:
            b.close()
    print(f"screenshots in {a.out}; {time.time() - started:.1f} s")
    print(f"dashboard browser: {c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
