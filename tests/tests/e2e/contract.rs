//! The contract in the repository: the OpenAPI document the server serves equals the committed
//! `schemas/openapi.json`, and every route the contract names is in it.
//!
//! After a deliberate change to the API (reviewed against `schemas/CONTRACT.md`), regenerate the
//! file with `LINKAGE_BLESS=1 cargo test -p linkage-tests --test e2e contract::` and review the diff.

use std::path::PathBuf;

use linkage_tests::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let (s, served) = app.get("/v1/openapi.json", "").await;
    assert_eq!(s, StatusCode::OK);
    let path = committed_path();
    if std::env::var_os("LINKAGE_BLESS").is_some() {
        let mut text = serde_json::to_string_pretty(&served).expect("json");
        text.push('\n');
        std::fs::write(&path, text).expect("write schemas/openapi.json");
        return;
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("schemas/openapi.json is committed"),
    )
    .expect("schemas/openapi.json is JSON");
    if committed != served {
        let changed: Vec<String> = served["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| committed["paths"].get(k.as_str()) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        panic!(
            "the served OpenAPI document drifted from schemas/openapi.json (paths that differ: \
             {changed:?}; components may differ too). If the change is deliberate and \
             schemas/CONTRACT.md agrees, run LINKAGE_BLESS=1 cargo test -p linkage-tests --test \
             e2e contract:: and review the diff."
        );
    }
}

/// Every route in the contract's tables is in the committed document, with its method.
#[test]
fn every_route_of_the_contract_is_in_the_openapi_document() {
    let contract = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/CONTRACT.md"),
    )
    .expect("schemas/CONTRACT.md");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(committed_path()).expect("schemas/openapi.json"),
    )
    .expect("json");
    let mut missing = Vec::new();
    let mut seen = 0;
    for line in contract.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        for route in cell.split('`').skip(1).step_by(2) {
            let Some((method, path)) = route.split_once(' ') else {
                continue;
            };
            let path = path.split('?').next().unwrap_or(path);
            seen += 1;
            if doc["paths"][path][method.to_lowercase()].is_null() {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        seen > 25,
        "the contract's route tables were read ({seen} routes)"
    );
    assert!(
        missing.is_empty(),
        "routes of CONTRACT.md missing from the OpenAPI document: {missing:?}"
    );
}

/// The text rules the document states (patterns, lengths) say exactly what the parsers accept:
/// the same verdict for every sample, control characters, Unicode spaces and trimming included.
#[test]
fn text_schemas_agree_with_the_parsers() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(committed_path()).expect("schemas/openapi.json"),
    )
    .expect("json");
    let validator = |name: &str| {
        jsonschema::validator_for(&doc["components"]["schemas"][name]).expect("a valid schema")
    };
    let samples = [
        "Robin",
        " Robin ",
        "a",
        " ",
        "",
        "\t",
        "a\nb",
        "a\tb",
        "a\u{0}b",
        "a\u{7}",
        "\u{1b}[31m",
        "\u{7f}",
        "a\u{85}b",
        "\u{a0}",
        "\u{a0}x\u{3000}",
        "\u{2028}",
        "x\u{2029}",
        "\u{feff}",
        "Ünïcödé naïve",
        "名前",
        "😀",
        "\u{301}",
        "\r\n",
        "a\rb",
        "cm-ada",
        "ZZ0001",
    ];
    let long = "x".repeat(4000);
    let longer = "x".repeat(4001);
    type Check = (&'static str, jsonschema::Validator, fn(&str) -> bool);
    let checks: [Check; 3] = [
        ("Text", validator("Text"), |s| {
            schemas::Text::parse(s).is_ok()
        }),
        ("PersonName", validator("PersonName"), |s| {
            schemas::PersonName::parse(s).is_ok()
        }),
        ("MedicaidId", validator("MedicaidId"), |s| {
            schemas::MedicaidId::parse(s).is_ok()
        }),
    ];
    for (name, schema, parse) in &checks {
        for s in samples
            .iter()
            .copied()
            .chain([long.as_str(), longer.as_str()])
        {
            assert_eq!(
                schema.is_valid(&serde_json::Value::String(s.to_owned())),
                parse(s),
                "{name}: the document and the parser disagree on {s:?}"
            );
        }
    }
}
