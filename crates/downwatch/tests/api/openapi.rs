//! The OpenAPI document (`/api/openapi.json`) and the interactive docs
//! (`/api/docs`): every route the app serves is documented with its errors,
//! every `$ref` resolves, and real answers match the documented schemas.

use crate::both_modes;
use crate::detector::{burst, live, now, stepped};
use crate::helpers::{ADMIN_TOKEN, Backing, Mode, TestApp, new_client_ip, spawn_app};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

both_modes!(
    the_document_lists_every_route_the_app_serves,
    every_operation_documents_its_errors_and_admin_security,
    refs_resolve_and_parameters_and_bodies_are_precise,
    real_answers_match_their_documented_schemas,
    a_detected_outage_and_its_live_events_match_their_schemas,
    the_docs_page_is_swagger_ui_served_from_the_binary,
);

/// Every (method, path) that `downwatch_api::configure` registers (read each
/// `routes/*.rs` `config` and `openapi::config`). A route added there must
/// be documented and listed here: the live probes below find a listed route
/// that is not served, and the document must list exactly these.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/docs"),
    ("get", "/api/v1/services"),
    ("post", "/api/v1/services"),
    ("get", "/api/v1/services/{slug}"),
    ("patch", "/api/v1/services/{slug}"),
    ("post", "/api/v1/services/{slug}/reports"),
    ("get", "/api/v1/status"),
    ("get", "/api/v1/services/{slug}/series"),
    ("get", "/api/v1/services/{slug}/breakdown"),
    ("get", "/api/v1/services/{slug}/chart.svg"),
    ("get", "/api/v1/incidents"),
    ("get", "/api/v1/incidents/{id}"),
    ("get", "/api/v1/services/{slug}/incidents.atom"),
    ("get", "/api/v1/incidents.atom"),
    ("get", "/api/v1/stream"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks/{id}"),
    ("patch", "/api/v1/webhooks/{id}"),
    ("delete", "/api/v1/webhooks/{id}"),
];

/// Operations whose handlers take no input they could refuse, so they
/// document no client error (readyz and metrics document their 503/500).
const NO_CLIENT_ERRORS: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/docs"),
    ("get", "/api/v1/stream"),
    ("get", "/api/v1/incidents.atom"),
];

const ADMIN: &[(&str, &str)] = &[
    ("post", "/api/v1/services"),
    ("patch", "/api/v1/services/{slug}"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks/{id}"),
    ("patch", "/api/v1/webhooks/{id}"),
    ("delete", "/api/v1/webhooks/{id}"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    let r = app.get("/api/openapi.json").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(essence(&r), "application/json");
    r.json().await.unwrap()
}

fn essence(r: &reqwest::Response) -> String {
    media_essence(
        r.headers()
            .get("content-type")
            .map_or("", |v| v.to_str().unwrap()),
    )
}

fn media_essence(ct: &str) -> String {
    ct.split(';').next().unwrap().trim().to_ascii_lowercase()
}

/// Every documented (method, path).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// A JSON pointer (`#/components/...`) into the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("{reference} is not local"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} does not resolve"))
}

/// Follows `$ref` until a value that is not a reference.
fn deref<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = resolve(doc, r);
    }
    v
}

/// The documented response of an operation for a status.
fn documented_response<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let r = op["responses"].get(status.to_string()).unwrap_or_else(|| {
        panic!(
            "{method} {path} answered {status}, which it does not document: {}",
            op["responses"]
        )
    });
    deref(doc, r)
}

/// The documented schema for a media type of a response (matched by essence).
fn schema_for<'a>(response: &'a Value, ct: &str) -> Option<&'a Value> {
    response["content"]
        .as_object()?
        .iter()
        .find(|(k, _)| media_essence(k) == ct)
        .map(|(_, v)| &v["schema"])
}

fn is_json(ct: &str) -> bool {
    ct == "application/json" || ct.ends_with("+json")
}

/// Asserts a real answer is documented for its operation, with its media
/// type, and that a JSON body validates against the documented schema.
/// Returns the JSON body (Null for other media types, which are not read).
async fn conforms(doc: &Value, method: &str, path: &str, r: reqwest::Response) -> Value {
    let status = r.status().as_u16();
    let ct = essence(&r);
    let response = documented_response(doc, method, path, status);
    let content = response["content"].as_object();
    let Some(schema) = schema_for(response, &ct) else {
        panic!(
            "{method} {path} answered {status} as {ct:?}; documented: {:?}",
            content.map(|c| c.keys().collect::<Vec<_>>())
        );
    };
    if status == 429 || status == 503 {
        assert!(
            r.headers().contains_key("retry-after"),
            "{method} {path} {status} without Retry-After"
        );
    }
    if !is_json(&ct) {
        return Value::Null;
    }
    let body: Value = r.json().await.unwrap();
    let mut errors = Vec::new();
    validate(doc, schema, &body, "$", &mut errors);
    let shown: String = body.to_string().chars().take(1500).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {shown}\ndoes not match its documented schema \
         ({} errors):\n{}",
        errors.len(),
        errors[..errors.len().min(10)].join("\n")
    );
    body
}

