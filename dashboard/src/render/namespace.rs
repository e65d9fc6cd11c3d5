//! `/namespace?ns=`: its workloads with their verdicts and mTLS share; the namespace-wide
//! PeerAuthentication when every workload that received traffic is ready.

use maud::{html, Markup};

use super::overview::workloads_table;
use super::{badge, page, policy, short, Frame, MAX_LABEL};
use crate::pages::NamespacePage;

pub fn namespace(f: &Frame<'_>, n: &NamespacePage) -> Markup {
    let v = &n.namespace;
    page(
        f,
        html! {
            p.crumbs { a href="/" { "Overview" } " / namespace" }
            h1 { "Namespace " span.name title=(v.namespace) { (short(&v.namespace, MAX_LABEL)) } " " (badge(v.verdict)) }
            p.counts {
                span.n-ready { (v.ready) " ready" } ", "
                span.n-blocked { (v.blocked) " blocked" } ", "
                @if v.broken_clients > 0 {
                    span.n-broken_clients { (v.broken_clients) " with broken clients" } ", "
                }
                span.n-insufficient { (v.insufficient) " insufficient" } ", "
                span.n-not_in_mesh { (v.not_in_mesh) " not in mesh" } ", "
                (v.idle) " idle (no inbound traffic)"
            }
            (workloads_table(&n.workloads))
            @if let Some(p) = &n.policy {
                h2 { "Namespace-wide STRICT" }
                p { "Every workload of the namespace that received traffic is ready: one PeerAuthentication for the whole namespace." }
                (policy("namespace", p))
            } @else {
                p.muted { "No namespace-wide policy yet: every workload that receives traffic must be ready first. Ready workloads have their own policy on their page." }
            }
        },
    )
}
