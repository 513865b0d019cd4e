//! The generated CRDs, without a server: the committed YAML equals what the types generate, the
//! names, scope, subresources and printer columns are wgsub's, and every schema is structural
//! by the apiextensions.k8s.io/v1 rules (a fast check with a readable message; the real server's
//! verdict on the same files, and on defaults, examples, bad resources and rule costs, is in
//! `admission.rs`).

use std::path::PathBuf;

use serde_json::{Value, json};
use wgsub_crds::resources::crd_documents;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed(file: &str) -> Value {
    let text =
        std::fs::read_to_string(crate_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml::from_str(&text).unwrap()
}

fn schema_of(plural: &str) -> Value {
    let crd = committed(&format!("{plural}.yaml"));
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    versions[0]["schema"]["openAPIV3Schema"].clone()
}

const PLURALS: [&str; 3] = ["wgservers", "vpnsubscriptions", "wgpeers"];

#[test]
fn committed_crd_yaml_matches_the_types() {
    let generated = crd_documents().unwrap();
    assert_eq!(generated.len(), 3);
    for (file, yaml) in generated {
        let on_disk = std::fs::read_to_string(crate_dir().join(&file)).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "crds/{file} differs from the types; regenerate with `cargo run -p wgsub-crds --bin crdgen -- --write crds`"
        );
    }
}

#[test]
fn crds_have_names_scope_status_and_printer_columns() {
    for (plural, short, kind) in [
        ("wgservers", "wgs", "WgServer"),
        ("vpnsubscriptions", "vsub", "VpnSubscription"),
        ("wgpeers", "wgp", "WgPeer"),
    ] {
        let crd = committed(&format!("{plural}.yaml"));
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(crd["metadata"]["name"], format!("{plural}.wgsub.io"));
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "wgsub.io");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], kind);
        assert_eq!(spec["names"]["shortNames"], json!([short]));
        assert_eq!(spec["names"]["categories"], json!(["wgsub"]));
        let version = &spec["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["served"], true);
        assert_eq!(version["storage"], true);
        assert_eq!(
            version["subresources"]["status"],
            json!({}),
            "{plural} has a status subresource"
        );
        assert!(
            version["additionalPrinterColumns"]
                .as_array()
                .is_some_and(|c| c.len() >= 4),
            "{plural} printer columns"
        );
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert_eq!(status["observedGeneration"]["type"], "integer", "{plural}");
        let conditions = &status["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{plural}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            json!(["type"]),
            "{plural}"
        );
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            assert!(
                conditions["items"]["properties"][field].is_object(),
                "{plural} condition.{field}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structural schema rules (k8s.io/apiextensions-apiserver/pkg/apiserver/schema: structural).

const ALLOWED_FORMATS: [&str; 20] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
];
const MORE_FORMATS: [&str; 7] = [
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
];
const NUMBER_FORMATS: [&str; 2] = ["float", "double"];
const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];
const FORBIDDEN_ANYWHERE: [&str; 8] = [
    "$ref",
    "definitions",
    "$schema",
    "id",
    "patternProperties",
    "dependencies",
    "additionalItems",
    "uniqueItems",
];

