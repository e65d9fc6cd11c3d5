//! The terminal table: edges like `linkerd viz edges`, then the verdicts and what to apply.

use std::io::{self, Write};

use super::{format_time, Report};
use crate::classify::Security;
use crate::verdict::Readiness;

/// ANSI styling, on only when writing to a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    fn readiness(&self, r: Readiness) -> String {
        let code = match r {
            Readiness::Ready => "32",
            Readiness::Blocked | Readiness::BrokenClients => "31",
            Readiness::Insufficient => "33",
            Readiness::NotInMesh => "36",
        };
        self.paint(code, r.as_str())
    }
    fn security(&self, s: Security) -> String {
        let code = match s {
            Security::IstioMtls => "32",
            Security::Tls => "35",
            Security::Plaintext => "31",
            Security::Unknown => "33",
        };
        self.paint(code, s.as_str())
    }
}

/// Rows of cells, printed with columns padded to their widest cell. Cells may carry ANSI
/// codes; widths are measured on the visible text.
fn print_rows(out: &mut dyn Write, rows: &[Vec<String>]) -> io::Result<()> {
    let visible = |s: &str| {
        let mut n = 0;
        let mut in_escape = false;
        for c in s.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (false, _) => n += 1,
                _ => {}
            }
        }
        n
    };
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| visible(c))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(visible(cell))
                    + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Print the whole report.
pub fn render(report: &Report, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let s = &report.summary;
    writeln!(
        out,
        "{} {} packets, {} connections ({} istio_mtls, {} tls, {} plaintext, {} unknown), {} attempts, {} local, {} decode errors",
        style.bold("SUMMARY"),
        s.packets,
        s.security.total(),
        s.security.istio_mtls,
        s.security.tls,
        s.security.plaintext,
        s.security.unknown,
        s.attempts,
        s.local_connections,
        s.decode_errors
    )?;
    writeln!(out)?;
    render_edges(report, style, out)?;
    writeln!(out)?;
    render_verdicts(report, style, out)
}

fn render_edges(report: &Report, style: Style, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", style.bold("EDGES"))?;
    if report.edges.is_empty() {
        return writeln!(out, "  (no TCP connections)");
    }
    let mut rows = vec![[
        "SOURCE",
        "DESTINATION",
        "PORT",
        "SECURITY",
        "MESH",
        "CONNS",
        "LAST SEEN",
    ]
    .map(str::to_owned)
    .to_vec()];
    for e in &report.edges {
        rows.push(vec![
            e.source.display(),
            e.destination.display(),
            e.port.to_string(),
            style.security(e.security),
            e.mesh.as_str().to_owned(),
            e.stats.connections.to_string(),
            format_time(e.stats.last_seen),
        ]);
    }
    print_rows(out, &rows)
}

fn render_verdicts(report: &Report, style: Style, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", style.bold("VERDICTS"))?;
    // the mode column only when the PeerAuthentications are known
    let modes = report.verdicts.iter().any(|v| v.mode.is_some());
    let mut header = vec![
        "DESTINATION",
        "VERDICT",
        "MTLS",
        "TLS",
        "PLAIN",
        "UNKNOWN",
        "EXEMPT",
    ];
    if modes {
        header.push("MODE");
    }
    header.push("REASON");
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    let idle = |v: &&crate::verdict::Verdict| {
        v.connections.total() == 0 && v.exempted == 0 && v.blockers.is_empty()
    };
    for v in report.verdicts.iter().filter(|v| !idle(v)) {
        let c = &v.connections;
        let mut row = vec![
            v.destination.display(),
            style.readiness(v.verdict),
            c.istio_mtls.to_string(),
            c.tls.to_string(),
            c.plaintext.to_string(),
            c.unknown.to_string(),
            v.exempted.to_string(),
        ];
        if modes {
            row.push(
                v.mode
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |m| m.describe()),
            );
        }
        row.push(v.reason.clone());
        rows.push(row);
    }
    print_rows(out, &rows)?;
    let idle: Vec<String> = report
        .verdicts
        .iter()
        .filter(idle)
        .map(|v| v.destination.display())
        .collect();
    if !idle.is_empty() {
        writeln!(
            out,
            "no inbound connections (insufficient): {}",
            idle.join(", ")
        )?;
    }
    for v in report.verdicts.iter().filter(|v| !v.blockers.is_empty()) {
        let what = if v.verdict == Readiness::BrokenClients {
            "has broken clients (already STRICT: refused now)"
        } else {
            "is blocked by"
        };
        writeln!(out, "\n{} {what}:", style.bold(&v.destination.display()))?;
        let rows: Vec<Vec<String>> = v
            .blockers
            .iter()
            .map(|b| {
                vec![
                    format!(
                        "  {}{}",
                        if b.broken { "broken: " } else { "" },
                        b.source.display()
                    ),
                    style.security(b.security),
                    serde_json::to_value(b.kind)
                        .ok()
                        .and_then(|k| k.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    format!("port {}", b.port),
                    format!("{} conns", b.connections),
                    format!("last {}", format_time(b.last_seen)),
                    b.remedy.to_owned(),
                ]
            })
            .collect();
        print_rows(out, &rows)?;
    }
    if !report.namespaces.is_empty() {
        writeln!(out, "\n{}", style.bold("NAMESPACES"))?;
        let mut rows = vec![[
            "NAMESPACE",
            "VERDICT",
            "READY",
            "BLOCKED",
            "INSUFFICIENT",
            "BROKEN",
            "IDLE",
        ]
        .map(str::to_owned)
        .to_vec()];
        for n in &report.namespaces {
            rows.push(vec![
                n.namespace.clone(),
                style.readiness(n.verdict),
                n.ready.to_string(),
                n.blocked.to_string(),
                n.insufficient.to_string(),
                n.broken_clients.to_string(),
                n.idle.to_string(),
            ]);
        }
        print_rows(out, &rows)?;
        writeln!(out, "mesh: {}", style.readiness(report.mesh.verdict))?;
    }
    render_policies(report, style, out)
}

fn render_policies(report: &Report, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let mut policies: Vec<(String, &str)> = Vec::new();
    if let Some(p) = &report.mesh.suggested_policy {
        policies.push(("the whole mesh".to_owned(), p));
    }
    for n in &report.namespaces {
        if let Some(p) = &n.suggested_policy {
            policies.push((format!("namespace {}", n.namespace), p));
        }
    }
    let namespace_wide = |ns: &Option<String>| {
        report
            .namespaces
            .iter()
            .any(|n| Some(&n.namespace) == ns.as_ref() && n.suggested_policy.is_some())
    };
    for v in &report.verdicts {
        if let Some(p) = &v.suggested_policy {
            if !namespace_wide(&v.destination.namespace) {
                policies.push((v.destination.display(), p));
            }
        }
    }
    for (scope, yaml) in policies {
        writeln!(out, "\n{} {}:", style.bold("Apply for"), scope)?;
        writeln!(out, "---\n{}", yaml.trim_end())?;
    }
    Ok(())
}
