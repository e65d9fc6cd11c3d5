//! HTML for the pages (maud: every value spliced into the markup is escaped, in text, in
//! attributes and inside the SVG). The page structures come from [`crate::pages`]; the style
//! sheet and the script are served by the binary (`/static/`), nothing is fetched elsewhere.

mod matrix;
mod namespace;
mod overview;
mod workload;

use maud::{html, Markup, DOCTYPE};
use meshwatch::classify::{Mesh, Security};

use crate::model::{Readiness, SourceInfo};
use crate::pages::Share;
use crate::policy::{PolicyPair, RollbackKind};

pub use matrix::matrix;
pub use namespace::namespace;
pub use overview::overview;
pub use workload::workload;

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    pub title: &'a str,
    pub source: &'a SourceInfo,
    pub loaded_at: &'a str,
    /// Seconds between reloads, for a live source.
    pub refresh: Option<u64>,
    /// The last read of a live source failed (what is shown is older).
    pub error: Option<&'a str>,
    /// This page's data as JSON.
    pub api: &'a str,
}

/// Labels longer than this are cut in tables and the matrix (the full name stays in a tooltip).
pub const MAX_LABEL: usize = 80;

/// `s` cut to `max` characters (on a character boundary), with an ellipsis when cut.
pub fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The page around `body`.
pub fn page(f: &Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (short(f.title, MAX_LABEL)) " · meshwatch" }
                link rel="stylesheet" href="/static/app.css";
                link rel="icon" href="data:,";
            }
            body data-refresh=[f.refresh] {
                header {
                    nav {
                        a.brand href="/" { "meshwatch" }
                        a href="/" { "Overview" }
                        a href="/matrix" { "Matrix" }
                        a href=(f.api) { "JSON" }
                    }
                    p.source {
                        "Source: " (f.source.kind) " " code { (short(&f.source.detail, 200)) }
                        " · read " time { (f.loaded_at) }
                        @if let Some(r) = f.refresh {
                            " · every " (r) " s "
                            label.refresh {
                                input type="checkbox" id="auto-refresh" checked;
                                " auto-refresh"
                            }
                        } @else {
                            " · offline"
                        }
                    }
                }
                @if let Some(e) = f.error {
                    p.error role="alert" { "The last read failed, this is older data: " (e) }
                }
                main { (body) }
                script src="/static/app.js" {}
            }
        }
    }
}

