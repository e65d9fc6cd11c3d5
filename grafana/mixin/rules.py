"""Recording rules and alerts: the verdict engine's rules (agent/src/verdict.rs) in PromQL, over
the counters of every agent, so cluster-wide verdicts survive agent restarts and span the window.

Counting over a window. A counter series that first appears inside the window counts from its
first sample: what the agent counted before Prometheus' first scrape of it happened inside the
window too (the agent creates a connection series on its first connection). `increase()` alone
misses that first value, and extrapolates (a series with two samples one scrape apart, +1,
becomes +2), so the count here is exact where it can be:
  - a series without a counter reset in the window: last value in the window minus the value at
    the window's start, or minus nothing when the series did not exist then;
  - a series that reset (an agent restarted inside the window): `increase()` (which handles the
    reset; it extrapolates), plus the first value when the series is new.

Which connections count, once: a connection is reported by the agent of the destination's node
(`reporter="destination"`), or, when the destination is no pod of an agent's node, by the
source's agent (`reporter="source"`). An agent also reports as `source` its pods' connections to
pods of other nodes, which those nodes' agents report as `destination`: such a `reporter="source"`
series is left out when the same edge has a `reporter="destination"` series, or when its
destination workload has a pod on some agent's node (`meshwatch_workload_info` in the window).
What is left counts each connection once.

The verdict per destination workload, as in agent/src/verdict.rs:
  not_in_mesh  the workload is outside the mesh (`meshwatch_workload_info{mesh="none"}` and no
               agent sees a pod of it in the mesh);
  blocked      any plaintext or non-mesh TLS connection on a non-exempt port (node sources are
               evidence, not exempt);
  insufficient any agent dropped packets in the window, or fewer than min_connections Istio
               mTLS connections, or more than max_unknown_ratio of the connections unknown;
  ready        otherwise.
Namespaces and the mesh roll up like the agent's `namespaces` and `mesh`.

What PromQL cannot reproduce: exempt *source addresses* (ambient's 169.254.7.127 and
--exempt-source): metric labels never carry addresses, such a source is `unknown` here and is
judged. Verdicts of unknown addresses (the agent names them by IP) are not computed: metrics
fold every unknown address into `unknown`.
"""
from .config import DEST, EDGE, EDGE_REPORTED, RUNBOOK_BASE, by

CONN = "meshwatch_connections_total"
ATTEMPTS = "meshwatch_connection_attempts_total"
DROPS = "meshwatch_capture_dropped_packets_total"
BLOCKING = 'security=~"plaintext|tls"'
DEST_REAL = 'destination_namespace!~"unknown|node"'


# marks the series that carried no `origin` while they are relabelled `direct` (see with_origin)
NO_ORIGIN = "meshwatch_no_origin"


def with_origin(expr):
    """`expr` with `origin="direct"` where its series carry no origin (older agents), for an
    aggregation by EDGE around it to count them with the series labelled `direct`.

    Such a series is first marked (NO_ORIGIN="true"), so it never takes the label set of a
    series that carries `origin="direct"` and is otherwise the same: an agent upgraded in place
    (same instance) has both in the window, and a vector holding one label set twice makes
    Prometheus refuse the whole rule ("vector cannot contain metrics with the same labelset"),
    for as long as the window holds the old series. The aggregation drops the mark: the old
    series' count and the new one's (its counter started from zero) are added, as two agents'
    series of one edge are."""
    inner = expr.replace("\n", "\n    ")
    return (f'label_replace(\n    label_replace(\n      {inner},\n      "{NO_ORIGIN}", "true", "origin", ""\n    ),\n'
            f'    "origin", "direct", "origin", ""\n  )')


