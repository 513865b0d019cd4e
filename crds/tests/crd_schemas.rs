//! The generated CRDs: the committed YAML equals what the types generate, every schema is
//! structural by the apiextensions.k8s.io/v1 rules, defaults validate, and the API server's
//! validation (OpenAPI keywords and CEL rules, evaluated client-side with kube's CEL engine)
//! accepts the examples in `crds/examples/` and refuses a table of bad resources.

use std::path::{Path, PathBuf};

use kube::core::cel::{Validator, compile_schema, estimate_rule_cost};
use serde_json::{Value, json};
use wgsub_crds::keys::PrivateKey;
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

// ---------------------------------------------------------------------------------------------
// OpenAPI keyword validation as the API server applies it (types, ranges, lengths, patterns,
// enums, formats, required, unknown fields), so examples and defaults are checked here.

fn validate_openapi(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            out.push(format!("{path}: must not be null"));
        }
        return;
    }
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        out.push(format!("{path}: expected {}, got {value}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(format!("{path}: {n} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(format!("{path}: {n} is above the maximum {max}"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("int32")
            && i32::try_from(value.as_i64().unwrap_or(i64::MAX)).is_err()
        {
            out.push(format!("{path}: {n} does not fit int32"));
        }
    }
    if let Some(s) = value.as_str() {
        let chars = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| chars < min)
        {
            out.push(format!("{path}: shorter than minLength"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|max| chars > max)
        {
            out.push(format!("{path}: longer than maxLength"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && !regex::Regex::new(pattern).unwrap().is_match(s)
        {
            out.push(format!("{path}: {s:?} does not match {pattern}"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && s.parse::<jiff::Timestamp>().is_err()
        {
            out.push(format!("{path}: {s:?} is not an RFC 3339 date-time"));
        }
    }
    if let Some(items) = value.as_array() {
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|max| items.len() as u64 > max)
        {
            out.push(format!("{path}: more than maxItems"));
        }
        for (i, item) in items.iter().enumerate() {
            validate_openapi(&schema["items"], item, &format!("{path}[{i}]"), out);
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                out.push(format!("{path}.{name}: required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, child) in object {
            let child_path = format!("{path}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(child_schema), _) => validate_openapi(child_schema, child, &child_path, out),
                (None, Some(additional)) if additional.is_object() => {
                    validate_openapi(additional, child, &child_path, out)
                }
                // Every object has these; the API server validates them itself.
                _ if path.is_empty()
                    && ["apiVersion", "kind", "metadata"].contains(&name.as_str()) => {}
                _ if schema.get("x-kubernetes-preserve-unknown-fields")
                    == Some(&Value::Bool(true)) => {}
                _ => out.push(format!(
                    "{child_path}: unknown field (the API server would prune it)"
                )),
            }
        }
    }
}

/// Every `default` in a schema validates against its own node.
fn check_defaults(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(default) = schema.get("default") {
        validate_openapi(schema, default, &format!("{path}(default)"), out);
    }
    for (key, child) in schema.as_object().into_iter().flatten() {
        match key.as_str() {
            "properties" => {
                for (name, grandchild) in child.as_object().into_iter().flatten() {
                    check_defaults(grandchild, &format!("{path}.{name}"), out);
                }
            }
            "items" | "additionalProperties" if child.is_object() => {
                check_defaults(child, &format!("{path}.{key}"), out)
            }
            _ => {}
        }
    }
}

#[test]
fn every_default_validates_against_its_schema() {
    for plural in PLURALS {
        let mut problems = Vec::new();
        check_defaults(&schema_of(plural), plural, &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

/// Every CEL rule compiles and stays inside the API server's cost budget.
#[test]
fn every_cel_rule_compiles_within_the_cost_budget() {
    fn walk(node: &Value, path: &str, count: &mut usize, problems: &mut Vec<String>) {
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let compiled = compile_schema(node);
            for error in compiled.compilation_errors() {
                problems.push(format!("{path}: {error}"));
            }
            for rule in rules {
                *count += 1;
                let text = rule["rule"].as_str().unwrap();
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{path}: rule {text} has no message"
                );
                for warning in estimate_rule_cost(text, &compiled) {
                    problems.push(format!("{path}: {text}: {warning:?}"));
                }
            }
        }
        for (key, child) in node.as_object().into_iter().flatten() {
            match key.as_str() {
                "properties" => {
                    for (name, c) in child.as_object().into_iter().flatten() {
                        walk(c, &format!("{path}.{name}"), count, problems);
                    }
                }
                "items" | "additionalProperties" if child.is_object() => {
                    walk(child, &format!("{path}.{key}"), count, problems)
                }
                _ => {}
            }
        }
    }
    let mut count = 0;
    let mut problems = Vec::new();
    for plural in PLURALS {
        walk(&schema_of(plural), plural, &mut count, &mut problems);
    }
    assert!(
        count >= 8,
        "expected the CEL rules of all three kinds, found {count}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Admission: OpenAPI keywords + CEL, as the API server runs them on create and update.

fn plural_of(kind: &str) -> &'static str {
    match kind {
        "WgServer" => "wgservers",
        "VpnSubscription" => "vpnsubscriptions",
        "WgPeer" => "wgpeers",
        other => panic!("unknown kind {other}"),
    }
}

fn admit(object: &Value, old: Option<&Value>) -> Result<(), String> {
    let schema = schema_of(plural_of(object["kind"].as_str().unwrap()));
    let mut problems = Vec::new();
    validate_openapi(&schema, object, "", &mut problems);
    if let Err(errors) = Validator::new().validate(&schema, object, old) {
        problems.push(errors.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn example(file: &str) -> Value {
    let text = std::fs::read_to_string(crate_dir().join("examples").join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn public_key() -> String {
    PrivateKey::generate().public_key().to_base64()
}

#[test]
fn every_example_is_admitted_and_deserializes() {
    let dir = crate_dir().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") || name == "plans.yaml" {
            continue;
        }
        let object = example(&name);
        admit(&object, None).unwrap_or_else(|e| panic!("{name} refused: {e}"));
        match object["kind"].as_str().unwrap() {
            "WgServer" => drop(serde_json::from_value::<wgsub_crds::WgServer>(object).unwrap()),
            "VpnSubscription" => {
                drop(serde_json::from_value::<wgsub_crds::VpnSubscription>(object).unwrap())
            }
            "WgPeer" => drop(serde_json::from_value::<wgsub_crds::WgPeer>(object).unwrap()),
            other => panic!("{name}: unexpected kind {other}"),
        }
        seen += 1;
    }
    assert_eq!(
        seen,
        3,
        "one example per kind in {}",
        Path::new("crds/examples").display()
    );
}

fn with(base: &Value, pointer: &str, value: Value) -> Value {
    let mut object = base.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = object.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    if value.is_null() {
        target.remove(key);
    } else {
        target.insert(key.to_owned(), value);
    }
    object
}

/// Setting `pointer` to `value` in the valid `base` is refused, and the refusal names the field
/// (or, for a removed required field, its parent).
fn assert_refused_naming_the_field(base: &Value, pointer: &str, value: Value) {
    admit(base, None).unwrap_or_else(|e| panic!("the base object must be valid: {e}"));
    let bad = with(base, pointer, value.clone());
    let error = admit(&bad, None)
        .err()
        .unwrap_or_else(|| panic!("{pointer} = {value} was admitted"));
    let field = pointer.rsplit('/').next().unwrap();
    assert!(
        error.contains(field) || error.contains("privateKeySecretRef"),
        "refusal of {pointer} = {value} does not name {field}: {error}"
    );
}

#[test]
fn bad_servers_are_refused() {
    let server = example("wgserver.yaml");
    let cases = [
        ("/spec/listenPort", json!(0)),
        ("/spec/listenPort", json!(65536)),
        ("/spec/endpoint", json!("vpn.example.com")),
        ("/spec/endpoint", json!("vpn.example.com:0")),
        ("/spec/endpoint", json!("vpn.example.com:70000")),
        ("/spec/endpoint", json!("http://vpn.example.com:51820")),
        ("/spec/addressPool", json!("10.8.0.1/24")),
        ("/spec/addressPool", json!("10.8.0.0")),
        ("/spec/addressPool", json!("fd00::/64")),
        ("/spec/addressPool", json!("10.8.0.0/33")),
        ("/spec/addressPool6", json!("10.8.0.0/24")),
        ("/spec/addressPool6", json!("fd00:8::1/64")),
        ("/spec/dns", json!(["1.1.1.1", "not-an-ip"])),
        (
            "/spec/dns",
            json!(["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9"]),
        ),
        (
            "/spec/clientAllowedIPs",
            json!(["10.0.0.0/8", "10.0.0.300/8"]),
        ),
        ("/spec/mtu", json!(1000)),
        ("/spec/interfaceName", json!("a-name-longer-than-15")),
        (
            "/spec/nodeSelector",
            json!({"kubernetes.io/hostname": "vpn-1"}),
        ),
        ("/spec/privateKeySecretRef", Value::Null),
        ("/spec/listenPort", json!("51820")),
    ];
    for (pointer, value) in cases {
        assert_refused_naming_the_field(&server, pointer, value);
    }
    // IPv6 endpoints in brackets and a selector instead of a node name are fine.
    admit(
        &with(&server, "/spec/endpoint", json!("[2001:db8::1]:51820")),
        None,
    )
    .unwrap();
    let by_selector = with(
        &with(&server, "/spec/nodeName", Value::Null),
        "/spec/nodeSelector",
        json!({"wgsub.io/vpn": "true"}),
    );
    admit(&by_selector, None).unwrap();
}

#[test]
fn bad_subscriptions_are_refused() {
    let subscription = example("vpnsubscription.yaml");
    let cases = [
        ("/spec/telegramUserId", json!(0)),
        ("/spec/telegramUserId", json!(-5)),
        ("/spec/telegramUserId", json!(42)),
        ("/spec/maxDevices", json!(0)),
        ("/spec/maxDevices", json!(11)),
        ("/spec/paidUntil", json!("tomorrow")),
        ("/spec/paidUntil", json!("2026-12-31")),
        ("/spec/plan", json!("Month!")),
        ("/spec/server", json!("Not_A_Name")),
        ("/status", json!({"phase": "Paid"})),
    ];
    for (pointer, value) in cases {
        assert_refused_naming_the_field(&subscription, pointer, value);
    }
    // the name must follow the user id
    let renamed = with(&subscription, "/metadata/name", json!("tg-1"));
    assert!(
        admit(&renamed, None)
            .unwrap_err()
            .contains("tg-<spec.telegramUserId>")
    );
}

#[test]
fn telegram_user_id_is_immutable() {
    let old = example("vpnsubscription.yaml");
    let changed = with(
        &with(&old, "/spec/telegramUserId", json!(987654321)),
        "/metadata/name",
        json!("tg-987654321"),
    );
    admit(&changed, None).unwrap();
    let error = admit(&changed, Some(&old)).unwrap_err();
    assert!(error.contains("immutable"), "{error}");
    let renewed = with(&old, "/spec/paidUntil", json!("2027-03-31T00:00:00Z"));
    admit(&renewed, Some(&old)).unwrap();
}

#[test]
fn bad_peers_are_refused() {
    let peer = with(
        &example("wgpeer.yaml"),
        "/spec/publicKey",
        json!(public_key()),
    );
    admit(&peer, None).unwrap();
    let key = public_key();
    let cases = [
        ("/spec/publicKey", json!(&key[..43])),
        ("/spec/publicKey", json!(format!("{}==", &key[..42]))),
        ("/spec/publicKey", json!(format!("{}B=", &key[..42]))),
        ("/spec/publicKey", json!("!".repeat(44))),
        ("/spec/publicKey", Value::Null),
        ("/spec/address", json!("10.8.0.2/24")),
        ("/spec/address", json!("10.8.0.2")),
        ("/spec/address", json!("fd00:8::2/128")),
        ("/spec/address6", json!("fd00:8::2/64")),
        ("/spec/address6", json!("10.8.0.2/32")),
        ("/spec/expiresAt", json!("2026-13-01T00:00:00Z")),
        ("/spec/deviceName", json!("x".repeat(65))),
        ("/spec/server", Value::Null),
    ];
    for (pointer, value) in cases {
        assert_refused_naming_the_field(&peer, pointer, value);
    }
    // A peer the API made for a new device has neither key nor address yet.
    let fresh = with(
        &with(
            &with(
                &with(&peer, "/spec/publicKey", Value::Null),
                "/spec/privateKeySecretRef",
                Value::Null,
            ),
            "/spec/address",
            Value::Null,
        ),
        "/spec/address6",
        Value::Null,
    );
    admit(&fresh, None).unwrap();
}