fn structural_violations(node: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        out.push(format!("{path}: schema node is not an object"));
        return;
    };
    for key in FORBIDDEN_ANYWHERE {
        if map.contains_key(key) {
            out.push(format!(
                "{path}: `{key}` is not allowed in a structural schema"
            ));
        }
    }
    if in_junctor {
        for key in [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-int-or-string",
            "x-kubernetes-embedded-resource",
        ] {
            if map.contains_key(key) {
                out.push(format!(
                    "{path}: `{key}` is not allowed inside allOf/anyOf/oneOf/not"
                ));
            }
        }
    } else {
        let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        match map.get("type").and_then(Value::as_str) {
            Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
            Some(other) => out.push(format!("{path}: unknown type {other:?}")),
            None if int_or_string || preserve => {}
            None => out.push(format!("{path}: every node must have a type")),
        }
    }
    if let Some(format) = map.get("format").and_then(Value::as_str)
        && !(ALLOWED_FORMATS.contains(&format)
            || MORE_FORMATS.contains(&format)
            || NUMBER_FORMATS.contains(&format))
    {
        out.push(format!(
            "{path}: format {format:?} is not one the API server knows"
        ));
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if map.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push(format!("{path}: additionalProperties: false is forbidden"));
    }
    if let Some(items) = map.get("items") {
        if items.is_array() {
            out.push(format!("{path}: items must be one schema, not a list"));
        } else {
            structural_violations(items, &format!("{path}.items"), in_junctor, out);
        }
    }
    if map.get("type").and_then(Value::as_str) == Some("array")
        && !map.contains_key("items")
        && !in_junctor
    {
        out.push(format!("{path}: an array must say what its items are"));
    }
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            structural_violations(child, &format!("{path}.{name}"), in_junctor, out);
        }
    }
    if let Some(additional) = map.get("additionalProperties").filter(|v| v.is_object()) {
        structural_violations(
            additional,
            &format!("{path}.additionalProperties"),
            in_junctor,
            out,
        );
    }
    for junctor in JUNCTORS {
        let Some(branches) = map.get(junctor) else {
            continue;
        };
        let branches: Vec<&Value> = match branches {
            Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        for (i, branch) in branches.into_iter().enumerate() {
            structural_violations(branch, &format!("{path}.{junctor}[{i}]"), true, out);
            // Every property a junctor names must exist in the structural sibling.
            if let Some(props) = branch.get("properties").and_then(Value::as_object) {
                for name in props.keys() {
                    if map.get("properties").and_then(|p| p.get(name)).is_none() {
                        out.push(format!("{path}.{junctor}[{i}]: property {name} is not declared beside the junctor"));
                    }
                }
            }
        }
    }
    if map.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys: Vec<&str> = map["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let item = &map["items"];
        let required: Vec<&str> = item["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if keys.is_empty() {
            out.push(format!(
                "{path}: a map list needs x-kubernetes-list-map-keys"
            ));
        }
        for key in keys {
            if !required.contains(&key) && item["properties"][key].get("default").is_none() {
                out.push(format!(
                    "{path}: map key {key} must be required or defaulted"
                ));
            }
        }
    }
}

#[test]
fn every_schema_is_structural() {
    for plural in PLURALS {
        let schema = schema_of(plural);
        assert_eq!(schema["type"], "object");
        let mut violations = Vec::new();
        structural_violations(&schema, plural, false, &mut violations);
        // metadata may only restrict name and generateName.
        if let Some(meta) = schema["properties"]["metadata"].as_object() {
            for key in meta["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if key != "name" && key != "generateName" {
                    violations.push(format!("{plural}.metadata: only name and generateName may be specified, found {key}"));
                }
            }
        }
        assert!(
            violations.is_empty(),
            "{plural} is not structural:\n{}",
            violations.join("\n")
        );
    }
}

#[test]
fn the_walker_catches_non_structural_schemas() {
    let bad = json!({
        "type": "object",
        "properties": {
            "untyped": {"description": "no type"},
            "referenced": {"$ref": "#/definitions/x", "type": "object"},
            "weird": {"type": "string", "format": "made-up"},
            "both": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
            "junct": {"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"type": "object", "properties": {"b": {"type": "string"}}}]},
            "list": {"type": "array"}
        }
    });
    let mut violations = Vec::new();
    structural_violations(&bad, "bad", false, &mut violations);
    let joined = violations.join("\n");
    for expected in [
        "bad.untyped: every node must have a type",
        "$ref",
        "made-up",
        "mutually exclusive",
        "not allowed inside",
        "property b is not declared",
        "bad.list: an array must say",
    ] {
        assert!(
            joined.contains(expected),
            "walker missed {expected:?}:\n{joined}"
        );
    }
}

/// Helm refuses a country the API server would refuse: the chart's values schema takes exactly
/// the codes of the generated CRD's rule (and the empty string: not offered).
#[test]
fn the_charts_values_schema_takes_the_countries_the_crd_takes() {
    let crd = schema_of("wgservers");
    let country = &crd["properties"]["spec"]["properties"]["location"]["properties"]["country"];
    let rule = country["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .expect("the country rule");
    let crd_codes: Vec<Value> = rule
        .strip_prefix("'|")
        .and_then(|r| r.strip_suffix("|'.contains('|' + self + '|')"))
        .expect("'|AD|…|'.contains('|' + self + '|')")
        .split('|')
        .map(|code| json!(code))
        .collect();
    assert_eq!(crd_codes.len(), 249);
    let path = crate_dir().join("../charts/wgsub/values.schema.json");
    let values: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let choices = &values["properties"]["defaultServer"]["properties"]["location"]["properties"]["country"]
        ["anyOf"];
    assert_eq!(choices[0], json!({"const": ""}));
    assert_eq!(
        choices[1]["enum"],
        json!(crd_codes),
        "charts/wgsub/values.schema.json: the country list differs from crds/wgservers.yaml"
    );
}