fn json_type_is(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

/// A JSON Schema (2020-12) checker for the subset utoipa emits. Every
/// keyword is either checked or a known annotation, so a schema it cannot
/// judge fails loudly rather than passing. (`pattern` and `format` are
/// taken as annotations.)
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let obj = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errors.push(format!("{at}: no value is allowed here"));
            return;
        }
        Value::Object(o) => o,
        other => panic!("{at}: not a schema: {other}"),
    };
    for (keyword, s) in obj {
        match keyword.as_str() {
            "$ref" => validate(doc, resolve(doc, s.as_str().unwrap()), v, at, errors),
            "type" => {
                let types: Vec<&str> = match s {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                    other => panic!("{at}: type {other}"),
                };
                if !types.iter().any(|t| json_type_is(v, t)) {
                    errors.push(format!("{at}: {v} is not of type {types:?}"));
                }
            }
            "enum" => {
                if !s.as_array().unwrap().contains(v) {
                    errors.push(format!("{at}: {v} is not one of {s}"));
                }
            }
            "const" => {
                if s != v {
                    errors.push(format!("{at}: {v} is not {s}"));
                }
            }
            "required" => {
                if let Some(o) = v.as_object() {
                    for name in s.as_array().unwrap() {
                        if !o.contains_key(name.as_str().unwrap()) {
                            errors.push(format!("{at}: required member {name} is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(o) = v.as_object() {
                    for (name, ps) in s.as_object().unwrap() {
                        if let Some(pv) = o.get(name) {
                            validate(doc, ps, pv, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(o) = v.as_object() {
                    let known = obj.get("properties").and_then(Value::as_object);
                    for (name, pv) in o {
                        if known.is_some_and(|k| k.contains_key(name)) {
                            continue;
                        }
                        validate(doc, s, pv, &format!("{at}.{name} (undocumented)"), errors);
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, item) in a.iter().enumerate() {
                        validate(doc, s, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let Some(a) = v.as_array() {
                    let n = s.as_u64().unwrap() as usize;
                    let ok = if keyword == "minItems" {
                        a.len() >= n
                    } else {
                        a.len() <= n
                    };
                    if !ok {
                        errors.push(format!("{at}: {} items against {keyword} {n}", a.len()));
                    }
                }
            }
            "uniqueItems" => {
                if let (Some(a), Some(true)) = (v.as_array(), s.as_bool()) {
                    let distinct: BTreeSet<String> = a.iter().map(Value::to_string).collect();
                    if distinct.len() != a.len() {
                        errors.push(format!("{at}: items are not unique"));
                    }
                }
            }
            "minimum" | "maximum" => {
                if let Some(n) = v.as_f64() {
                    let bound = s.as_f64().unwrap();
                    let ok = if keyword == "minimum" {
                        n >= bound
                    } else {
                        n <= bound
                    };
                    if !ok {
                        errors.push(format!("{at}: {n} against {keyword} {bound}"));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let Some(text) = v.as_str() {
                    let n = text.chars().count() as u64;
                    let bound = s.as_u64().unwrap();
                    let ok = if keyword == "minLength" {
                        n >= bound
                    } else {
                        n <= bound
                    };
                    if !ok {
                        errors.push(format!("{at}: length {n} against {keyword} {bound}"));
                    }
                }
            }
            "oneOf" | "anyOf" | "allOf" => {
                let branches = s.as_array().unwrap();
                let passing = branches
                    .iter()
                    .filter(|b| {
                        let mut e = Vec::new();
                        validate(doc, b, v, at, &mut e);
                        e.is_empty()
                    })
                    .count();
                let ok = match keyword.as_str() {
                    "oneOf" => passing == 1,
                    "anyOf" => passing >= 1,
                    _ => passing == branches.len(),
                };
                if !ok {
                    errors.push(format!(
                        "{at}: {v} passes {passing} of {} {keyword} branches",
                        branches.len()
                    ));
                }
            }
            "description" | "example" | "examples" | "format" | "title" | "default" | "pattern"
            | "deprecated" | "readOnly" | "writeOnly" | "contentMediaType" => {}
            other => panic!("{at}: the checker does not know the keyword {other:?}"),
        }
    }
}

/// A concrete path for a template.
fn concrete(path: &str) -> String {
    path.replace("{slug}", "whatsapp").replace("{id}", "999999")
}

async fn the_document_lists_every_route_the_app_serves(b: Backing) {
    let app = spawn_app(&b).await;
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert_eq!(doc["info"]["title"], "Downwatch API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["info"]["description"].as_str().unwrap().len() > 50);

    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "not documented: {undocumented:?}");
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(phantom.is_empty(), "documented but not listed: {phantom:?}");
    let ids: BTreeSet<String> = operations(&doc)
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");

    // Live: each listed route is served, answers a documented status in a
    // documented shape, and every other method on its path is a 405.
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for path in paths {
        let url = app.url(&concrete(path));
        for method in METHODS {
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let r = app.client.request(m, &url).send().await.unwrap();
            if served.contains(&(method.to_owned(), path.to_owned())) {
                assert_ne!(r.status().as_u16(), 405, "{method} {path}");
                let body = conforms(&doc, method, path, r).await;
                assert_ne!(body["detail"], "no such resource", "{method} {path}");
            } else {
                assert_eq!(r.status().as_u16(), 405, "{method} {path} is served");
                assert_eq!(essence(&r), "application/problem+json");
            }
        }
    }
    app.stop().await;
}

async fn every_operation_documents_its_errors_and_admin_security(b: Backing) {
    let app = spawn_app(&b).await;
    let doc = document(&app).await;
    let scheme = &doc["components"]["securitySchemes"]["admin_token"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");

    for (method, path, op) in operations(&doc) {
        let key = (method.as_str(), path.as_str());
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{method} {path}");
        let mut client_errors = 0;
        for (status, r) in responses {
            let status: u16 = status.parse().unwrap_or_else(|_| panic!("{status}"));
            let r = deref(&doc, r);
            assert!(
                r["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}: no description"
            );
            if status < 400 {
                // 204 No Content is the one success without a body.
                assert_eq!(
                    r["content"].as_object().is_some_and(|c| !c.is_empty()),
                    status != 204,
                    "{method} {path} {status}: content"
                );
                continue;
            }
            if status < 500 {
                client_errors += 1;
            }
            let schema = schema_for(r, "application/problem+json").unwrap_or_else(|| {
                panic!("{method} {path} {status} is not application/problem+json: {r}")
            });
            let schema = deref(&doc, schema);
            let required: BTreeSet<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            for member in ["type", "title", "status", "detail"] {
                assert!(
                    required.contains(member),
                    "{method} {path} {status}: {member}"
                );
            }
            if status == 429 || status == 503 {
                assert!(
                    r["headers"].get("Retry-After").is_some(),
                    "{method} {path} {status}: no Retry-After"
                );
            }
        }
        if NO_CLIENT_ERRORS.contains(&key) {
            assert_eq!(client_errors, 0, "{method} {path} cannot answer 4xx");
        } else {
            assert!(client_errors > 0, "{method} {path}: no 4xx problem");
        }
        if method == "post" || method == "patch" {
            for status in ["400", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
        }
        let security = op.get("security");
        if ADMIN.contains(&key) {
            assert_eq!(
                security,
                Some(&json!([{"admin_token": []}])),
                "{method} {path}"
            );
            for status in ["401", "403"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
            let unauthorized = deref(&doc, &responses["401"]);
            assert!(unauthorized["headers"].get("WWW-Authenticate").is_some());
        } else {
            assert!(
                security.is_none_or(|s| s.as_array().is_some_and(Vec::is_empty)),
                "{method} {path} is not admin: {security:?}"
            );
            assert!(!responses.contains_key("401"), "{method} {path}");
        }
    }
    // The report submission, the one anonymous write, documents all of SPEC's cases.
    let submit = &doc["paths"]["/api/v1/services/{slug}/reports"]["post"]["responses"];
    for status in [
        "201", "400", "404", "413", "415", "422", "429", "503", "500",
    ] {
        assert!(submit.get(status).is_some(), "report {status}");
    }
    let create = &doc["paths"]["/api/v1/services"]["post"]["responses"];
    assert!(create.get("409").is_some());
    assert!(create["201"]["headers"].get("Location").is_some());
    app.stop().await;
}

/// The schema of a parameter, through `$ref`s and a nullable `oneOf`.
fn param_schema<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
    let p = params
        .iter()
        .map(|p| deref(doc, p))
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    let mut s = deref(doc, &p["schema"]);
    if let Some(branches) = s.get("oneOf").and_then(Value::as_array) {
        s = branches
            .iter()
            .map(|b| deref(doc, b))
            .find(|b| b["type"] != "null")
            .unwrap();
    }
    s
}

fn members(schema: &Value, key: &str) -> BTreeSet<String> {
    match &schema[key] {
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        Value::Object(o) => o.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn body_schema<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let body = &doc["paths"][path][method]["requestBody"];
    assert_eq!(body["required"], true, "{method} {path}");
    deref(doc, &body["content"]["application/json"]["schema"])
}

async fn refs_resolve_and_parameters_and_bodies_are_precise(b: Backing) {
    let app = spawn_app(&b).await;
    let doc = document(&app).await;

    // Every $ref resolves.
    fn walk(doc: &Value, v: &Value, seen: &mut usize) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    assert!(r.starts_with("#/components/"), "{r}");
                    resolve(doc, r);
                    *seen += 1;
                }
                o.values().for_each(|x| walk(doc, x, seen));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(doc, x, seen)),
            _ => {}
        }
    }
    let mut refs = 0;
    walk(&doc, &doc, &mut refs);
    assert!(refs > 50, "{refs} refs");
    for name in [
        "Service",
        "ServiceStatus",
        "SeriesResponse",
        "Problem",
        "FieldError",
        "Incident",
        "IncidentList",
        "IncidentDetail",
        "Breakdown",
        "StatusResponse",
        "ReportRequest",
        "ReportResponse",
        "ServiceCreate",
        "ServicePatch",
        "HealthResponse",
        "StreamIncidentEvent",
    ] {
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "no schema {name}"
        );
    }

    // Path parameters: every template variable, required.
    for (method, path, op) in operations(&doc) {
        for var in path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap())
        {
            let found = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .map(|p| deref(&doc, p))
                    .any(|p| p["name"] == var && p["in"] == "path" && p["required"] == true)
            });
            assert!(found, "{method} {path}: path parameter {var}");
        }
    }

    // Query parameters with their types, enums and bounds.
    let steps = json!([60, 300, 900, 3600, 86400]);
    for path in [
        "/api/v1/services/{slug}/series",
        "/api/v1/services/{slug}/chart.svg",
    ] {
        let step = param_schema(&doc, "get", path, "step");
        assert_eq!(step["enum"], steps, "{path}: {step}");
        assert!(
            step["type"] == "integer" || step["type"][0] == "integer",
            "{step}"
        );
    }
    let status = param_schema(&doc, "get", "/api/v1/incidents", "status");
    assert_eq!(status["enum"], json!(["open", "resolved"]));
    let format = param_schema(&doc, "get", "/api/v1/incidents", "format");
    assert_eq!(format["enum"], json!(["csv", "json"]));
    let limit = param_schema(&doc, "get", "/api/v1/incidents", "limit");
    assert_eq!(
        (limit["minimum"].as_f64(), limit["maximum"].as_f64()),
        (Some(1.0), Some(1000.0))
    );
    for name in ["width", "height"] {
        let s = param_schema(&doc, "get", "/api/v1/services/{slug}/chart.svg", name);
        assert_eq!(
            (s["minimum"].as_f64(), s["maximum"].as_f64()),
            (Some(200.0), Some(4000.0))
        );
    }
    let q = param_schema(&doc, "get", "/api/v1/services", "q");
    assert_eq!(q["maxLength"], 100);
    for (path, names) in [
        ("/api/v1/services", &["q", "category"][..]),
        ("/api/v1/status", &["country"][..]),
        (
            "/api/v1/services/{slug}/series",
            &["from", "to", "step", "country"][..],
        ),
        (
            "/api/v1/services/{slug}/breakdown",
            &["from", "to", "country"][..],
        ),
        (
            "/api/v1/services/{slug}/chart.svg",
            &["from", "to", "step", "country", "width", "height"][..],
        ),
        (
            "/api/v1/incidents",
            &[
                "service", "country", "from", "to", "status", "limit", "cursor", "format",
            ][..],
        ),
    ] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let query: BTreeSet<String> = params
            .iter()
            .map(|p| deref(&doc, p))
            .filter(|p| p["in"] == "query")
            .map(|p| {
                assert_ne!(p["required"], true, "{path} {p}");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(query, set(names), "{path}");
    }

    // Request bodies: required members, and unknown members refused.
    let report = body_schema(&doc, "post", "/api/v1/services/{slug}/reports");
    assert_eq!(members(report, "required"), set(&["problem"]));
    assert_eq!(
        members(report, "properties"),
        set(&["problem", "country", "city", "client_id"])
    );
    assert_eq!(report["additionalProperties"], false);
    let create = body_schema(&doc, "post", "/api/v1/services");
    assert_eq!(members(create, "required"), set(&["slug", "name"]));
    assert_eq!(
        members(create, "properties"),
        set(&["slug", "name", "category", "url", "problems"])
    );
    assert_eq!(create["additionalProperties"], false);
    let webhook = body_schema(&doc, "post", "/api/v1/webhooks");
    assert_eq!(members(webhook, "required"), set(&["url"]));
    assert_eq!(
        members(webhook, "properties"),
        set(&[
            "url",
            "secret",
            "services",
            "scopes",
            "events",
            "description"
        ])
    );
    assert_eq!(webhook["additionalProperties"], false);
    let patch = body_schema(&doc, "patch", "/api/v1/services/{slug}");
    assert!(members(patch, "required").is_empty());
    assert_eq!(
        members(patch, "properties"),
        set(&["name", "category", "url", "problems"])
    );
    assert_eq!(patch["additionalProperties"], false);

    // Media types beyond JSON.
    let ok = |method: &str, path: &str| -> BTreeSet<String> {
        members(documented_response(&doc, method, path, 200), "content")
            .iter()
            .map(|k| media_essence(k))
            .collect()
    };
    assert_eq!(
        ok("get", "/api/v1/incidents"),
        set(&["application/json", "text/csv"])
    );
    assert_eq!(
        ok("get", "/api/v1/services/{slug}/incidents.atom"),
        set(&["application/atom+xml"])
    );
    assert_eq!(
        ok("get", "/api/v1/incidents.atom"),
        set(&["application/atom+xml"])
    );
    assert_eq!(
        ok("get", "/api/v1/services/{slug}/chart.svg"),
        set(&["image/svg+xml"])
    );
    assert_eq!(ok("get", "/api/v1/stream"), set(&["text/event-stream"]));
    assert_eq!(
        ok("get", "/metrics"),
        set(&["application/openmetrics-text"])
    );
    assert_eq!(ok("get", "/api/docs"), set(&["text/html"]));
    assert_eq!(ok("get", "/api/openapi.json"), set(&["application/json"]));
    app.stop().await;
}

/// An open global incident and a resolved French one for `slug`; returns
/// the open one's id.
async fn plant_incidents(b: &Backing, app: &TestApp, slug: &str) -> i64 {
    let id = app.service_id(slug).await;
    // Whole seconds, as the detector writes them.
    let now = chrono::Utc::now().timestamp();
    let t = |minutes_ago: i64| {
        let secs = now - minutes_ago * 60;
        match b.mode {
            Mode::Embedded => (secs * 1_000_000).to_string(),
            Mode::Production => format!("to_timestamp({secs})"),
        }
    };
    b.execute(&format!(
        "INSERT INTO incidents (service_id, scope, status, level_max, started_at, detected_at,
                                peak_at, peak_reports_per_min, baseline_per_min_at_peak, ended_at, total_reports)
         VALUES ({id}, 'FR', 'resolved', 'outage', {}, {}, {}, 40, 1.25, {}, 300)",
        t(180),
        t(175),
        t(170),
        t(120)
    ))
    .await;
    b.execute(&format!(
        "INSERT INTO incidents (service_id, scope, status, level_max, started_at, detected_at,
                                peak_at, peak_reports_per_min, baseline_per_min_at_peak, total_reports)
         VALUES ({id}, 'global', 'open', 'outage', {}, {}, {}, 120, 2, 900)",
        t(20),
        t(15),
        t(10)
    ))
    .await;
    b.scalar_i64(&format!(
        "SELECT id FROM incidents WHERE service_id = {id} AND status = 'open'"
    ))
    .await
}

async fn real_answers_match_their_documented_schemas(b: Backing) {
    let app = spawn_app(&b).await;
    let doc = document(&app).await;
    let get = |path: &'static str, url: String| {
        let app = &app;
        let doc = &doc;
        async move { conforms(doc, "get", path, app.get(&url).await).await }
    };

    let health = get("/healthz", "/healthz".into()).await;
    assert_eq!(health, json!({"status": "ok"}));
    let ready = get("/readyz", "/readyz".into()).await;
    assert_eq!(ready["status"], "ready");
    get("/metrics", "/metrics".into()).await;

    // Services: the catalogue, one, created and patched by an admin.
    let list = get("/api/v1/services", "/api/v1/services".into()).await;
    assert!(list["services"].as_array().unwrap().len() >= 50);
    let one = get(
        "/api/v1/services/{slug}",
        "/api/v1/services/whatsapp".into(),
    )
    .await;
    assert_eq!(one["slug"], "whatsapp");
    let admin = |m: Method, path: &str| {
        app.client
            .request(m, app.url(path))
            .bearer_auth(ADMIN_TOKEN)
    };
    let r = admin(Method::POST, "/api/v1/services")
        .json(&json!({"slug": "acme-cloud", "name": "ACME Cloud", "url": null}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("location"));
    let created = conforms(&doc, "post", "/api/v1/services", r).await;
    assert_eq!(created["url"], Value::Null);
    let r = admin(Method::POST, "/api/v1/services")
        .json(&json!({"slug": "acme-cloud", "name": "Again"}))
        .send()
        .await
        .unwrap();
    let conflict = conforms(&doc, "post", "/api/v1/services", r).await;
    assert_eq!(conflict["status"], 409);
    let r = admin(Method::PATCH, "/api/v1/services/acme-cloud")
        .json(&json!({"category": "cloud", "problems": ["console", "api"]}))
        .send()
        .await
        .unwrap();
    let patched = conforms(&doc, "patch", "/api/v1/services/{slug}", r).await;
    assert_eq!(patched["category"], "cloud");
    let r = admin(Method::PATCH, "/api/v1/services/acme-cloud")
        .json(&json!({"slug": "other", "nmae": "typo"}))
        .send()
        .await
        .unwrap();
    let invalid = conforms(&doc, "patch", "/api/v1/services/{slug}", r).await;
    assert_eq!(invalid["status"], 422);
    assert_eq!(invalid["errors"].as_array().unwrap().len(), 2);
    for (token, status) in [(None, 401), (Some("wrong"), 403)] {
        let mut req = app.client.post(app.url("/api/v1/services"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.json(&json!({})).send().await.unwrap();
        let p = conforms(&doc, "post", "/api/v1/services", r).await;
        assert_eq!(p["status"], status);
    }

    // Reports: stored with and without a place, and refused.
    let submit = "/api/v1/services/{slug}/reports";
    let report = |body: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/services/whatsapp/reports"))
                .header("X-Forwarded-For", new_client_ip())
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = report(json!({"problem": "login", "country": "FR", "city": "Paris"})).await;
    let stored = conforms(&doc, "post", submit, r).await;
    assert_eq!(
        (stored["country"].as_str(), stored["counted"].as_bool()),
        (Some("FR"), Some(true))
    );
    let r = report(json!({"problem": "app", "country": "DE", "client_id": null})).await;
    let stored = conforms(&doc, "post", submit, r).await;
    assert!(stored.get("city").is_none(), "{stored}");
    let r = report(json!({"problem": "app"})).await;
    let stored = conforms(&doc, "post", submit, r).await;
    assert!(stored.get("country").is_none(), "{stored}");
    let r = report(json!({"problem": "teleportation", "contry": "FR"})).await;
    assert_eq!(conforms(&doc, "post", submit, r).await["status"], 422);
    let r = app
        .client
        .post(app.url("/api/v1/services/whatsapp/reports"))
        .header("content-type", "application/json")
        .body("{\"problem\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(conforms(&doc, "post", submit, r).await["status"], 400);
    let r = app
        .client
        .post(app.url("/api/v1/services/whatsapp/reports"))
        .body("problem=login")
        .send()
        .await
        .unwrap();
    assert_eq!(conforms(&doc, "post", submit, r).await["status"], 415);
    let r = app
        .client
        .post(app.url("/api/v1/services/whatsapp/reports"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"problem\": \"login\", \"city\": \"{}\"}}",
            "x".repeat(5000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(conforms(&doc, "post", submit, r).await["status"], 413);
    let r = app
        .client
        .post(app.url("/api/v1/services/nope/reports"))
        .json(&json!({"problem": "login"}))
        .send()
        .await
        .unwrap();
    assert_eq!(conforms(&doc, "post", submit, r).await["status"], 404);

    // Series and breakdown.
    let series_path = "/api/v1/services/{slug}/series";
    let series = get(series_path, "/api/v1/services/whatsapp/series".into()).await;
    assert_eq!(series["step"], 900);
    assert!(series["points"].as_array().unwrap().len() > 90);
    let fr = get(
        series_path,
        "/api/v1/services/whatsapp/series?step=60&country=FR".into(),
    )
    .await;
    assert_eq!(fr["country"], "FR");
    let bad = get(
        series_path,
        "/api/v1/services/whatsapp/series?step=120".into(),
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "step");
    let breakdown = get(
        "/api/v1/services/{slug}/breakdown",
        "/api/v1/services/whatsapp/breakdown".into(),
    )
    .await;
    assert_eq!(breakdown["total"], 3, "{breakdown}");
    let cities: Vec<&Value> = breakdown["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["city"])
        .collect();
    assert!(cities.contains(&&Value::Null) && cities.contains(&&json!("Paris")));

    // Incidents, status and the service's level with an incident open.
    let open = plant_incidents(&b, &app, "discord").await;
    let status = get("/api/v1/status", "/api/v1/status".into()).await;
    assert_eq!(status["services"][0]["incident_id"], open, "{status}");
    assert_eq!(status["country"], Value::Null);
    get("/api/v1/status", "/api/v1/status?country=FR".into()).await;
    let discord = get("/api/v1/services/{slug}", "/api/v1/services/discord".into()).await;
    assert_eq!(discord["status"]["incident_id"], open);
    let list = get("/api/v1/incidents", "/api/v1/incidents?limit=1".into()).await;
    assert_eq!(list["incidents"][0]["ended_at"], Value::Null);
    assert!(list["next_cursor"].is_string(), "{list}");
    let cursor = list["next_cursor"].as_str().unwrap().to_owned();
    let rest = get(
        "/api/v1/incidents",
        format!("/api/v1/incidents?cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["incidents"][0]["status"], "resolved");
    assert_eq!(rest["next_cursor"], Value::Null);
    let csv = app.get("/api/v1/incidents?format=csv").await;
    conforms(&doc, "get", "/api/v1/incidents", csv).await;
    let detail = get(
        "/api/v1/incidents/{id}",
        format!("/api/v1/incidents/{open}"),
    )
    .await;
    assert_eq!(detail["series"]["step"], 60);
    assert_eq!(detail["incident"]["id"], open);
    let bad = get("/api/v1/incidents/{id}", "/api/v1/incidents/zero".into()).await;
    assert_eq!(bad["status"], 400);
    let atom = app.get("/api/v1/services/discord/incidents.atom").await;
    conforms(&doc, "get", "/api/v1/services/{slug}/incidents.atom", atom).await;
    let atom = app.get("/api/v1/incidents.atom").await;
    conforms(&doc, "get", "/api/v1/incidents.atom", atom).await;

    // Webhooks: created (a public address, so no setting is needed), listed,
    // read, deleted; a private address and an unknown service refused.
    let r = admin(Method::POST, "/api/v1/webhooks")
        .json(
            &json!({"url": "https://93.184.215.14/hooks/downwatch", "services": ["discord"],
                      "scopes": ["global", "FR"], "events": ["incident.opened"],
                      "description": "ops"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/api/v1/webhooks/1"
    );
    let hook = conforms(&doc, "post", "/api/v1/webhooks", r).await;
    assert_eq!(hook["secret"].as_str().unwrap().len(), 64);
    let r = admin(Method::POST, "/api/v1/webhooks")
        .json(&json!({"url": "http://127.0.0.1:9/x", "services": ["no-such-service"]}))
        .send()
        .await
        .unwrap();
    let refused = conforms(&doc, "post", "/api/v1/webhooks", r).await;
    let fields: Vec<&str> = refused["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["url", "services"], "{refused}");
    let r = admin(Method::GET, "/api/v1/webhooks").send().await.unwrap();
    let hooks = conforms(&doc, "get", "/api/v1/webhooks", r).await;
    assert_eq!(hooks["webhooks"][0]["id"], hook["id"]);
    assert!(hooks["webhooks"][0].get("secret").is_none());
    let r = admin(Method::GET, "/api/v1/webhooks/1")
        .send()
        .await
        .unwrap();
    let one = conforms(&doc, "get", "/api/v1/webhooks/{id}", r).await;
    assert_eq!(one["recent_deliveries"], json!([]));
    assert_eq!(one["state"], "active");
    let r = admin(Method::PATCH, "/api/v1/webhooks/1")
        .json(&json!({"state": "disabled"}))
        .send()
        .await
        .unwrap();
    let disabled = conforms(&doc, "patch", "/api/v1/webhooks/{id}", r).await;
    assert_eq!(disabled["state"], "disabled");
    let r = admin(Method::PATCH, "/api/v1/webhooks/1")
        .json(&json!({"state": "sleeping"}))
        .send()
        .await
        .unwrap();
    conforms(&doc, "patch", "/api/v1/webhooks/{id}", r).await;
    let r = admin(Method::DELETE, "/api/v1/webhooks/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    documented_response(&doc, "delete", "/api/v1/webhooks/{id}", 204);
    let r = admin(Method::DELETE, "/api/v1/webhooks/1")
        .send()
        .await
        .unwrap();
    conforms(&doc, "delete", "/api/v1/webhooks/{id}", r).await;
    let r = admin(Method::GET, "/api/v1/webhooks/x")
        .send()
        .await
        .unwrap();
    let bad = conforms(&doc, "get", "/api/v1/webhooks/{id}", r).await;
    assert_eq!(bad["errors"][0]["field"], "id");
    let chart = app
        .get("/api/v1/services/discord/chart.svg?width=800")
        .await;
    conforms(&doc, "get", "/api/v1/services/{slug}/chart.svg", chart).await;
    let bad = get(
        "/api/v1/services/{slug}/chart.svg",
        "/api/v1/services/discord/chart.svg?width=100".into(),
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "width");
    app.stop().await;
}

/// A real outage, found by the detector: the stream's events, the incident
/// and the series with a learnt baseline, against their documented schemas.
async fn a_detected_outage_and_its_live_events_match_their_schemas(b: Backing) {
    let app = crate::detector::app(&b).await;
    let doc = document(&app).await;
    let mut detector = live(&app, "openapi");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let resp = app.get("/api/v1/stream").await;
    conforms(
        &doc,
        "get",
        "/api/v1/stream",
        app.get("/api/v1/stream").await,
    )
    .await;
    let mut body = resp.bytes_stream();
    let hello = body.next().await.unwrap().unwrap();
    assert!(hello.starts_with(b"retry: "));
    let (_, last) = burst(&app, "chatapp", 40, Some("FR")).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !["status", "incident", "counts"]
        .iter()
        .all(|e| text.contains(&format!("event: {e}\n")))
    {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    for frame in text.split("\n\n").filter(|f| f.starts_with("event: ")) {
        let mut lines = frame.lines();
        let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        let name = match event {
            "status" => "StreamStatusEvent",
            "incident" => "StreamIncidentEvent",
            "counts" => "StreamCountsEvent",
            other => panic!("undocumented event {other}"),
        };
        let mut errors = Vec::new();
        validate(
            &doc,
            &doc["components"]["schemas"][name],
            &data,
            "$",
            &mut errors,
        );
        assert!(errors.is_empty(), "{frame}\n{}", errors.join("\n"));
    }
    drop(body);

    let list = conforms(
        &doc,
        "get",
        "/api/v1/incidents",
        app.get("/api/v1/incidents").await,
    )
    .await;
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "global and FR: {list}");
    for i in incidents {
        let path = format!("/api/v1/incidents/{}", i["id"]);
        let detail = conforms(&doc, "get", "/api/v1/incidents/{id}", app.get(&path).await).await;
        assert!(
            detail["series"]["points"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["baseline"].is_number()),
            "a learnt baseline: {detail}"
        );
        assert_eq!(detail["incident"]["top_locations"][0]["country"], "FR");
    }
    let status = conforms(
        &doc,
        "get",
        "/api/v1/status",
        app.get("/api/v1/status").await,
    )
    .await;
    assert!(
        status["services"][0]["baseline_15m"].is_number(),
        "{status}"
    );
    for url in [
        "/api/v1/services/chatapp/series?step=60&country=FR",
        "/api/v1/services/chatapp/series",
    ] {
        let series = conforms(
            &doc,
            "get",
            "/api/v1/services/{slug}/series",
            app.get(url).await,
        )
        .await;
        assert!(
            series["points"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["threshold"].is_number())
        );
    }
    let breakdown = app
        .get("/api/v1/services/chatapp/breakdown?country=FR")
        .await;
    conforms(&doc, "get", "/api/v1/services/{slug}/breakdown", breakdown).await;
    app.stop().await;
}

async fn the_docs_page_is_swagger_ui_served_from_the_binary(b: Backing) {
    let app = spawn_app(&b).await;
    let r = app.get("/api/docs").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(essence(&r), "text/html");
    let html = r.text().await.unwrap();
    assert!(html.contains("href=\"/api/openapi.json\""), "{html}");
    assert!(html.contains("id=\"swagger-ui\""), "{html}");
    // Every asset it names is served from the binary.
    let assets: Vec<&str> = html
        .split(['"'])
        .filter(|s| s.starts_with("/api/docs/"))
        .collect();
    assert!(assets.len() >= 5, "{assets:?}");
    for asset in assets {
        let r = app.get(asset).await;
        assert_eq!(r.status().as_u16(), 200, "{asset}");
        let ct = essence(&r);
        let expected = match asset.rsplit('.').next().unwrap() {
            "css" => "text/css",
            "js" => "text/javascript",
            "png" => "image/png",
            other => panic!("{asset}: {other}"),
        };
        assert!(
            ct == expected || (expected == "text/javascript" && ct == "application/javascript"),
            "{asset}: {ct}"
        );
        let body = r.bytes().await.unwrap();
        assert!(!body.is_empty(), "{asset}");
        if asset.ends_with("swagger-initializer.js") {
            let js = String::from_utf8(body.to_vec()).unwrap();
            assert!(js.contains("\"/api/openapi.json\""), "{js}");
        }
    }
    // Swagger UI's own index, and problem+json for what is not there.
    let r = app.get("/api/docs/").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(essence(&r), "text/html");
    for missing in ["/api/docs/nope.js", "/api/nope"] {
        let r = app.get(missing).await;
        assert_eq!(r.status().as_u16(), 404, "{missing}");
        assert_eq!(essence(&r), "application/problem+json", "{missing}");
    }
    // Neither needs a token; no admin header was sent above.
    let r = app.get("/api/openapi.json").await;
    assert_eq!(r.status().as_u16(), 200);
    app.stop().await;
}
