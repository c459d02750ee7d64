//! The OpenAPI 3.1 document (`GET /openapi.json`) and its docs UI (`GET /docs`,
//! a vendored Swagger UI that needs no network).
//!
//! Each route's operation comes from the `#[utoipa::path]` on its handler, and
//! [`crate::shell::http::router`] registers handlers and operations from one
//! list, so the document cannot miss a route. What every route shares is added
//! here once: the security schemes, the problem schema with every stable
//! `type`, and the answers any request may get (limits, timeouts, a bug).

use crate::shell::problem::ProblemKind;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The document's head: what utoipa derives beside the paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "MaaS: Memes as a Service",
        description = "A paid meme API. Every `GET /memes` spends tokens from the caller's \
            balance, which is kept by a multi-region escrow ledger: each region spends only \
            its own share of a user's tokens, so no balance goes below zero. Subscribers to \
            Memes AI get AI-made memes, charged once delivered.\n\nErrors are \
            `application/problem+json` (RFC 9457) with a stable `type`; a client branches on \
            `type`, never on `detail`. Rate limits are per region.",
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "memes", description = "Memes, the thing tokens buy"),
        (name = "balance", description = "A user's own balance and jobs"),
        (name = "operator", description = "Balances, subscriptions and holds, for operators"),
        (name = "billing", description = "Events from the billing system, signed"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub(crate) struct ApiDoc;

/// Statuses any request may be answered with, whatever its route: a limit,
/// a timeout, a bug (see [`crate::shell::front`]).
const ANY_ROUTE: [(u16, &str); 6] = [
    (408, "The request took longer than the node allows"),
    (413, "The request body is larger than the node accepts"),
    (414, "The request target is longer than the node accepts"),
    (429, "Too many requests from this address or this user"),
    (431, "The request headers are larger than the node accepts"),
    (500, "A bug; the request may or may not have taken effect"),
];

/// The served document: utoipa's, with the shared parts added.
pub(crate) fn document(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    let types: Vec<&str> = ProblemKind::ALL
        .iter()
        .map(|k| k.type_and_status().0)
        .collect();
    let kinds: Vec<String> = ProblemKind::ALL
        .iter()
        .map(|k| {
            let (t, status) = k.type_and_status();
            format!("- `{t}` ({}): {}", status.as_u16(), k.title())
        })
        .collect();
    let components = &mut doc["components"];
    components["securitySchemes"] = json!({
        "client": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A client's JWT (HS256 or a public-key algorithm, as the node is \
                configured); its `sub` is the user id."
        },
        "operator": {
            "type": "http", "scheme": "bearer",
            "description": "The operator credential (`--operator-token`)."
        }
    });
    components["schemas"]["Problem"] = json!({
        "type": "object",
        "description": format!("An RFC 9457 problem. Stable types:\n{}", kinds.join("\n")),
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": { "type": "string", "enum": types },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string" },
            "instance": {
                "type": "string",
                "description": "`/requests/{x-request-id}`: quote it when reporting a problem"
            },
            "balance": {
                "type": "integer", "minimum": 0,
                "description": "The caller's balance, on a 402"
            }
        }
    });
    components["headers"] = json!({
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": { "type": "integer", "minimum": 0 }
        },
        "RateLimit-Limit": {
            "description": "Requests allowed per second for this user, in this region",
            "schema": { "type": "integer", "minimum": 0 }
        },
        "RateLimit-Remaining": {
            "description": "Requests left in the current second",
            "schema": { "type": "integer", "minimum": 0 }
        },
        "RateLimit-Reset": {
            "description": "Seconds until the limit refills",
            "schema": { "type": "integer", "minimum": 0 }
        },
        "X-Request-Id": {
            "description": "This request's id (the client's own, if it sent one)",
            "schema": { "type": "string" }
        }
    });
    let problem = |description: &str, with_retry: bool| {
        let limits = [
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ];
        let names =
            std::iter::once("X-Request-Id").chain(limits.into_iter().filter(|_| with_retry));
        let headers: serde_json::Map<String, Value> = names
            .map(|n| {
                (
                    n.to_owned(),
                    json!({ "$ref": format!("#/components/headers/{n}") }),
                )
            })
            .collect();
        json!({
            "description": description,
            "headers": headers,
            "content": { "application/problem+json": {
                "schema": { "$ref": "#/components/schemas/Problem" }
            } }
        })
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let Some(responses) = operation["responses"].as_object_mut() else {
                    continue;
                };
                for (status, description) in ANY_ROUTE {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem(description, status == 429));
                }
                responses
                    .entry("default")
                    .or_insert_with(|| problem("Any other problem", false));
            }
        }
    }
    doc
}

/// Swagger UI, vendored (see `assets/swagger-ui/README.md`).
const SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MaaS API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#docs", deepLinking: true });
</script>
</body>
</html>
"##;

/// `GET /docs` and its two assets.
pub(crate) fn docs_asset(name: &str) -> Response {
    let (body, kind): (&'static [u8], &'static str) = match name {
        "swagger-ui-bundle.js" => (SWAGGER_JS, "text/javascript; charset=utf-8"),
        "swagger-ui.css" => (SWAGGER_CSS, "text/css; charset=utf-8"),
        _ => (DOCS_PAGE.as_bytes(), "text/html; charset=utf-8"),
    };
    let mut response = Body::from(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
