#!/usr/bin/env python3
"""Check the generated dashboards and rules without a Grafana server.

Dashboards (grafana/dashboards/*.json):
  - the UID is the stable one for its file, the schema is Grafana 10/11's (36..41), the title is set;
  - panel ids are unique, rows and the panels inside rows (collapsed or not) included;
  - every panel but a row has targets; every target has a non-empty `expr` and a refId, unique
    within the panel;
  - every datasource (panels, targets, variables) is `${datasource}` of type prometheus, and the
    `datasource` variable exists;
  - every `$variable` (also `${variable}`, `[[variable]]`) used anywhere is defined, or is one of
    Grafana's built-ins;
  - links to other dashboards point at one of ours;
  - every query parses: they are handed to `promtool check rules` as recording rules, with
    Grafana's variables substituted.
Rules (grafana/rules/meshwatch.rules.yaml and the PrometheusRule):
  - every alert has a severity, a summary, a description and a runbook_url whose file exists
    under docs/runbooks/;
  - the PrometheusRule carries exactly the rules file's groups.
Provisioning (grafana/provisioning/): a file provider for the dashboards, a Prometheus data source.
Both:
  - every metric a query or rule reads is recorded by the rules, exported by the agent
    (registered in agent/src/metrics.rs), or `up`;
  - the verdict policy in grafana/mixin/config.py is the agent's (verdict.rs, cli.rs).

Prints each failure and 'monitoring lint: N passed, M failed'; exits 1 on a failure.
Usage: python3 grafana/lint.py [REPO_ROOT]
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mixin import config  # noqa: E402

BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
            "__data", "__url_time_range", "__all", "__from", "__to", "__name", "__org", "__user",
            "__dashboard", "__field", "__series", "__value", "__cell", "__timeFilter", "timeFilter"}
SUBSTITUTE = {"__rate_interval": "5m", "__interval": "1m", "__range": "1d", "__range_s": "86400"}
UIDS = {"meshwatch-migration": config.UID_MIGRATION, "meshwatch-workload": config.UID_WORKLOAD,
        "meshwatch-agent": config.UID_AGENT}
# Prometheus' own
EXTERNAL = {"up"}
VAR = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "atan2", "vector", "scalar", "time", "timestamp", "abs", "absent", "absent_over_time",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "holt_winters", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10",
    "predict_linear", "rate", "resets", "round", "sgn", "sort", "sort_desc", "sqrt", "last_over_time",
    "min_over_time", "max_over_time", "avg_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "present_over_time", "e", "inf", "nan", "Inf", "NaN", "day_of_month",
    "day_of_week", "hour", "minute", "month", "year", "days_in_month", "day_of_year", "limitk",
}


class Lint:
    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{name}: {detail}" if detail else name)
        return ok


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr):
    """Metric names a PromQL expression reads (identifiers that are not keywords, functions,
    label names inside braces or grouping clauses, or durations)."""
    e = strip_strings(expr)
    e = re.sub(r"\{[^}]*\}", "{}", e)                                  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)                                   # ranges, subqueries
    e = re.sub(r"\boffset\s+\w+", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*(\(?)", e):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def agent_metrics(root):
    """Names the agent registers in agent/src/metrics.rs: each sub-registry's prefix + name, as
    NAME and NAME_total (a counter), or NAME_info (an Info)."""
    text = open(os.path.join(root, "agent/src/metrics.rs")).read()
    prefixes = dict(re.findall(r'let (\w+) = registry\.sub_registry_with_prefix\("(\w+)"\)', text))
    names = set()
    for var, name, value in re.findall(r'\b(\w+)\.register\(\s*"(\w+)",\s*"(?:[^"\\]|\\.)*",\s*(.*?)\);', text, re.S):
        if var not in prefixes:
            continue
        base = f"{prefixes[var]}_{name}"
        if "Info::new" in value:
            names.add(base + "_info")
        else:
            names.update({base, base + "_total"})
    return names


def lint_dashboard(l, path, exprs):
    d = json.load(open(path))
    name = os.path.basename(path)[:-5]
    l.check(f"{name}: stable uid", d.get("uid") == UIDS.get(name), d.get("uid"))
    l.check(f"{name}: Grafana 10/11 schema", 36 <= d.get("schemaVersion", 0) <= 41, d.get("schemaVersion"))
    l.check(f"{name}: title", bool(d.get("title")))
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    l.check(f"{name}: a datasource variable", variables.get("datasource", {}).get("type") == "datasource")
    for vname, v in variables.items():
        if v.get("type") == "query":
            l.check(f"{name}: variable {vname} uses ${{datasource}}", v.get("datasource", {}).get("uid") == "${datasource}")
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            l.check(f"{name}: variable {vname} has a query", bool(q))
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "", re.S)
            if m:
                exprs.append((f"{name}: variable {vname}", m.group(1)))
    panels = []
    for p in d.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))
    ids = [p.get("id") for p in panels]
    dup = sorted({i for i in ids if ids.count(i) > 1 or i is None}, key=str)
    l.check(f"{name}: unique panel ids ({len(ids)} panels, rows and panels in rows included)", not dup, f"duplicates {dup}")
    used = set()
    text = json.dumps(d)
    for m in VAR.finditer(text):
        used.add(next(g for g in m.groups() if g))
    undefined = sorted(v for v in used if v not in variables and v not in BUILTINS)
    l.check(f"{name}: every $variable is defined", not undefined, f"undefined {undefined}")
    for link in re.findall(r"/d/([\w-]+)", text):
        l.check(f"{name}: link to /d/{link} is one of ours", link in UIDS.values(), link)
    for p in panels:
        title = f"{name}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("type") == "row":
            l.check(f"{title}: a row has no targets", not p.get("targets"))
            continue
        l.check(f"{title}: datasource", p.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, p.get("datasource"))
        targets = p.get("targets") or []
        l.check(f"{title}: has targets", bool(targets))
        refs = [t.get("refId") for t in targets]
        l.check(f"{title}: refIds set and unique", all(refs) and len(set(refs)) == len(refs), refs)
        for t in targets:
            ok = l.check(f"{title} {t.get('refId')}: has an expr", bool((t.get("expr") or "").strip()))
            l.check(f"{title} {t.get('refId')}: datasource", t.get("datasource") == {"type": "prometheus", "uid": "${datasource}"})
            if ok:
                exprs.append((f"{title} {t.get('refId')}", t["expr"]))


def substitute(expr):
    def one(m):
        v = next(g for g in m.groups() if g)
        return SUBSTITUTE.get(v, "x")
    return VAR.sub(one, expr)


def promtool_parses(l, exprs):
    """Every dashboard query parses (promtool check rules on them as recording rules)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "queries.yaml")
        rules = [{"record": f"lint:query_{i}", "expr": substitute(e)} for i, (_, e) in enumerate(exprs)]
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "lint", "rules": rules}]}, f)
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            errors = dict((int(i), msg) for i, msg in re.findall(r'"lint:query_(\d+)": (.*)', out))
            for i, msg in sorted(errors.items()) or [(None, out.strip()[-600:])]:
                l.check(f"query parses: {exprs[i][0] if i is not None else '?'}", False,
                        msg if i is None else f"{msg}\n    {substitute(exprs[i][1])}")
        else:
            l.check(f"{len(exprs)} dashboard queries parse (promtool)", True)