def seconds(duration):
    """A Prometheus duration (one unit: 20s, 5m, 24h, 7d) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    for suffix in ("ms", "s", "m", "h", "d", "w"):
        if duration.endswith(suffix) and duration[: -len(suffix)].isdigit():
            return int(duration[: -len(suffix)]) * units[suffix]
    raise ValueError(f"unsupported duration {duration!r}")


def window_count(sel, w):
    """Exact count of a counter over the window `w`, the first sample of a new series included."""
    return f"""(
    (
        last_over_time({sel}[{w}]) - {sel} offset {w}
      or
        last_over_time({sel}[{w}]) unless {sel} offset {w}
    )
    unless
      resets({sel}[{w}]) > 0
  )
or
    increase({sel}[{w}]) + (min_over_time({sel}[{w}]) unless {sel} offset {w})
or
  increase({sel}[{w}])
"""


def as_destination(metric):
    """meshwatch_workload_info's {namespace, workload} as {destination_namespace, destination_workload}."""
    return (f'label_replace(label_replace({metric}, "destination_namespace", "$1", "namespace", "(.*)"), '
            f'"destination_workload", "$1", "workload", "(.*)")')


def recording_rules(c):
    w = c.window
    d = by(DEST)
    step = c.resolution
    exempt = f'destination_port=~"{c.exempt_regex}"'
    not_exempt = f'destination_port!~"{c.exempt_regex}"'
    blocked = "(meshwatch:destination_blocking_connections:window > 0)"
    too_few = f"(meshwatch:destination_mtls_connections:window < {c.min_connections})"
    too_unknown = ("(meshwatch:destination_unknown_connections:window > "
                   f"{c.max_unknown_ratio} * meshwatch:destination_judged_connections:window)")
    dropped = "(sum(meshwatch:capture_dropped_packets:window) > 0)"
    r = "meshwatch:workload_readiness:window"
    non_idle_insufficient = f'({r}{{verdict="insufficient"}} unless on ({d}) meshwatch:workload_idle:window)'
    return [
        {"record": "meshwatch:window:seconds", "expr": f"vector({seconds(w)})"},
        # -- windowed counts of every series, then per edge (each connection once)
        {"record": "meshwatch:connections:window_by_series", "expr": window_count(CONN, w)},
        {"record": "meshwatch:connection_attempts:window_by_series", "expr": window_count(ATTEMPTS, w)},
        {"record": "meshwatch:capture_dropped_packets:window", "expr": window_count(DROPS, w)},
        {"record": "meshwatch:edge_connections:window", "expr": f"""sum by ({by(EDGE)}) (
  {with_origin(f'''(
      meshwatch:connections:window_by_series{{reporter="destination"}}
    or
      (
        meshwatch:connections:window_by_series{{reporter="source"}}
        unless on ({by(EDGE_REPORTED)})
          meshwatch:connections:window_by_series{{reporter="destination"}}
        unless on ({d})
          {as_destination(f"max_over_time(meshwatch_workload_info[{w}])")}
      )
  )''')}
)
"""},
        {"record": "meshwatch:edge_attempts:window", "expr": f"""sum by ({by(EDGE[:5])}) (
    meshwatch:connection_attempts:window_by_series{{reporter="destination"}}
  or
    (
      meshwatch:connection_attempts:window_by_series{{reporter="source"}}
      unless on ({by(EDGE[:5])})
        meshwatch:connection_attempts:window_by_series{{reporter="destination"}}
      unless on ({d})
        {as_destination(f"max_over_time(meshwatch_workload_info[{w}])")}
    )
)
"""},
        # when a plaintext or non-mesh TLS edge last had a new connection: every evaluation
        # stamps the edges whose counter changed since `resolution` ago (or that are new: the
        # first sample counts) with the evaluation time; the last stamp in the window is the last
        # seen (late by at most `resolution`, which must not be shorter than the evaluation
        # interval)
        {"record": "meshwatch:edge_blocking_seen:timestamp", "expr": f"""max by ({by(EDGE)}) (
  {with_origin(f'''(
      (
          {CONN}{{{BLOCKING}}} != {CONN}{{{BLOCKING}}} offset {step}
        or
          {CONN}{{{BLOCKING}}} unless {CONN}{{{BLOCKING}}} offset {step}
      )
      * 0 + time()
  )''')}
)
"""},
        {"record": "meshwatch:edge_blocking_last_seen:timestamp",
         "expr": f"max_over_time(meshwatch:edge_blocking_seen:timestamp[{w}])\n"},
        # -- per destination workload: the verdict engine's inputs
        {"record": "meshwatch:destination_connections:window",
         "expr": f"sum by ({d}, security) (meshwatch:edge_connections:window{{{DEST_REAL}, {not_exempt}}})\n"},
        {"record": "meshwatch:destination_exempted_connections:window",
         "expr": f"sum by ({d}) (meshwatch:edge_connections:window{{{DEST_REAL}, {exempt}}})\n"},
        {"record": "meshwatch:destination_attempts:window",
         "expr": f"sum by ({d}) (meshwatch:edge_attempts:window{{{DEST_REAL}}})\n"},
        {"record": "meshwatch:destinations:window", "expr": f"""group by ({d}) (
    meshwatch:destination_connections:window
  or
    meshwatch:destination_exempted_connections:window
  or
    meshwatch:destination_attempts:window
  or
    {as_destination("meshwatch_workload_info")}
)
"""},
        {"record": "meshwatch:destination_not_in_mesh", "expr": f"""group by ({d}) ({as_destination('meshwatch_workload_info{mesh="none"}')})
unless on ({d})
  {as_destination('meshwatch_workload_info{mesh=~"sidecar|ambient"}')}
"""},
        *[{"record": f"meshwatch:destination_{name}_connections:window", "expr": f"""sum by ({d}) (meshwatch:destination_connections:window{sel})
or
  0 * meshwatch:destinations:window
"""} for name, sel in (("mtls", '{security="istio_mtls"}'), ("blocking", f"{{{BLOCKING}}}"),
                       ("unknown", '{security="unknown"}'), ("judged", ""))],
        # -- the verdict: one series per destination workload, its verdict as a label
        {"record": r, "labels": {"verdict": "not_in_mesh"},
         "expr": f"meshwatch:destinations:window and on ({d}) meshwatch:destination_not_in_mesh\n"},
        {"record": r, "labels": {"verdict": "blocked"}, "expr": f"""group by ({d}) (
  {blocked}
  unless on ({d}) meshwatch:destination_not_in_mesh
)
"""},
        {"record": r, "labels": {"verdict": "insufficient"}, "expr": f"""group by ({d}) (
  (
      {too_few}
    or
      {too_unknown}
    or
      (meshwatch:destinations:window and on () {dropped})
  )
  unless on ({d}) {blocked}
  unless on ({d}) meshwatch:destination_not_in_mesh
)
"""},
        {"record": r, "labels": {"verdict": "ready"}, "expr": f"""group by ({d}) (
  meshwatch:destinations:window
  unless on ({d}) {blocked}
  unless on ({d}) meshwatch:destination_not_in_mesh
  unless on ({d}) {too_few}
  unless on ({d}) {too_unknown}
  unless on () {dropped}
)
"""},
        # -- roll-ups: a workload without any inbound connection (idle) holds nothing back
        {"record": "meshwatch:workload_idle:window", "expr": f"""group by ({d}) (
  {r}{{verdict="insufficient"}}
  and on ({d}) (meshwatch:destination_judged_connections:window == 0)
  unless on ({d}) (meshwatch:destination_exempted_connections:window > 0)
)
"""},
        {"record": "meshwatch:namespace_readiness:window", "labels": {"verdict": "blocked"},
         "expr": f'group by (destination_namespace) ({r}{{verdict="blocked"}})\n'},
        {"record": "meshwatch:namespace_readiness:window", "labels": {"verdict": "insufficient"},
         "expr": f"""group by (destination_namespace) (
  (
      {non_idle_insufficient}
    or
      ({r} unless on (destination_namespace) {r}{{verdict=~"ready|not_in_mesh"}})
  )
  unless on (destination_namespace) {r}{{verdict="blocked"}}
)
"""},
        {"record": "meshwatch:namespace_readiness:window", "labels": {"verdict": "ready"},
         "expr": f"""group by (destination_namespace) (
  {r}{{verdict="ready"}}
  unless on (destination_namespace) {r}{{verdict="blocked"}}
  unless on (destination_namespace) {non_idle_insufficient}
)
"""},
        {"record": "meshwatch:namespace_readiness:window", "labels": {"verdict": "not_in_mesh"},
         "expr": f"""group by (destination_namespace) (
  {r}{{verdict="not_in_mesh"}}
  unless on (destination_namespace) {r}{{verdict=~"blocked|ready"}}
  unless on (destination_namespace) {non_idle_insufficient}
)
"""},
        {"record": "meshwatch:mesh_readiness:window", "labels": {"verdict": "blocked"},
         "expr": f'group({r}{{verdict="blocked"}})\n'},
        {"record": "meshwatch:mesh_readiness:window", "labels": {"verdict": "insufficient"},
         "expr": f"""(
    group({non_idle_insufficient})
  or
    (vector(1) unless on () {r}{{verdict="ready"}})
)
unless on () {r}{{verdict="blocked"}}
"""},
        {"record": "meshwatch:mesh_readiness:window", "labels": {"verdict": "ready"},
         "expr": f"""group({r}{{verdict="ready"}})
unless on () {r}{{verdict="blocked"}}
unless on () {non_idle_insufficient}
"""},
    ]


