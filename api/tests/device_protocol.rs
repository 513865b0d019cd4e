//! The protocol of each device's server in the api's device listings, end to end over HTTP on
//! the real Kubernetes API server (the support harness): a device on a WireGuard `WgServer` is
//! `wireguard`, one on an AmneziaWG `WgServer` (a complete, admitted `amneziawg` block) is
//! `amneziawg` — in `/api/v1/me`, `/api/v1/me/peers`, the answer of a device switch, and
//! consistent with the `.conf` the api hands out for it — and the OpenAPI document names the
//! field and its two values.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

mod support;

use support::*;

/// `(name, protocol)` of each device in a device list.
fn protocols(devices: &Value) -> Vec<(String, String)> {
    devices
        .as_array()
        .expect("a device list")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn device_listings_carry_the_protocol_of_each_devices_server() {
    let h = harness("device_protocol").await;
    create_amneziawg_server(&h, "awg").await;
    h.active_user(701).await;
    h.ready_device(701, 2, "awg", "10.9.0.2/32", "Laptop").await;
    let expected = vec![
        ("tg-701-1".to_owned(), "wireguard".to_owned()),
        ("tg-701-2".to_owned(), "amneziawg".to_owned()),
    ];

    let (status, me) = h.user_call(701, "GET", "/api/v1/me", None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(protocols(&me["devices"]), expected);
    let (status, peers) = h.user_call(701, "GET", "/api/v1/me/peers", None).await;
    assert_eq!(status, StatusCode::OK, "{peers}");
    assert_eq!(protocols(&peers), expected);
    let (status, switched) = h
        .user_call(
            701,
            "PATCH",
            "/api/v1/me/peers/tg-701-2",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{switched}");
    assert_eq!(switched["protocol"], "amneziawg");
    assert_eq!(switched["enabled"], false);

    // The protocol shown is the one the device's config speaks.
    for (device, file_prefix, has_junk) in [
        ("tg-701-1", "wgsub-", false),
        ("tg-701-2", "amnezia-", true),
    ] {
        let request = Request::get(format!("/api/v1/me/peers/{device}/config"))
            .header(header::AUTHORIZATION, format!("tma {}", h.init_data(701)))
            .body(Body::empty())
            .unwrap();
        let (status, body, headers) = h.call(request, "127.0.0.1:5000").await;
        assert_eq!(status, StatusCode::OK, "{device}");
        let disposition = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert!(
            disposition.contains(&format!("filename=\"{file_prefix}")),
            "{device}: {disposition}"
        );
        let config = String::from_utf8(body).unwrap();
        assert_eq!(config.contains("\nJc = 4"), has_junk, "{device}");
    }
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_openapi_document_names_the_device_protocol_and_its_values() {
    let h = harness("device_protocol_doc").await;
    let (status, body, _) = h
        .call(
            Request::get("/openapi.json").body(Body::empty()).unwrap(),
            "127.0.0.1:1",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let schemas = &doc["components"]["schemas"];
    let device = &schemas["DeviceView"];
    assert_eq!(
        device["properties"]["protocol"]["$ref"], "#/components/schemas/DeviceProtocol",
        "{device}"
    );
    assert!(
        device["required"]
            .as_array()
            .unwrap()
            .contains(&json!("protocol")),
        "{device}"
    );
    assert_eq!(
        schemas["DeviceProtocol"]["enum"],
        json!(["wireguard", "amneziawg"]),
        "{}",
        schemas["DeviceProtocol"]
    );
}
