//! `/console`: the page and everything it loads come from Orderly itself,
//! under a CSP that allows no inline script, and no console script writes
//! HTML. The pages themselves are tested in a real browser by
//! `scripts/console_test.sh`.

use std::collections::BTreeSet;

use crate::helpers::{TestApp, spawn_app};

/// The quoted `.js` / `.css` references in an HTML page or a module's imports.
fn references(text: &str) -> Vec<String> {
    text.split(['"', '\''])
        .filter(|part| {
            (part.ends_with(".js") || part.ends_with(".css")) && !part.contains(char::is_whitespace)
        })
        .map(str::to_owned)
        .collect()
}

/// Every script and stylesheet the console loads, followed through the
/// modules' imports, as (path, body).
async fn console_files(app: &TestApp) -> Vec<(String, String)> {
    let html = app.get("/console").await.text().await.unwrap();
    let mut pending: Vec<String> = references(&html);
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    while let Some(reference) = pending.pop() {
        let path = match reference.strip_prefix("./") {
            Some(sibling) => format!("/console/{sibling}"),
            None => reference,
        };
        if !seen.insert(path.clone()) {
            continue;
        }
        assert!(
            path.starts_with("/console/"),
            "{path} is not served by Orderly's console"
        );
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        let expected = if path.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(content_type.starts_with(expected), "{path}: {content_type}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        if path.ends_with(".js") {
            pending.extend(
                references(&body)
                    .into_iter()
                    .filter(|r| r.starts_with("./")),
            );
        }
        files.push((path, body));
    }
    files
}

#[actix_web::test]
async fn the_console_page_runs_only_its_own_scripts() {
    let app = spawn_app().await;
    let (csp, html) = app.page("/console").await;
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=\"/console/")
            .count(),
        "every script of the page is a served module, none inline:\n{html}"
    );

    let files = console_files(&app).await;
    let names: BTreeSet<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
    for expected in [
        "/console/app.js",
        "/console/api.js",
        "/console/dom.js",
        "/console/console.css",
        "/console/queue.js",
        "/console/job.js",
    ] {
        assert!(names.contains(expected), "{expected} not loaded: {names:?}");
    }
}

#[actix_web::test]
async fn no_console_script_turns_data_into_html() {
    let app = spawn_app().await;
    for (path, body) in console_files(&app).await {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(
                !body.contains(sink),
                "{path} uses {sink}: data must render as text"
            );
        }
    }
}

#[actix_web::test]
async fn an_unknown_console_asset_is_a_json_404() {
    let app = spawn_app().await;
    for path in [
        "/console/nope.js",
        "/console/..%2FCargo.toml",
        "/console/../Cargo.toml",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
}
