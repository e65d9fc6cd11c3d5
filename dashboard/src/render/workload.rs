//! `/workload?...`: one destination — its verdict and mTLS share, inbound edges, blockers with
//! their remedy, exempted traffic and why, the evidence, and the policy with its rollback.

use maud::{html, Markup};

use super::overview::blockers_table;
use super::{badge, mesh_label, name_link, page, policy, security, share, short, Frame, MAX_LABEL};
use crate::model::{OriginView, Readiness};
use crate::pages::WorkloadPage;

fn origin_label(o: OriginView) -> &'static str {
    match o {
        OriginView::Direct => "direct",
        OriginView::KubeletProbe => "kubelet probe",
        OriginView::Nodeport => "NodePort",
    }
}

pub fn workload(f: &Frame<'_>, w: &WorkloadPage) -> Markup {
    let v = &w.verdict;
    page(
        f,
        html! {
            p.crumbs {
                a href="/" { "Overview" }
                @if let (Some(href), Some(ns)) = (&w.namespace_href, &w.destination.namespace) {
                    " / " a href=(href) { (short(ns, MAX_LABEL)) }
                }
            }
            h1 { span.name title=(w.title) { (short(&w.title, MAX_LABEL)) } " " (badge(v.verdict)) }
            p.reason { (v.reason) }
            @if let Some(m) = &v.mode {
                p.mode {
                    "PeerAuthentication today: " strong { (m.describe()) }
                    @for (port, p) in &m.ports {
                        "; port " (port) ": " (p.mode.as_str()) " (" (p.policy) ")"
                    }
                }
            }
            p { (share(&w.share)) }
            @if !w.ports.is_empty() {
                h2 { "Ports" }
                table.ports {
                    thead { tr { th.num { "Port" } th { "Verdict" } th { "mTLS share" } th { "Why" } } }
                    tbody {
                        @for p in &w.ports {
                            tr {
                                td.num { (p.port) }
                                td { (badge(p.verdict)) }
                                td { (share(&crate::pages::Share::of(&p.connections))) }
                                td.reason { (p.reason) }
                            }
                        }
                    }
                }
            }
            h2 { "Blockers" }
            @if w.blockers.is_empty() {
                p.muted { "None: no source sends plaintext or non-mesh TLS here." }
            } @else {
                (blockers_table(&w.blockers, false))
            }
            h2 { "Inbound traffic" }
            @if w.inbound.is_empty() {
                p.muted { "No inbound connection seen." }
            } @else {
                table.inbound {
                    thead { tr { th { "Source" } th.num { "Port" } th { "Security" } th { "Client data plane" } th { "Origin" } th.num { "Connections" } th.num { "Attempts" } th { "Last seen" } th { "" } } }
                    tbody {
                        @for e in &w.inbound {
                            tr.exempt[e.exempt.is_some()] {
                                td { (name_link(&e.source, e.source_href.as_deref())) }
                                td.num { (e.port) }
                                td { (security(e.security)) }
                                td { (mesh_label(e.mesh)) }
                                td { (origin_label(e.origin)) }
                                td.num { (e.connections) }
                                td.num { (e.attempts) }
                                td { (super::when(&e.last_seen)) }
                                td { @if e.exempt.is_some() { span.tag { "exempt" } } }
                            }
                        }
                    }
                }
            }
            h2 { "Exempted traffic" }
            @if v.exempted == 0 && w.exempted.is_empty() {
                p.muted { "None." }
            } @else {
                p { (v.exempted) " connections were not judged:" }
                ul.exempted {
                    @for x in &w.exempted {
                        li { (name_link(&x.source, None)) " → port " (x.port) ", " (x.connections) " " (super::security_label(x.security)) ": " (x.why) }
                    }
                }
                @if w.exempted_explained != v.exempted {
                    p.muted { "The verdict counts " (v.exempted) " exempted connections; the dashboard's exemption flags explain " (w.exempted_explained) ". Run the dashboard with the exemption flags the report was made with." }
                }
            }
            h2 { @if v.verdict == Readiness::Insufficient { "Why insufficient: the evidence" } @else { "Evidence" } }
            dl.evidence {
                @for l in &w.evidence {
                    dt { (l.what) }
                    dd { (l.value) }
                }
            }
            h2 { "PeerAuthentication" }
            @if let Some(p) = &w.policy {
                @if v.verdict != Readiness::Ready {
                    p { "Not every port is ready: STRICT only on the ports that are, PERMISSIVE elsewhere." }
                }
                (policy("workload", p))
            } @else if let Some(why) = &w.no_policy {
                p.muted { "None suggested: " (why) "." }
            }
        },
    )
}