def alert(name, expr, for_, severity, summary, description):
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK_BASE}{name}.md",
        },
    }


def alerts(c):
    d = by(DEST)
    return [
        alert("MeshwatchPlaintextToReadyWorkload", f"""meshwatch:workload_readiness:window{{verdict="blocked"}}
and on ({d})
  max_over_time(meshwatch:workload_readiness:window{{verdict="ready"}}[{c.window}])
""", "0m", "warning",
              "{{ $labels.destination_namespace }}/{{ $labels.destination_workload }} was ready for STRICT "
              "mTLS and now receives plaintext or non-mesh TLS.",
              "A source sends plaintext (or its own TLS) to {{ $labels.destination_namespace }}/"
              "{{ $labels.destination_workload }} on a non-exempt port, within the last " + c.window +
              " in which the workload was ready. Under STRICT these connections would fail. The "
              "workload's blockers are on the Workload dashboard and in the agent's /api/v1/verdicts."),
        alert("MeshwatchCaptureDroppingPackets", "sum by (job, instance) (\n"
              + window_count(DROPS, "10m") + ") > 0\n", "5m", "warning",
              "The meshwatch agent {{ $labels.instance }} drops captured packets.",
              "{{ $labels.instance }} lost {{ $value | humanize }} packets before capture in the last "
              f"10 minutes. Verdicts are `insufficient` while drops are inside the window ({c.window})."),
        alert("MeshwatchAgentDown", f'up{{job="{c.job}"}} == 0\n', "5m", "warning",
              "The meshwatch agent {{ $labels.instance }} is down.",
              "Prometheus cannot scrape {{ $labels.instance }} (job " + c.job + "): connections on its "
              "node are not counted and verdicts that depend on them lack evidence."),
        alert("MeshwatchIdentitiesNotSynced", "meshwatch_identity_synced == 0\n", "10m", "warning",
              "The meshwatch agent {{ $labels.instance }} has not synced identities.",
              "{{ $labels.instance }} has no complete view of pods and nodes from the Kubernetes API: "
              "connections are counted with `unknown` workloads, which makes verdicts insufficient."),
    ]


def rule_groups(c):
    return {"groups": [
        {"name": "meshwatch.rules", "rules": recording_rules(c)},
        {"name": "meshwatch.alerts", "rules": alerts(c)},
    ]}
