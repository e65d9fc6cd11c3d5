//! `/matrix`: source × destination as a server-rendered SVG heat map of the plaintext share,
//! with the same numbers in a table.

use maud::{html, Markup};

use super::{name_link, page, short, Frame};
use crate::pages::{Cell, Matrix};

const CELL: usize = 28;
/// Roughly the width of a character of the labels (12 px sans-serif), and that times sin 45°.
const CHAR: usize = 7;
const CHAR_45: usize = 5;
/// Characters of a label in the SVG (the full name is in its tooltip).
const SVG_LABEL: usize = 32;

/// The heat-map class of a plaintext share: `h0` none, `h5` all.
fn heat(pct: u64) -> &'static str {
    match pct {
        0 => "h0",
        1..=24 => "h1",
        25..=49 => "h2",
        50..=74 => "h3",
        75..=99 => "h4",
        _ => "h5",
    }
}

fn tooltip(m: &Matrix, c: &Cell) -> String {
    let src = m.sources.get(c.source).map_or("", |a| a.label.as_str());
    let dst = m
        .destinations
        .get(c.destination)
        .map_or("", |a| a.label.as_str());
    let n = &c.counts;
    format!(
        "{src} → {dst}: {} connections, {} % plaintext ({} Istio mTLS, {} other TLS, {} plaintext, {} unknown)",
        n.total(),
        c.plaintext_percent,
        n.istio_mtls,
        n.tls,
        n.plaintext,
        n.unknown
    )
}

/// The longest label shown, in characters.
fn longest(axis: &[crate::pages::Axis]) -> usize {
    axis.iter()
        .map(|a| a.label.chars().count().min(SVG_LABEL))
        .max()
        .unwrap_or(0)
}

fn svg(m: &Matrix) -> Markup {
    // room for the source labels on the left, and for the slanted destination labels above
    // (and past the last column, where the last ones lean)
    const LEFT_PAD: usize = 16;
    let left = longest(&m.sources) * CHAR + LEFT_PAD;
    let slant = longest(&m.destinations) * CHAR_45 + 12;
    let (rows, cols) = (m.sources.len(), m.destinations.len());
    let top = slant.max(40);
    let width = left + cols * CELL + slant;
    let height = top + rows * CELL + 10;
    html! {
        svg.matrix xmlns="http://www.w3.org/2000/svg" role="img" aria-label="plaintext share by source and destination" viewBox={ "0 0 " (width) " " (height) } width=(width) height=(height) {
            @for (i, s) in m.sources.iter().enumerate() {
                @let y = top + i * CELL + CELL / 2 + 4;
                g.src {
                    title { (s.label) }
                    @if let Some(h) = &s.href {
                        a href=(h) { text x=(left - 6) y=(y) text-anchor="end" { (short(&s.label, SVG_LABEL)) } }
                    } @else {
                        text x=(left - 6) y=(y) text-anchor="end" { (short(&s.label, SVG_LABEL)) }
                    }
                }
            }
            @for (j, d) in m.destinations.iter().enumerate() {
                @let x = left + j * CELL + CELL / 2;
                g.dst {
                    title { (d.label) }
                    @let t = format!("translate({x},{}) rotate(-45)", top - 6);
                    @if let Some(h) = &d.href {
                        a href=(h) { text transform=(t) { (short(&d.label, SVG_LABEL)) } }
                    } @else {
                        text transform=(t) { (short(&d.label, SVG_LABEL)) }
                    }
                }
            }
            @for i in 0..rows {
                @for j in 0..cols {
                    rect.empty x=(left + j * CELL + 1) y=(top + i * CELL + 1) width=(CELL - 2) height=(CELL - 2) {}
                }
            }
            @for c in &m.cells {
                @let x = left + c.destination * CELL;
                @let y = top + c.source * CELL;
                @let href = m.destinations.get(c.destination).and_then(|d| d.href.clone());
                g.cell {
                    title { (tooltip(m, c)) }
                    a href=[href] {
                        rect class={ (heat(c.plaintext_percent)) @if c.counts.tls > 0 { " tls" } } x=(x + 1) y=(y + 1) width=(CELL - 2) height=(CELL - 2) {}
                        text.pct x=(x + CELL / 2) y=(y + CELL / 2 + 4) text-anchor="middle" { (c.plaintext_percent) }
                    }
                }
            }
        }
    }
}

pub fn matrix(f: &Frame<'_>, m: &Matrix) -> Markup {
    page(
        f,
        html! {
            p.crumbs { a href="/" { "Overview" } " / matrix" }
            h1 { "Who talks plaintext to whom" }
            p { "Rows are sources, columns destinations; each cell is the share of their judged connections that were plaintext (rounded up, so any plaintext shows). A dashed outline marks non-mesh TLS, which STRICT refuses too." }
            @if m.cells.is_empty() {
                p.muted { "No judged connection." }
            } @else {
                div.matrix-scroll { (svg(m)) }
                p.legend {
                    "Plaintext share: "
                    span.key.h0 { "0 %" } span.key.h1 { "1–24 %" } span.key.h2 { "25–49 %" } span.key.h3 { "50–74 %" } span.key.h4 { "75–99 %" } span.key.h5 { "100 %" }
                }
            }
            @if m.sources_not_shown + m.destinations_not_shown > 0 {
                p.muted { "Not shown (quieter): " (m.sources_not_shown) " sources, " (m.destinations_not_shown) " destinations." }
            }
            @if m.exempt_connections > 0 {
                p.muted { (m.exempt_connections) " connections on exempt ports or from exempt sources are left out." }
            }
            details {
                summary { "The same as a table" }
                table.matrix-table {
                    thead { tr { th { "Source" } th { "Destination" } th.num { "Connections" } th.num { "Plaintext %" } th.num { "Istio mTLS" } th.num { "Other TLS" } th.num { "Plaintext" } th.num { "Unknown" } } }
                    tbody {
                        @for c in &m.cells {
                            @let s = m.sources.get(c.source);
                            @let d = m.destinations.get(c.destination);
                            tr {
                                td { (name_link(s.map_or("", |a| a.label.as_str()), s.and_then(|a| a.href.as_deref()))) }
                                td { (name_link(d.map_or("", |a| a.label.as_str()), d.and_then(|a| a.href.as_deref()))) }
                                td.num { (c.counts.total()) }
                                td.num { (c.plaintext_percent) }
                                td.num { (c.counts.istio_mtls) }
                                td.num { (c.counts.tls) }
                                td.num { (c.counts.plaintext) }
                                td.num { (c.counts.unknown) }
                            }
                        }
                    }
                }
            }
        },
    )
}
