"""The Grafana dashboards, built with grafana-foundation-sdk (pinned 0.0.21). Layout after
Istio's dashboards (traffic split by security the way Istio splits on
`connection_security_policy`), split on `security` and `mesh`.

  mTLS migration  which workloads and namespaces are ready for STRICT, the share of Istio mTLS /
                  other TLS / plaintext over time, the plaintext to-do list with last seen, and
                  the sources that stopped (drained).
  Workload        one workload's inbound edges by source, port and security, its blockers, and
                  its trend toward zero plaintext.
  Agent health    per node: packets and bytes per second, capture drops, decode errors, flows,
                  evictions, reassembly give-ups, identity sync, memory and CPU.

Every query names its datasource as `${datasource}`; panel ids are assigned in order, rows
included; UIDs are fixed (config.UID_*) so links hold.
"""
import json

from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    DataSourceRef,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from .config import DEST, EDGE, UID_AGENT, UID_MIGRATION, UID_WORKLOAD, by

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Grafana 10/11 dashboards: the SDK writes Grafana 12's schema version (42); nothing here needs
# more than 39 (Grafana 11.0), and Grafana migrates older versions forward, never back.
SCHEMA_VERSION = 39
REFRESH = "1m"
BLOCKING = 'security=~"plaintext|tls"'
# verdicts as numbers, for state timelines
VERDICT_CODES = (("blocked", 0, "red"), ("insufficient", 1, "yellow"), ("ready", 2, "green"),
                 ("not_in_mesh", 3, "text"))


# ---- building blocks

def query(expr, legend=None, instant=False, fmt_table=False):
    q = Dataquery().expr(expr).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    else:
        q = q.range()
    if fmt_table:
        q = q.format(PromQueryFormat.TABLE)
    return q


def with_queries(panel, queries):
    for i, q in enumerate(queries):
        panel = panel.with_target(q.ref_id(chr(ord("A") + i)))
    return panel


def legend(panel):
    return panel.legend(VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.TABLE)
                        .placement(LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))


def ts(title, description, queries, unit="short", stacked=False, span=12, height=8):
    p = (timeseries.Panel().title(title).description(description).datasource(DS).unit(unit)
         .span(span).height(height).min(0).fill_opacity(10))
    if stacked:
        p = p.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(60)
    return with_queries(legend(p), queries)


def stat_panel(title, description, queries, unit="short", span=6, height=5, text_mode=None, mappings=None):
    p = (stat.Panel().title(title).description(description).datasource(DS).unit(unit).span(span)
         .height(height).graph_mode(BigValueGraphMode.NONE).color_mode(BigValueColorMode.BACKGROUND))
    if text_mode:
        p = p.text_mode(text_mode)
    if mappings:
        p = p.mappings(mappings)
    return with_queries(p, queries)


def table_panel(title, description, queries, span=24, height=9, hide=(), links=None, rename=None,
                units=None):
    """A table of instant queries, one row per label set (queries merged on their labels)."""
    p = (table.Panel().title(title).description(description).datasource(DS).span(span).height(height)
         .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
         .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
             "excludeByName": {name: True for name in ("Time", *hide)},
             "renameByName": rename or {},
         })))
    for name, unit in (units or {}).items():
        p = p.override_by_name(name, [dm.DynamicConfigValue(id_val="unit", value=unit)])
    if links:
        p = p.data_links(links)
    return with_queries(p, queries)


def verdict_mappings():
    return [dm.ValueMap(options={
        str(code): dm.ValueMappingResult(text=name, color=color, index=code)
        for name, code, color in VERDICT_CODES})]


def verdict_code(selector):
    """The readiness series (value 1, verdict in a label) as one number per workload."""
    parts = [f'(meshwatch:workload_readiness:window{{verdict="{name}", {selector}}} * 0 + {code})'
             for name, code, _ in VERDICT_CODES]
    return f"max by ({by(DEST)}) (\n  " + "\n  or ".join(parts) + "\n)"


def state_timeline(title, description, expr, legend_fmt, span=24, height=8):
    p = (statetimeline.Panel().title(title).description(description).datasource(DS).span(span)
         .height(height).mappings(verdict_mappings())
         .thresholds(ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
                     .steps([dm.Threshold(value=None, color="text")])))
    return with_queries(p, [query(expr, legend_fmt)])


