//! The JSON API mirrors the pages; the server is read-only and sends its security headers.

use hyper::Method;

use crate::support::{get, report_json, request, serve_report};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_mirrors_the_pages() {
    let addr = serve_report(&report_json("istio-migration-before")).await;

    let o = get(addr, "/api/overview").await;
    assert_eq!(o.status, 200);
    assert!(o.header("content-type").starts_with("application/json"));
    let o = o.json();
    assert_eq!(o["mesh"]["verdict"], "blocked");
    assert_eq!(o["totals"]["ready"], 1);
    assert_eq!(o["totals"]["blocked"], 1);
    assert_eq!(o["totals"]["idle"], 3);
    assert_eq!(o["top_blockers"][0]["source"], "legacy/sleep");
    assert_eq!(o["top_blockers"][0]["kind"], "no_sidecar");
    assert_eq!(o["namespaces"][0]["namespace"], "bar");
    assert_eq!(o["namespaces"][0]["href"], "/namespace?ns=bar");

    let ns = get(addr, "/api/namespace?ns=bar").await.json();
    assert_eq!(ns["namespace"]["verdict"], "ready");
    let yaml = ns["policy"]["yaml"].as_str().unwrap_or_default();
    assert!(
        yaml.contains("  namespace: bar\nspec:\n  mtls:\n    mode: STRICT\n"),
        "{yaml}"
    );
    // a new policy (the report knows no policy in force): its rollback deletes it
    assert_eq!(ns["policy"]["rollback_kind"], "delete");
    assert_eq!(ns["policy"]["rollback_yaml"], serde_json::Value::Null);
    assert_eq!(
        ns["policy"]["rollback_command"],
        "kubectl delete peerauthentications.security.istio.io --namespace=bar default\n"
    );
    assert!(ns["policy"]["apply"]
        .as_str()
        .unwrap_or_default()
        .starts_with("kubectl apply -f - <<'EOF'\napiVersion: security.istio.io/v1\n"));

    let w = get(addr, "/api/workload?ns=foo&name=httpbin").await.json();
    assert_eq!(w["verdict"]["verdict"], "blocked");
    assert_eq!(w["share"]["percent"], 66);
    assert_eq!(w["share"]["all_mtls"], false);
    assert_eq!(w["blockers"][0]["kind_label"], "client without sidecar");
    assert_eq!(w["exempted_explained"], 2);
    assert!(w["policy"].is_null());
    assert_eq!(w["inbound"].as_array().map(Vec::len), Some(5));

    let m = get(addr, "/api/matrix").await.json();
    assert_eq!(m["exempt_connections"], 4);
    assert!(m["cells"].as_array().is_some_and(|c| !c.is_empty()));

    let snap = get(addr, "/api/snapshot").await.json();
    assert_eq!(snap["source"]["kind"], "report");
    assert_eq!(snap["evidence"]["drops_known"], false);
    assert_eq!(snap["verdicts"].as_array().map(Vec::len), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_not_found_and_headers() {
    let addr = serve_report(&report_json("istio-migration-before")).await;
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for path in [
            "/",
            "/api/overview",
            "/workload?ns=foo&name=httpbin",
            "/nowhere",
        ] {
            let a = request(method.clone(), addr, path).await;
            assert_eq!(a.status, 405, "{method} {path}");
            assert_eq!(a.header("allow"), "GET, HEAD");
        }
    }
    let head = request(Method::HEAD, addr, "/").await;
    assert_eq!(head.status, 200);

    let missing = get(addr, "/workload?ns=foo&name=nobody").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("<h1>Not found</h1>"));
    assert_eq!(
        get(addr, "/api/workload?ns=foo&name=nobody").await.status,
        404
    );
    assert_eq!(get(addr, "/api/namespace?ns=nowhere").await.status, 404);
    assert_eq!(get(addr, "/nowhere").await.status, 404);
    assert_eq!(
        get(addr, "/api/nowhere").await.json()["error"],
        "no such endpoint"
    );
    assert_eq!(get(addr, "/workload?ip=not-an-ip").await.status, 400);

    for path in [
        "/",
        "/matrix",
        "/api/overview",
        "/static/app.js",
        "/nowhere",
    ] {
        let a = get(addr, path).await;
        assert_eq!(
            a.header("content-security-policy"),
            meshwatch_dashboard::server::CSP,
            "{path}"
        );
        assert_eq!(a.header("x-content-type-options"), "nosniff");
    }
    let js = get(addr, "/static/app.js").await;
    assert!(js.header("content-type").starts_with("text/javascript"));
    assert!(js.body.contains("data-copy"));
    let css = get(addr, "/static/app.css").await;
    assert!(css.header("content-type").starts_with("text/css"));
}