def lint_rules(l, root, recorded):
    rules_path = os.path.join(root, "grafana/rules/meshwatch.rules.yaml")
    groups = yaml.safe_load(open(rules_path))
    pr = yaml.safe_load(open(os.path.join(root, "deploy/prometheus-operator/prometheusrule.yaml")))
    l.check("PrometheusRule carries the rules file's groups", pr.get("spec") == groups)
    exprs = []
    for g in groups["groups"]:
        for r in g["rules"]:
            if "record" in r:
                recorded.add(r["record"])
            exprs.append((r.get("record") or r.get("alert"), r["expr"]))
            if "alert" not in r:
                continue
            a = r["alert"]
            ann = r.get("annotations", {})
            l.check(f"alert {a}: severity", r.get("labels", {}).get("severity") in ("info", "warning", "critical"))
            l.check(f"alert {a}: summary and description", bool(ann.get("summary")) and bool(ann.get("description")))
            url = ann.get("runbook_url", "")
            ok = l.check(f"alert {a}: runbook_url into docs/runbooks", url.startswith(config.RUNBOOK_BASE), url)
            if ok:
                rel = "docs/runbooks/" + url[len(config.RUNBOOK_BASE):]
                l.check(f"alert {a}: runbook {rel} exists", os.path.isfile(os.path.join(root, rel)))
    return exprs


