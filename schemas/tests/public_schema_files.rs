//! The committed JSON Schema files under `schemas/public/` are generated from the public types.
//! This test fails when a file and its type disagree. After a deliberate change to a public type,
//! regenerate them with `LINKAGE_BLESS=1 cargo test -p linkage-schemas --test public_schema_files`
//! (and bump the event's version if the change is not backward compatible).

use std::path::PathBuf;

use schemas::public::{public_schemas, retired_schemas, schema_file, CONTRACT_VERSION};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("public")
        .join(CONTRACT_VERSION)
}

fn render(schema: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serialises");
    text.push('\n');
    text
}

#[test]
fn committed_schema_files_match_the_types() {
    let bless = std::env::var_os("LINKAGE_BLESS").is_some();
    let mut drifted = Vec::new();
    let mut expected_files = Vec::new();
    // Retired shapes keep their files: the stream still holds messages of them.
    for (event_type, version, schema) in public_schemas().into_iter().chain(retired_schemas()) {
        let file = schema_file(event_type, version);
        let path = dir().join(&file);
        expected_files.push(file);
        let want = render(&schema);
        if bless {
            std::fs::create_dir_all(dir()).expect("create the schema dir");
            std::fs::write(&path, &want).expect("write a schema file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => drifted.push(format!("{} differs from its type", path.display())),
            Err(e) => drifted.push(format!("{} is missing ({e})", path.display())),
        }
    }
    // A file for a type that no longer exists is drift too.
    for entry in std::fs::read_dir(dir()).expect("the schema dir exists") {
        let name = entry.expect("a dir entry").file_name();
        let name = name.to_string_lossy().into_owned();
        if !expected_files.contains(&name) {
            drifted.push(format!("{name} has no public type"));
        }
    }
    assert!(
        drifted.is_empty(),
        "public schema files drifted from the types; if the change is deliberate, run \
         LINKAGE_BLESS=1 cargo test -p linkage-schemas --test public_schema_files:\n{}",
        drifted.join("\n")
    );
}