def variable(name, label, expr, multi=True, regex=None):
    v = (QueryVariable(name).label(label).datasource(DS).query({"query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
         .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
    if multi:
        v = v.multi(True).include_all(True).all_value(".*")
    if regex:
        v = v.regex(regex)
    return v


def datasource_variable():
    return DatasourceVariable("datasource").label("Data source").type("prometheus")


def dashboard_links():
    return [DashboardLink("meshwatch").type(dm.DashboardLinkType.DASHBOARDS).tags(["meshwatch"])
            .as_dropdown(True).include_vars(False).keep_time(True)]


def workload_link():
    return [DashboardLink("Workload: ${__data.fields.destination_namespace}/${__data.fields.destination_workload}")
            .url(f"/d/{UID_WORKLOAD}/meshwatch-workload?var-datasource=${{datasource}}"
                 "&var-namespace=${__data.fields.destination_namespace}"
                 "&var-workload=${__data.fields.destination_workload}&${__url_time_range}")]


def board(uid, title, description, variables, items):
    d = (Dashboard(title).uid(uid).description(description).tags(["meshwatch", "istio", "mtls"])
         .refresh(REFRESH).time("now-24h", "now").timezone("browser").editable()
         .tooltip(dm.DashboardCursorSync.CROSSHAIR).links(dashboard_links()))
    for v in variables:
        d = d.with_variable(v)
    for item in items:
        d = d.with_row(item) if isinstance(item, Row) else d.with_panel(item)
    return finish(d)


def finish(builder):
    """Build, give every panel (rows and panels inside rows too) a unique id, in order."""
    model = builder.build()
    model.schema_version = SCHEMA_VERSION
    out = json.loads(json.dumps(model, cls=JSONEncoder))
    next_id = 1
    for panel in out["panels"]:
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return out


# ---- mTLS migration

def migration(c):
    ns = 'destination_namespace=~"$namespace"'
    wl = f'{ns}, destination_workload=~"$workload"'
    edge = f'{wl}, source_workload=~"$source"'
    not_exempt = f'destination_port!~"{c.exempt_regex}"'
    readiness = "meshwatch:workload_readiness:window"
    return board(
        UID_MIGRATION, "meshwatch / mTLS migration",
        "Which workloads can go from PERMISSIVE to STRICT mTLS, who still sends plaintext or "
        "non-mesh TLS to them, and who stopped. Verdicts cover the last " + c.window + ".",
        [datasource_variable(),
         variable("namespace", "Namespace", f"label_values({readiness}, destination_namespace)"),
         variable("workload", "Workload", f'label_values({readiness}{{{ns}}}, destination_workload)'),
         variable("source", "Source workload",
                  f'label_values(meshwatch_connections_total{{{wl}}}, source_workload)')],
        [
            Row("Readiness"),
            stat_panel("Mesh", "The whole mesh's verdict: blocked while any workload is blocked; "
                       "ready when every workload that received connections is ready.",
                       [query("meshwatch:mesh_readiness:window", "{{verdict}}", instant=True)],
                       span=4, text_mode=BigValueTextMode.NAME),
            stat_panel("Workloads by verdict", "Destination workloads per verdict (ready, blocked, "
                       "insufficient evidence, not in the mesh).",
                       [query(f"count by (verdict) ({readiness}{{{wl}}})", "{{verdict}}", instant=True)],
                       span=8, text_mode=BigValueTextMode.VALUE_AND_NAME),
            table_panel("Namespaces", "A namespace is ready when none of its workloads is blocked "
                        "or lacks evidence and at least one is ready: then a namespace-wide STRICT "
                        "PeerAuthentication applies.",
                        [query(f"meshwatch:namespace_readiness:window{{{ns}}}", instant=True, fmt_table=True),
                         *[query(f'count by (destination_namespace) ({readiness}{{verdict="{v}", {ns}}})',
                                 instant=True, fmt_table=True) for v, _, _ in VERDICT_CODES]],
                        span=12, height=5, hide=("Value #A", "__name__"),
                        rename={"destination_namespace": "namespace",
                                **{f"Value #{chr(ord('B') + i)}": v for i, (v, _, _) in enumerate(VERDICT_CODES)}}),
            table_panel("Workload readiness", "Each destination workload's verdict and the "
                        "evidence behind it (connections in the window, exempt ports left out). "
                        "Click a workload for its dashboard.",
                        [query(f"{readiness}{{{wl}}}", instant=True, fmt_table=True),
                         query(f"meshwatch:destination_mtls_connections:window{{{wl}}}", instant=True, fmt_table=True),
                         query(f"meshwatch:destination_blocking_connections:window{{{wl}}}", instant=True, fmt_table=True),
                         query(f"meshwatch:destination_unknown_connections:window{{{wl}}}", instant=True, fmt_table=True),
                         query(f"meshwatch:destination_exempted_connections:window{{{wl}}}", instant=True, fmt_table=True)],
                        height=10, hide=("Value #A", "__name__"), links=workload_link(),
                        rename={"destination_namespace": "namespace", "destination_workload": "workload",
                                "Value #B": "istio mTLS", "Value #C": "plaintext + TLS",
                                "Value #D": "unknown", "Value #E": "exempted"}),
            state_timeline("Readiness over time", "Verdict of each workload over time.",
                           verdict_code(wl), "{{destination_namespace}}/{{destination_workload}}"),
            Row("Traffic by security"),
            ts("Share of connections by security (window)",
               "Of the connections in the trailing window, the share that is Istio mTLS, other TLS, "
               "plaintext or unknown: the migration's progress.",
               [query(f"sum by (security) (meshwatch:edge_connections:window{{{edge}}})\n"
                      f"/ ignoring (security) group_left\nsum(meshwatch:edge_connections:window{{{edge}}})",
                      "{{security}}")], unit="percentunit", stacked=True),
            ts("Connections/s by security", "New connections per second, by security class.",
               [query(f"sum by (security) (rate(meshwatch_connections_total{{{edge}}}[$__rate_interval]))",
                      "{{security}}")], unit="cps"),
            ts("Connections/s by client data plane", "By the client's data plane as its traffic shows: "
               "sidecar (Istio mTLS, or plaintext with Istio's metadata headers), ambient (HBONE), none.",
               [query(f"sum by (mesh) (rate(meshwatch_connections_total{{{edge}}}[$__rate_interval]))",
                      "{{mesh}}")], unit="cps"),
            ts("Bytes/s by security", "Payload bytes of finished connections, both directions.",
               [query(f"sum by (security) (rate(meshwatch_bytes_total{{{edge}}}[$__rate_interval]))",
                      "{{security}}")], unit="Bps"),
            Row("Plaintext to-do list"),
            table_panel("Plaintext and non-mesh TLS: sources -> destinations",
                        "The connections STRICT would refuse, in the window, with when each edge was "
                        "last seen. Exempt ports are left out; node sources are included, and "
                        "`origin` tells them apart: kubelet_probe (kubelet's probes without Istio's "
                        "rewrite), nodeport (NodePort/LoadBalancer traffic SNAT'd to the node), direct "
                        "(anything else: a hostNetwork client).",
                        [query(f"topk(50, meshwatch:edge_connections:window{{{BLOCKING}, {not_exempt}, {edge}}} > 0)",
                               instant=True, fmt_table=True),
                         query(f"meshwatch:edge_blocking_last_seen:timestamp{{{not_exempt}, {edge}}} * 1000",
                               instant=True, fmt_table=True)],
                        height=10, links=workload_link(),
                        rename={"Value #A": "connections", "Value #B": "last seen"},
                        units={"last seen": "dateTimeAsIso"}),
            table_panel("Drained: sources that stopped",
                        "Plaintext or non-mesh TLS edges seen in the dashboard's time range but no "
                        "longer in the verdict window: they no longer block.",
                        [query(f"max_over_time(meshwatch:edge_blocking_last_seen:timestamp{{{not_exempt}, {edge}}}[$__range]) * 1000\n"
                               f"unless on ({by(EDGE)})\n"
                               f"(meshwatch:edge_connections:window{{{BLOCKING}}} > 0)",
                               instant=True, fmt_table=True)],
                        height=8, rename={"Value": "last seen"}, units={"last seen": "dateTimeAsIso"}),
            Row("Not judged").collapsed(True)
            .with_panel(table_panel("Exempt ports", "Connections to Istio's and istiod's own ports "
                                    f"({c.exempt_regex.replace('|', ', ')}): counted, never judged.",
                                    [query(f'meshwatch:edge_connections:window{{destination_port=~"{c.exempt_regex}", {edge}}}',
                                           instant=True, fmt_table=True)], height=8,
                                    rename={"Value": "connections"}))
            .with_panel(ts("Connection attempts/s", "Connections that carried no payload (refused, "
                           "unanswered, TCP probes): never evidence.",
                           [query(f"sum by (destination_namespace, destination_workload) "
                                  f"(rate(meshwatch_connection_attempts_total{{{wl}}}[$__rate_interval]))",
                                  "{{destination_namespace}}/{{destination_workload}}")], unit="cps")),
        ])


# ---- Workload

def workload(c):
    dst = 'destination_namespace="$namespace", destination_workload="$workload"'
    edge = f'{dst}, source_workload=~"$source"'
    not_exempt = f'destination_port!~"{c.exempt_regex}"'
    readiness = "meshwatch:workload_readiness:window"
    return board(
        UID_WORKLOAD, "meshwatch / Workload",
        "One destination workload: its verdict, inbound edges by source, port and security, the "
        "blockers to fix before STRICT, and its trend toward zero plaintext.",
        [datasource_variable(),
         variable("namespace", "Namespace", f"label_values({readiness}, destination_namespace)", multi=False),
         variable("workload", "Workload", f'label_values({readiness}{{destination_namespace="$namespace"}}, destination_workload)',
                  multi=False),
         variable("source", "Source workload", f"label_values(meshwatch_connections_total{{{dst}}}, source_workload)")],
        [
            Row("Verdict"),
            stat_panel("Verdict", "ready, blocked, insufficient (evidence) or not_in_mesh, over the "
                       f"last {c.window}.", [query(f"{readiness}{{{dst}}}", "{{verdict}}", instant=True)],
                       span=6, text_mode=BigValueTextMode.NAME),
            stat_panel("Judged connections by security", "Inbound connections in the window on "
                       "non-exempt ports, by class.",
                       [query(f"meshwatch:destination_connections:window{{{dst}}}", "{{security}}", instant=True)],
                       span=10, text_mode=BigValueTextMode.VALUE_AND_NAME),
            stat_panel("Exempted", "Connections to exempt ports (not judged).",
                       [query(f"meshwatch:destination_exempted_connections:window{{{dst}}}", instant=True)], span=4),
            stat_panel("Attempts", "Connections without payload (not evidence).",
                       [query(f"meshwatch:destination_attempts:window{{{dst}}}", instant=True)], span=4),
            Row("Inbound edges"),
            table_panel("Blockers", "Sources whose plaintext or non-mesh TLS STRICT would refuse, "
                        "with their port, how they came (`origin`: direct, kubelet_probe — kubelet's "
                        "probes without Istio's rewrite —, nodeport), count in the window and when "
                        "last seen.",
                        [query(f"meshwatch:edge_connections:window{{{BLOCKING}, {not_exempt}, {edge}}} > 0",
                               instant=True, fmt_table=True),
                         query(f"meshwatch:edge_blocking_last_seen:timestamp{{{not_exempt}, {edge}}} * 1000",
                               instant=True, fmt_table=True)],
                        height=8, hide=("destination_namespace", "destination_workload"),
                        rename={"Value #A": "connections", "Value #B": "last seen"},
                        units={"last seen": "dateTimeAsIso"}),
            table_panel("Inbound edges by source, port and security", "Every inbound edge in the "
                        "window.", [query(f"meshwatch:edge_connections:window{{{edge}}}", instant=True, fmt_table=True)],
                        height=9, hide=("destination_namespace", "destination_workload"),
                        rename={"Value": "connections"}),
            ts("Trend toward zero plaintext", "Inbound connections in the trailing window, by "
               "security: plaintext and TLS must reach zero before STRICT.",
               [query(f"sum by (security) (meshwatch:edge_connections:window{{{edge}}})", "{{security}}")]),
            ts("Inbound connections/s by source and security", "New inbound connections per second.",
               [query(f"sum by (source_namespace, source_workload, security) "
                      f"(rate(meshwatch_connections_total{{{edge}}}[$__rate_interval]))",
                      "{{source_namespace}}/{{source_workload}} {{security}}")], unit="cps"),
            ts("Inbound bytes/s by source", "Payload bytes of finished connections.",
               [query(f"sum by (source_namespace, source_workload, direction) "
                      f"(rate(meshwatch_bytes_total{{{edge}}}[$__rate_interval]))",
                      "{{source_namespace}}/{{source_workload}} {{direction}}")], unit="Bps"),
            ts("Connection attempts/s by port", "Connections without payload: refused or TCP probes.",
               [query(f"sum by (destination_port) (rate(meshwatch_connection_attempts_total{{{dst}}}[$__rate_interval]))",
                      "{{destination_port}}")], unit="cps"),
            state_timeline("Verdict over time", "This workload's verdict over time.", verdict_code(dst),
                           "{{destination_namespace}}/{{destination_workload}}", height=5),
        ])


# ---- Agent health

def agent(c):
    sel = 'job=~"$job", instance=~"$instance"'

    def rate(metric, by_labels="instance"):
        return f"sum by ({by_labels}) (rate({metric}{{{sel}}}[$__rate_interval]))"

    return board(
        UID_AGENT, "meshwatch / Agent health",
        "The node agents: capture rates and drops, decode errors, the flow table, identity sync, "
        "memory and CPU. Drops make every verdict insufficient for the window.",
        [datasource_variable(),
         variable("job", "Job", "label_values(meshwatch_build_info, job)"),
         variable("instance", "Agent", 'label_values(meshwatch_build_info{job=~"$job"}, instance)')],
        [
            Row("Capture"),
            stat_panel("Agents up", "Agents Prometheus scrapes now.",
                       [query('sum(up{job=~"$job"})', instant=True)], span=4),
            stat_panel("Agents down", "Agents Prometheus cannot scrape.",
                       [query('count(up{job=~"$job"} == 0) or vector(0)', instant=True)], span=4),
            stat_panel("Dropped in the verdict window", f"Packets lost before capture in the last "
                       f"{c.window}: while above zero, verdicts are insufficient.",
                       [query(f"sum by (instance) (meshwatch:capture_dropped_packets:window{{{sel}}})",
                              "{{instance}}", instant=True)], span=16, text_mode=BigValueTextMode.VALUE_AND_NAME),
            ts("Packets/s per node", "Packets captured.", [query(rate("meshwatch_packets_total"), "{{instance}}")],
               unit="pps", span=8),
            ts("Captured bytes/s per node", "Bytes of captured packets on the wire.",
               [query(rate("meshwatch_capture_bytes_total"), "{{instance}}")], unit="Bps", span=8),
            ts("Capture drops/s", "Packets dropped before capture: the kernel buffer was full "
               "(kernel) or the interface dropped them (interface).",
               [query(rate("meshwatch_capture_dropped_packets_total", "instance, point"), "{{instance}} {{point}}")],
               unit="pps", span=8),
            ts("Decode errors/s by reason", "Packets that could not be decoded.",
               [query(rate("meshwatch_decode_errors_total", "instance, reason"), "{{instance}} {{reason}}")],
               unit="pps", span=8),
            ts("Connections/s per node", "Connections classified (pod to pod), connections without "
               "payload, and loopback connections (never evidence).",
               [query(rate("meshwatch_connections_total"), "{{instance}} classified"),
                query(rate("meshwatch_connection_attempts_total"), "{{instance}} attempts"),
                query(rate("meshwatch_local_connections_total"), "{{instance}} local")], unit="cps", span=8),
            Row("Flow table"),
            ts("Active flows", "Connections tracked now.",
               [query(f"sum by (instance) (meshwatch_flows_active{{{sel}}})", "{{instance}}")], span=8),
            ts("Flow evictions/s", "Connections finished early: idle timeout, or the table at its "
               "bound (pressure).",
               [query(rate("meshwatch_flows_evicted_total", "instance, reason"), "{{instance}} {{reason}}")],
               unit="cps", span=8),
            ts("Preface reassembly give-ups/s", "Client prefaces abandoned because their segments "
               "opened too many holes.",
               [query(rate("meshwatch_preface_reassembly_give_ups_total"), "{{instance}}")], span=8),
            Row("Process and identity").collapsed(True)
            .with_panel(ts("Memory (RSS)", "Resident memory of each agent.",
                           [query(f"process_resident_memory_bytes{{{sel}}}", "{{instance}}")], unit="bytes", span=8))
            .with_panel(ts("CPU", "CPU seconds per second of each agent.",
                           [query(f"rate(process_cpu_seconds_total{{{sel}}}[$__rate_interval])", "{{instance}}")],
                           unit="percentunit", span=8))
            .with_panel(ts("Identity", "Identities synced from the Kubernetes API (1) or not (0), "
                           "and addresses known.",
                           [query(f"meshwatch_identity_synced{{{sel}}}", "{{instance}} synced"),
                            query(f"meshwatch_identity_cache_entries{{{sel}}}", "{{instance}} addresses")], span=8))
            .with_panel(table_panel("Workloads on each node by data plane", "Workloads with a pod on "
                                    "the agent's node, by mesh (sidecar, ambient, none, unknown).",
                                    [query(f"count by (instance, mesh) (meshwatch_workload_info{{{sel}}})",
                                           instant=True, fmt_table=True)], span=12, height=8,
                                    rename={"Value": "workloads"}))
            .with_panel(table_panel("Versions", "The agent build on each node.",
                                    [query(f"meshwatch_build_info{{{sel}}}", instant=True, fmt_table=True)],
                                    span=12, height=8, hide=("Value", "__name__"))),
        ])


def all_dashboards(c):
    return {"meshwatch-migration": migration(c), "meshwatch-workload": workload(c),
            "meshwatch-agent": agent(c)}