def lint_provisioning(l, root):
    d = yaml.safe_load(open(os.path.join(root, "grafana/provisioning/dashboards/meshwatch.yaml")))
    providers = d.get("providers") or []
    l.check("provisioning: a file provider for the dashboards",
            d.get("apiVersion") == 1 and any(p.get("type") == "file" and p.get("options", {}).get("path") for p in providers))
    ds = yaml.safe_load(open(os.path.join(root, "grafana/provisioning/datasources/meshwatch.yaml")))
    l.check("provisioning: a Prometheus data source",
            ds.get("apiVersion") == 1 and any(x.get("type") == "prometheus" and x.get("url") for x in ds.get("datasources") or []))


def lint_policy(l, root):
    verdict = open(os.path.join(root, "agent/src/verdict.rs")).read()
    m = re.search(r"DEFAULT_EXEMPT_PORTS: \[u16; \d+\] = \[([^\]]*)\]", verdict)
    ports = tuple(int(p) for p in re.findall(r"\d+", m.group(1))) if m else None
    l.check("exempt ports are the agent's (verdict.rs DEFAULT_EXEMPT_PORTS)",
            ports is not None and sorted(ports) == sorted(config.DEFAULT_EXEMPT_PORTS), f"{ports} vs {config.DEFAULT_EXEMPT_PORTS}")
    cli = open(os.path.join(root, "agent/src/cli.rs")).read()
    m = re.search(r"default_value_t = (\d+),\s*value_name = \"N\",\s*env = \"MESHWATCH_MIN_CONNECTIONS\"", cli)
    l.check("min connections is the agent's default", m is not None and int(m.group(1)) == config.DEFAULT_MIN_CONNECTIONS,
            m.group(1) if m else "not found in cli.rs")
    m = re.search(r"default_value_t = ([\d.]+), value_name = \"RATIO\", env = \"MESHWATCH_MAX_UNKNOWN_RATIO\"", cli)
    l.check("max unknown ratio is the agent's default", m is not None and float(m.group(1)) == config.DEFAULT_MAX_UNKNOWN_RATIO,
            m.group(1) if m else "not found in cli.rs")
    m = re.search(r'default_value = "(\w+)", value_parser = humantime::parse_duration, env = "MESHWATCH_WINDOW"', cli)
    l.check("window is the agent's default", m is not None and m.group(1) == config.DEFAULT_WINDOW,
            m.group(1) if m else "not found in cli.rs")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(HERE)
    l = Lint()
    recorded = set()
    rule_exprs = lint_rules(l, root, recorded)
    dash_exprs = []
    files = sorted(glob.glob(os.path.join(root, "grafana/dashboards/*.json")))
    l.check("three dashboards", sorted(os.path.basename(f)[:-5] for f in files) == sorted(UIDS), files)
    for f in files:
        lint_dashboard(l, f, dash_exprs)
    promtool_parses(l, dash_exprs)
    known = agent_metrics(root) | recorded | EXTERNAL
    for where, e in rule_exprs + dash_exprs:
        for name in metric_names(substitute(e)):
            l.check(f"{where}: metric {name} exists", name in known, "not recorded, not in agent/src/metrics.rs")
    lint_policy(l, root)
    lint_provisioning(l, root)
    for f in l.failed:
        print(f"FAIL {f}")
    print(f"monitoring lint: {l.passed} passed, {len(l.failed)} failed")
    sys.exit(1 if l.failed else 0)


if __name__ == "__main__":
    main()
