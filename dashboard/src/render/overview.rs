//! `/`: the mesh verdict, the namespaces by verdict, the biggest blockers.

use maud::{html, Markup};

use super::{badge, name_link, page, policy, security, share, Frame};
use crate::pages::{BlockerRow, Overview, WorkloadRow};

pub fn overview(f: &Frame<'_>, o: &Overview) -> Markup {
    let t = &o.totals;
    page(
        f,
        html! {
            section.mesh {
                h1 { "Mesh " (badge(o.mesh.verdict)) }
                p.counts {
                    (t.destinations) " destinations: "
                    span.n-ready { (t.ready) " ready" } ", "
                    span.n-blocked { (t.blocked) " blocked" } ", "
                    @if t.broken_clients > 0 {
                        span.n-broken_clients { (t.broken_clients) " with broken clients" } ", "
                    }
                    span.n-insufficient { (t.insufficient) " insufficient" } ", "
                    span.n-not_in_mesh { (t.not_in_mesh) " not in mesh" } ", "
                    (t.idle) " idle"
                }
                (evidence_banner(o))
                @if let Some(p) = &o.mesh_policy {
                    h2 { "Mesh-wide STRICT" }
                    p { "Every namespace that received traffic is ready: one PeerAuthentication in Istio's root namespace covers the mesh." }
                    (policy("mesh", p))
                }
            }
            section {
                h2 { "Namespaces" }
                @if o.namespaces.is_empty() {
                    p.muted { "No namespace received traffic." }
                } @else {
                    table.namespaces {
                        thead { tr { th { "Namespace" } th { "Verdict" } th.num { "Ready" } th.num { "Blocked" } th.num { "Insufficient" } th.num { "Not in mesh" } th.num { "Idle" } } }
                        tbody {
                            @for n in &o.namespaces {
                                tr {
                                    td { (name_link(&n.namespace.namespace, Some(&n.href))) }
                                    td { (badge(n.namespace.verdict)) }
                                    td.num { (n.namespace.ready) }
                                    td.num { (n.namespace.blocked) }
                                    td.num { (n.namespace.insufficient) }
                                    td.num { (n.namespace.not_in_mesh) }
                                    td.num { (n.namespace.idle) }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Biggest blockers" }
                @if o.top_blockers.is_empty() {
                    p.muted { "No source sends plaintext or non-mesh TLS to a meshed workload." }
                } @else {
                    p.muted { "The " (o.top_blockers.len()) " largest of " (o.blockers_total) ", by connections: the migration's to-do list." }
                    (blockers_table(&o.top_blockers, true))
                }
            }
            @if !o.addresses.is_empty() {
                section {
                    h2 { "Destinations without identity" }
                    (workloads_table(&o.addresses))
                }
            }
        },
    )
}

fn evidence_banner(o: &Overview) -> Markup {
    let e = &o.evidence;
    html! {
        @if e.evidence_incomplete {
            p.warning role="alert" { "Evidence incomplete: " (e.incomplete_because.join("; ")) ". No destination without a blocker is called ready." }
        }
        @if !e.agents_down.is_empty() {
            p.warning { "Agents not answering: " (e.agents_down.join(", ")) }
        }
    }
}

/// Blockers; `with_destination` adds the destination column (the overview's list).
pub fn blockers_table(rows: &[BlockerRow], with_destination: bool) -> Markup {
    html! {
        table.blockers {
            thead { tr {
                @if with_destination { th { "Destination" } }
                th { "Source" } th.num { "Port" } th { "Security" } th { "Kind" } th.num { "Connections" } th { "Last seen" } th { "Remedy" }
            } }
            tbody {
                @for b in rows {
                    tr {
                        @if with_destination { td { (name_link(&b.destination, b.destination_href.as_deref())) } }
                        td { (name_link(&b.source, b.source_href.as_deref())) }
                        td.num { (b.port) }
                        td { (security(b.security)) }
                        td.kind {
                            (b.kind_label)
                            @if b.broken { " " span.tag.broken title="already STRICT on this port: refused now" { "broken client" } }
                        }
                        td.num { (b.connections) }
                        td { (super::when(&b.last_seen)) }
                        td.remedy { (b.remedy) }
                    }
                }
            }
        }
    }
}

/// Destinations with their verdicts and mTLS share.
pub fn workloads_table(rows: &[WorkloadRow]) -> Markup {
    // the mode column only when the PeerAuthentications are known
    let modes = rows.iter().any(|w| w.mode.is_some());
    html! {
        table.workloads {
            thead { tr { th { "Destination" } th { "Verdict" } th { "mTLS share" } th.num { "Blockers" } th.num { "Exempted" } @if modes { th { "Mode today" } } th { "Why" } } }
            tbody {
                @for w in rows {
                    tr {
                        td { (name_link(&w.name, w.href.as_deref())) }
                        td { (badge(w.verdict)) }
                        td { (share(&w.share)) }
                        td.num { (w.blockers) }
                        td.num { (w.exempted) }
                        @if modes { td.mode { (w.mode.as_deref().unwrap_or("-")) } }
                        td.reason { (w.reason) }
                    }
                }
            }
        }
    }
}
