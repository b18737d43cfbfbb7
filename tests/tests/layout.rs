//! The one layout rule: no layer crate depends on another layer crate, nor on libp2p or axum.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

const LAYERS: [&str; 5] = [
    "lamina-consensus",
    "lamina-execution",
    "lamina-da",
    "lamina-settlement",
    // A layer written outside Lamina's own crates follows the same rule.
    "lamina-example-depth-settlement",
];
const FORBIDDEN: [&str; 2] = ["libp2p", "axum"];

/// Every package reachable from `root` through normal (non-dev, non-build) dependencies.
fn normal_closure(metadata: &Value, root_id: &str) -> Vec<String> {
    let nodes = metadata["resolve"]["nodes"].as_array().unwrap();
    let mut seen = vec![root_id.to_string()];
    let mut stack = vec![root_id.to_string()];
    while let Some(id) = stack.pop() {
        let node = nodes.iter().find(|n| n["id"] == id.as_str()).unwrap();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap().to_string();
            if normal && !seen.contains(&dep_id) {
                seen.push(dep_id.clone());
                stack.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn layer_crates_depend_on_no_other_layer_nor_on_libp2p_or_axum() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let name_of = |id: &str| -> String {
        packages.iter().find(|p| p["id"] == id).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut violations = Vec::new();
    for layer in LAYERS {
        let package = packages.iter().find(|p| p["name"] == layer).expect(layer);
        for dep_id in normal_closure(&metadata, package["id"].as_str().unwrap())
            .iter()
            .skip(1)
        {
            let name = name_of(dep_id);
            if LAYERS.contains(&name.as_str()) || FORBIDDEN.iter().any(|f| name.starts_with(f)) {
                violations.push(format!("{layer} -> {name}"));
            }
        }
    }
    assert!(violations.is_empty(), "layout rule broken: {violations:?}");
}
