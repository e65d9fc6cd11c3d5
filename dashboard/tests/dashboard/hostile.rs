//! Names come from the cluster and from packets: hostile ones (markup, quotes, attribute
//! breakers, 10 KB) go through the real analyzer into a report and through every page and
//! every JSON endpoint. Every tag and attribute of every page must be one the dashboard writes,
//! the only script is its own, and the names come back intact as text and JSON.

use std::collections::BTreeSet;

use meshwatch::peer_auth::{Mode, PeerAuthentication};
use meshwatch::verdict::render;
use meshwatch_dashboard::pages::encode;

use crate::support::{has, lacks, page, report_with_workloads, serve_report};

/// HTML text escaping, written here independently of the template engine.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const H_SCRIPT: &str = "<script>alert(\"ns\")</script>";
const H_ATTR: &str = "\"><img src=x onerror=alert(1)>";
const H_QUOTE: &str = "' onmouseover='alert(2)' x='";
const H_CLOSE: &str = "</textarea></pre><svg onload=alert(3)>&amp;";
const H_JS: &str = "javascript:alert(4)";

fn big() -> String {
    format!(
        "{}\"><b onclick=alert(5)>bold</b>{}",
        "A".repeat(5000),
        "B".repeat(5000)
    )
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// istio-migration-before's pods under hostile names (bar/httpbin keeps all-mTLS traffic,
/// so its hostile names also reach the suggested PeerAuthentication YAML; every workload of
/// its namespace has labels, or no selector could be shown to select it alone).
fn hostile_workloads() -> String {
    let big = big();
    format!(
        "workloads:\n\
  - {{namespace: {bar}, workload: {a}, ips: [\"10.244.1.21\"], labels: {{tier: {a}, {s}: {js}}}}}\n\
  - {{namespace: {bar}, workload: {qt}, ips: [\"10.244.1.22\"], labels: {{tier: {qt}}}}}\n\
  - {{namespace: {foo}, workload: {big}, ips: [\"10.244.1.11\"]}}\n\
  - {{namespace: {foo}, workload: {js}, ips: [\"10.244.1.12\"]}}\n\
  - {{namespace: {big}, workload: sleep, ips: [\"10.244.1.31\"], mesh: none}}\n\
nodes:\n  - {{name: {big}, ips: [10.244.1.1]}}\n",
        bar = q(H_SCRIPT),
        a = q(H_ATTR),
        qt = q(H_QUOTE),
        foo = q(H_CLOSE),
        big = q(&big),
        js = q(H_JS),
        s = q(H_SCRIPT),
    )
}

const TAGS: &[&str] = &[
    "html", "head", "meta", "title", "link", "body", "header", "nav", "a", "p", "code", "time",
    "label", "input", "main", "section", "h1", "h2", "h3", "table", "thead", "tbody", "tr", "th",
    "td", "span", "svg", "path", "rect", "g", "text", "pre", "button", "details", "summary", "dl",
    "dt", "dd", "ul", "li", "script", "div", "strong",
];
const ATTRS: &[&str] = &[
    "lang",
    "charset",
    "name",
    "content",
    "rel",
    "href",
    "class",
    "id",
    "title",
    "type",
    "checked",
    "data-refresh",
    "data-copy",
    "data-label",
    "role",
    "aria-label",
    "viewBox",
    "width",
    "height",
    "x",
    "y",
    "d",
    "xmlns",
    "text-anchor",
    "transform",
    "src",
    "datetime",
];

/// Every tag and attribute is one the dashboard writes; no link leaves the site or runs code.
fn check_markup(html: &str, what: &str) {
    let mut rest = html;
    let mut scripts = 0;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest
            .find('>')
            .unwrap_or_else(|| panic!("{what}: a tag never ends"));
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with("!DOCTYPE") {
            continue;
        }
        let closing = tag.starts_with('/');
        let tag = tag.strip_prefix('/').unwrap_or(tag);
        let name = tag.split(char::is_whitespace).next().unwrap_or("");
        assert!(TAGS.contains(&name), "{what}: tag {name:?} in <{tag}>");
        scripts += usize::from(name == "script" && !closing);
        let mut attrs = tag[name.len()..].trim_start();
        while !attrs.is_empty() {
            let n_end = attrs
                .find(|c: char| c == '=' || c.is_whitespace())
                .unwrap_or(attrs.len());
            let attr = &attrs[..n_end];
            assert!(
                ATTRS.contains(&attr),
                "{what}: attribute {attr:?} in <{}>",
                &tag[..tag.len().min(200)]
            );
            attrs = &attrs[n_end..];
            if let Some(v) = attrs.strip_prefix("=\"") {
                let close = v
                    .find('"')
                    .unwrap_or_else(|| panic!("{what}: unterminated value"));
                let value = &v[..close];
                if attr == "href" || attr == "src" {
                    assert!(
                        value.starts_with('/') || value == "data:,",
                        "{what}: {attr}={value:?} leaves the site"
                    );
                }
                attrs = &v[close + 1..];
            }
            attrs = attrs.trim_start();
        }
    }
    assert_eq!(scripts, 1, "{what}: exactly one script");
    assert_eq!(
        html.matches("<script").count(),
        1,
        "{what}: only the dashboard's own script"
    );
    has(html, r#"<script src="/static/app.js"></script>"#);
}

/// (A single quote is harmless as text and inside the double-quoted attributes; the markup
/// check above is what proves it never opens an attribute.)
fn check_no_raw_hostile(html: &str, what: &str) {
    for raw in [
        H_SCRIPT,
        H_ATTR,
        H_CLOSE,
        "<b>bold</b>",
        "<img",
        "<svg onload",
    ] {
        assert!(!html.contains(raw), "{what}: {raw:?} appears unescaped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_text_on_every_page_and_data_in_every_api() {
    let report = report_with_workloads("istio-migration-before", &hostile_workloads());
    let snapshot: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
    let addr = serve_report(&report).await;

    // every page: the overview, the matrix, each namespace, each destination
    let mut paths: BTreeSet<String> = ["/".to_owned(), "/matrix".to_owned()].into();
    let o = page(addr, "/").await;
    let api: serde_json::Value =
        serde_json::from_str(&page(addr, "/api/overview").await).unwrap_or_default();
    for n in api["namespaces"].as_array().into_iter().flatten() {
        paths.insert(n["href"].as_str().unwrap_or_default().to_owned());
    }
    for v in snapshot["verdicts"].as_array().into_iter().flatten() {
        let ns = v["namespace"].as_str().unwrap_or_default();
        let w = v["workload"].as_str().unwrap_or_default();
        paths.insert(
            meshwatch_dashboard::pages::destination_href(&meshwatch_dashboard::model::PeerView {
                namespace: Some(ns.to_owned()),
                workload: Some(w.to_owned()),
                ..Default::default()
            })
            .unwrap_or_default(),
        );
    }
    assert_eq!(paths.len(), 2 + 3 + 5, "{paths:?}");
    for path in &paths {
        let html = page(addr, path).await;
        check_markup(&html, path);
        check_no_raw_hostile(&html, path);
        // a 10 KB name is whole only in tooltips: a few dozen of them at most
        assert!(html.len() < 400_000, "{path}: {} bytes", html.len());
    }

    // the names are there, as text
    has(&o, &esc(H_SCRIPT));
    let bar = page(addr, &format!("/namespace?ns={}", encode(H_SCRIPT))).await;
    has(&bar, r#"<span class="badge ready">ready</span>"#);
    let httpbin = page(
        addr,
        &format!("/workload?ns={}&name={}", encode(H_SCRIPT), encode(H_ATTR)),
    )
    .await;
    // the YAML the engine wrote for these names (quoted YAML strings), escaped as HTML text
    // no `app` label: its first label in order (the hostile key) tells it from the other
    let strict = render(&PeerAuthentication {
        namespace: H_SCRIPT.to_owned(),
        name: format!("{H_ATTR}-strict"),
        created: String::new(),
        selector: Some([(H_SCRIPT.to_owned(), H_JS.to_owned())].into()),
        mode: Mode::Strict,
        port_level: Default::default(),
        edited: false,
    });
    // the report knows no policy in force: the new policy says an older one may win, naming
    // the namespace (escaped like the rest)
    let caveat = format!(
        "# UNCHECKED: the PeerAuthentications in force are not known here: an older one in {H_SCRIPT} that selects these pods, even with mode UNSET, would win over this one (Istio applies the oldest): check kubectl get peerauthentications -n {H_SCRIPT} before applying\n"
    );
    has(
        &httpbin,
        &format!(
            r#"<pre class="yaml" id="workload-apply-yaml">{}</pre>"#,
            esc(&format!("{caveat}{strict}"))
        ),
    );
    has(
        &httpbin,
        &esc("  name: \"\\\"><img src=x onerror=alert(1)>-strict\"\n"),
    );
    // its rollback deletes the new policy: a command whose names are shell-quoted data
    let delete = meshwatch_dashboard::policy::delete_command(H_SCRIPT, &format!("{H_ATTR}-strict"));
    has(
        &httpbin,
        &format!(
            r#"<pre class="cmd" id="workload-rollback-cmd">{}</pre>"#,
            esc(&delete)
        ),
    );
    // a 10 KB name is cut in text, whole in its tooltip
    let big_page = page(addr, &format!("/namespace?ns={}", encode(H_CLOSE))).await;
    has(&big_page, &format!("{}…", "A".repeat(79)));
    has(
        &big_page,
        "&quot;&gt;&lt;b onclick=alert(5)&gt;bold&lt;/b&gt;",
    );

    // the JSON API returns the names exactly
    let snap: serde_json::Value =
        serde_json::from_str(&page(addr, "/api/snapshot").await).unwrap_or_default();
    let names: BTreeSet<String> = snap["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["workload"].as_str().map(str::to_owned))
        .collect();
    assert!(names.contains(H_ATTR) && names.contains(H_QUOTE) && names.contains(&big()));
    let w: serde_json::Value = serde_json::from_str(
        &page(
            addr,
            &format!(
                "/api/workload?ns={}&name={}",
                encode(H_SCRIPT),
                encode(H_ATTR)
            ),
        )
        .await,
    )
    .unwrap_or_default();
    assert_eq!(w["destination"]["workload"], H_ATTR);
    assert_eq!(w["policy"]["rollback_command"], delete.as_str());
    assert_eq!(
        w["verdict"]["suggested_rollback"]["namespace"], H_SCRIPT,
        "the rollback names exactly what the policy names"
    );
    lacks(&o, "onerror=alert(1)>");
}

/// A PeerAuthentication name is the cluster's too: hostile ones (markup, quotes, 10 KB) reach
/// the mode today ("PERMISSIVE (workload …)"), the suggestion that edits the policy in force
/// (its name kept) and the JSON, and are text everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policy_names_are_text_on_every_page_and_data_in_every_api() {
    const P_SCRIPT: &str = "<script>alert(\"pa\")</script>'\"";
    let p_big = format!(
        "{}\"><i onclick=alert(6)>{}",
        "C".repeat(5000),
        "D".repeat(5000)
    );
    let ids = meshwatch::identity::file::WorkloadsFile::parse(&hostile_workloads(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let pcap = crate::support::repo().join("pcaps/istio-migration-before.pcap");
    let policy = meshwatch::verdict::Policy::default();
    let (mut report, _) = meshwatch::analyze::analyze(
        &[pcap],
        &ids,
        &policy,
        meshwatch::flow::TableLimits::default(),
        false,
        None,
        meshwatch::analyze::Threads {
            workers: 1,
            helpers: meshwatch::analyze::Helpers::Auto,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let in_bar = |name: &str, created: &str, selector| PeerAuthentication {
        namespace: H_SCRIPT.to_owned(),
        name: name.to_owned(),
        created: created.to_owned(),
        selector,
        mode: Mode::Permissive,
        port_level: Default::default(),
        edited: false,
    };
    let policies = [
        in_bar(P_SCRIPT, "2024-01-01T00:00:00Z", None),
        in_bar(
            &p_big,
            "2024-02-01T00:00:00Z",
            Some([("tier".to_owned(), H_ATTR.to_owned())].into()),
        ),
    ];
    meshwatch::analyze::judge_with_modes(&mut report, &ids, &policy, &policies);
    let json = serde_json::to_string(&report).unwrap_or_else(|e| panic!("{e}"));
    let addr = serve_report(&json).await;

    let workload_path = format!("/workload?ns={}&name={}", encode(H_SCRIPT), encode(H_ATTR));
    let bar_path = format!("/namespace?ns={}", encode(H_SCRIPT));
    let quote_path = format!("/workload?ns={}&name={}", encode(H_SCRIPT), encode(H_QUOTE));
    for path in ["/", "/matrix", &bar_path, &workload_path, &quote_path] {
        let html = page(addr, path).await;
        check_markup(&html, path);
        check_no_raw_hostile(&html, path);
        for raw in ["<script>alert(\"pa\")", "<i onclick"] {
            assert!(!html.contains(raw), "{path}: {raw:?} appears unescaped");
        }
    }
    // the mode today names the policy, as text; the suggestion edits it, its name kept
    let httpbin = page(addr, &workload_path).await;
    let id = format!("{H_SCRIPT}/{p_big}");
    has(&httpbin, &esc(&format!("PERMISSIVE (workload {id})")));
    has(&httpbin, &esc(&format!("  name: {}\n", q(&p_big))));
    let quoted = page(addr, &quote_path).await;
    has(
        &quoted,
        &esc(&format!("PERMISSIVE (namespace {H_SCRIPT}/{P_SCRIPT})")),
    );

    // the JSON API returns the names exactly
    let w: serde_json::Value = serde_json::from_str(
        &page(
            addr,
            &format!(
                "/api/workload?ns={}&name={}",
                encode(H_SCRIPT),
                encode(H_ATTR)
            ),
        )
        .await,
    )
    .unwrap_or_default();
    let text = w.to_string();
    assert!(
        text.contains(&q(&id)),
        "the policy id, exactly, in {text:.300}"
    );
    let apply = w["policy"]["yaml"].as_str().unwrap_or_default();
    let parsed = meshwatch_dashboard::policy::target(apply).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.name, p_big);
}
