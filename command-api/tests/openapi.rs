//! The OpenAPI document against the router that serves it, in this test's own process
//! (`system_tests::App`): every documented operation is served at its path and method and at no
//! other method; the document and Swagger UI are public and need nothing from elsewhere. That
//! the router serves nothing undocumented is checked beside it (`http::tests`: routes are added
//! only through the lists the document is built from).

use reqwest::{Method, StatusCode};
use serde_json::Value;
use system_tests::App;

/// An id of the right shape that names no environment.
const SOME_ID: &str = "env_00000000000000000000000000";

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

async fn document(app: &App) -> Value {
    let response = reqwest::get(format!("{}/v1/openapi.json", app.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the document is public");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served_at_its_method_and_no_other() {
    let app = App::spawn().await;
    let document = document(&app).await;
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 11, "{:?}", paths.keys());
    let anonymous = reqwest::Client::new();
    for (path, item) in paths {
        let concrete = path.replace("{id}", SOME_ID);
        let url = format!("{}{concrete}", app.base_url);
        for method in METHODS {
            let documented = item.get(method.as_str().to_ascii_lowercase()).is_some();
            if documented {
                // Without the token: a served /v1 operation answers 401 (the auth layer runs only
                // on a matched route); a public one answers as itself, never "no route".
                let response = anonymous
                    .request(method.clone(), &url)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                if path.starts_with("/v1/") {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
                } else {
                    assert!(
                        status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE,
                        "{method} {path}: {status}"
                    );
                }
            } else {
                let response = app.request(method.clone(), &concrete).send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_describes_the_api_and_swagger_ui_is_served_without_the_internet() {
    let app = App::spawn().await;
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "Beta9 Provisioner API");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    let create = &document["paths"]["/v1/environments"]["post"];
    assert_eq!(create["security"][0]["bearer"], serde_json::json!([]));
    for status in [
        "202", "400", "401", "408", "409", "413", "415", "422", "431", "500", "503",
    ] {
        let body = &create["responses"][status]["content"]["application/json"]["schema"]["$ref"];
        assert!(body.is_string(), "POST /v1/environments {status}: {create}");
    }
    for content_type in ["application/json", "application/yaml"] {
        assert!(create["requestBody"]["content"][content_type].is_object());
    }
    let headers: Vec<&str> = create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(headers.contains(&"Idempotency-Key") && headers.contains(&"X-Request-ID"));

    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let docs = anonymous
        .get(format!("{}/v1/docs", app.base_url))
        .send()
        .await
        .unwrap();
    assert!(docs.status().is_redirection(), "{}", docs.status());
    let page = anonymous
        .get(format!("{}/v1/docs/", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    for attribute in ["src=\"", "href=\""] {
        for (_, rest) in html.match_indices(attribute).map(|(i, _)| html.split_at(i)) {
            let target = &rest[attribute.len()..];
            assert!(
                !target.starts_with("http") && !target.starts_with("//"),
                "the page loads {} from elsewhere",
                &target[..target.find('"').unwrap_or(target.len())]
            );
        }
    }
    let initializer = anonymous
        .get(format!("{}/v1/docs/swagger-initializer.js", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        initializer.contains("/v1/openapi.json"),
        "the page shows the served document: {initializer}"
    );
    assert!(
        initializer.contains("\"validatorUrl\": \"none\""),
        "no online validator: {initializer}"
    );
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css"] {
        let response = anonymous
            .get(format!("{}/v1/docs/{asset}", app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
}