/// A page that says what is missing.
pub fn not_found(f: &Frame<'_>, what: &str) -> Markup {
    page(
        f,
        html! {
            h1 { "Not found" }
            p { (what) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

/// A page for a source that never answered.
pub fn unavailable(f: &Frame<'_>, error: &str) -> Markup {
    page(
        f,
        html! {
            h1 { "No data yet" }
            p.error role="alert" { (error) }
            p { "The dashboard keeps trying." }
        },
    )
}

/// `ready`, `blocked`, `insufficient`, `not in mesh`.
pub fn badge(r: Readiness) -> Markup {
    html! { span class={ "badge " (r.as_str()) } { (r.label()) } }
}

pub fn security_label(s: Security) -> &'static str {
    match s {
        Security::IstioMtls => "Istio mTLS",
        Security::Tls => "other TLS",
        Security::Plaintext => "plaintext",
        Security::Unknown => "unknown",
    }
}

/// A security class with its colour.
pub fn security(s: Security) -> Markup {
    html! { span class={ "sec " (s.as_str()) } { (security_label(s)) } }
}

pub fn mesh_label(m: Mesh) -> &'static str {
    match m {
        Mesh::Sidecar => "sidecar",
        Mesh::Ambient => "ambient",
        Mesh::None => "none",
    }
}

/// A name, linked when it has a page; long names cut, the full name in the tooltip.
pub fn name_link(label: &str, href: Option<&str>) -> Markup {
    let shown = short(label, MAX_LABEL);
    let full = (shown != label).then_some(label);
    html! {
        @if let Some(h) = href {
            a href=(h) title=[full] { (shown) }
        } @else {
            span title=[full] { (shown) }
        }
    }
}

/// A timestamp of the contract, shown to the second (`2026-11-27 14:30:20Z`), whole in its
/// tooltip and `datetime`.
pub fn when(ts: &str) -> Markup {
    let shown = match (ts.get(..10), ts.get(11..19)) {
        (Some(day), Some(time)) if ts.ends_with('Z') => format!("{day} {time}Z"),
        _ => ts.to_owned(),
    };
    html! { time datetime=(ts) title=(ts) { (shown) } }
}

/// The lock: only for traffic that was all Istio mTLS.
fn lock() -> Markup {
    html! {
        svg.lock role="img" aria-label="all judged connections were Istio mTLS" viewBox="0 0 16 16" width="14" height="14" {
            title { "all judged connections were Istio mTLS" }
            path d="M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7zm2 0h4V5a2 2 0 0 0-4 0z" {}
        }
    }
}

/// The mTLS share in words (rounded down) and as a bar of all four classes.
pub fn share(s: &Share) -> Markup {
    let c = &s.counts;
    let width = 120u64;
    let total = s.total.max(1);
    let parts = [
        ("mtls", c.istio_mtls),
        ("tls", c.tls),
        ("plaintext", c.plaintext),
        ("unknown", c.unknown),
    ];
    let mut x = 0u64;
    let mut segments = Vec::new();
    for (class, n) in parts {
        let w = n * width / total;
        if n > 0 {
            segments.push((class, x, w.max(1)));
        }
        x += w;
    }
    html! {
        span.share {
            @if s.all_mtls { (lock()) " " }
            @match s.percent {
                Some(p) => { span.pct { (p) " % Istio mTLS" } " (" (s.mtls) " of " (s.total) ")" }
                None => { span.muted { "no judged connections" } }
            }
            @if s.total > 0 {
                " "
                svg.bar role="img" aria-label={ (c.istio_mtls) " Istio mTLS, " (c.tls) " other TLS, " (c.plaintext) " plaintext, " (c.unknown) " unknown" } viewBox={ "0 0 " (width) " 8" } width=(width) height="8" {
                    rect.bg x="0" y="0" width=(width) height="8" {}
                    @for (class, x, w) in &segments {
                        rect class={ "seg " (class) } x=(x) y="0" width=(w) height="8" {}
                    }
                }
            }
        }
    }
}

/// A suggested PeerAuthentication and its rollback, each with copy buttons and the `kubectl`
/// line. `id` prefixes the element ids (unique per page). The rollback is the policy the
/// suggestion edits as it is today, or deleting the one it creates; where the source does not
/// say, the command that saves what it would replace, before applying.
pub fn policy(id: &str, p: &PolicyPair) -> Markup {
    let rollback_id = format!("{id}-rollback");
    html! {
        div.policies {
            (policy_block(&format!("{id}-apply"), "Apply", &p.yaml, &p.apply))
            @match (p.rollback_kind, &p.rollback_yaml, &p.rollback_command) {
                (RollbackKind::Restore, Some(y), Some(cmd)) => {
                    (policy_block(&rollback_id, "Rollback: the policy as it is today", y, cmd))
                }
                (RollbackKind::Delete, _, Some(cmd)) => {
                    div.policy id=(rollback_id) {
                        h3 { "Rollback: delete the new policy" }
                        (save_first(&rollback_id, p))
                        @if p.save_command.is_some() { p { "Once applied, to roll back:" } }
                        (command(&rollback_id, cmd))
                    }
                }
                _ => {
                    div.policy id=(rollback_id) {
                        h3 { "Rollback" }
                        @if let Some(e) = &p.rollback_error { p.error { (e) } }
                        (save_first(&rollback_id, p))
                    }
                }
            }
        }
    }
}

/// What the rollback cannot know, and the command that saves the policy it may replace.
fn save_first(id: &str, p: &PolicyPair) -> Markup {
    html! {
        @if let Some(note) = &p.rollback_note { p.muted.note { (note) } }
        @if let Some(save) = &p.save_command {
            p { "Before applying, save it:" }
            (command(&format!("{id}-save"), save))
        }
    }
}

/// A command line with its copy button.
fn command(id: &str, cmd: &str) -> Markup {
    let cmd_id = format!("{id}-cmd");
    html! {
        pre.cmd id=(cmd_id) { (cmd) }
        p.actions {
            button type="button" data-copy=(cmd_id) data-label="Copy command" { "Copy command" }
        }
    }
}

fn policy_block(id: &str, heading: &str, yaml: &str, cmd: &str) -> Markup {
    let yaml_id = format!("{id}-yaml");
    let cmd_id = format!("{id}-cmd");
    html! {
        div.policy id=(id) {
            h3 { (heading) }
            pre.yaml id=(yaml_id) { (yaml) }
            p.actions {
                button type="button" data-copy=(yaml_id) data-label="Copy YAML" { "Copy YAML" }
                " "
                button type="button" data-copy=(cmd_id) data-label="Copy kubectl command" { "Copy kubectl command" }
            }
            details.apply {
                summary { code { "kubectl apply -f - <<'EOF' … EOF" } }
                pre.cmd id=(cmd_id) { (cmd) }
            }
        }
    }
}
