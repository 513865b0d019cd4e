//! AmneziaWG parameters chosen once: when an AmneziaWG `WgServer` leaves parameters out, the
//! leader chooses them ([`wgsub_crds::amnezia::complete_at_random`], strong random values from
//! the OS)
//! and writes them into the server's `spec.amneziawg` by server-side apply under the operator's
//! field manager. The spec, not the status, holds them, so they survive a backup and restore;
//! a GitOps re-apply of a manifest without them keeps them (fields another manager owns are
//! not touched by its apply). The write carries the observed `resourceVersion`, so parameters
//! are chosen only against the server's current spec: a stale cache can never replace values
//! already written. A server with every parameter present is never written: nothing changes
//! them by itself, and a user who changes one (`--force-conflicts`, or an edit) takes it over.
//!
//! Functional core: [`parameters_to_apply`] decides the apply body. Shell: [`ensure`] writes it,
//! [`run`] watches the servers and calls it.

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};
use wgsub_crds::WgServer;
use wgsub_crds::amnezia::{GenerateError, complete_at_random};
use wgsub_crds::resources::{AmneziaVersion, AmneziaWgSpec};

use crate::patches::FIELD_MANAGER;

/// The server-side apply body that gives `server` its missing AmneziaWG parameters, or `None`
/// when it needs none (a WireGuard server, or every parameter present). The body names the
/// parameters the operator manages — `jc`, `jmin`, `jmax`, `s1`, `s2`, `h1`–`h4`, and for
/// version 1.5 `s3`, `s4` — with their current values where present (co-owning an identical
/// value conflicts with no one) and chosen ones where absent; never `version` or the
/// signature packets, which are the user's. It carries the observed `resourceVersion`.
pub fn parameters_to_apply(server: &WgServer) -> Result<Option<Value>, GenerateError> {
    if !server.spec.is_amneziawg() {
        return Ok(None);
    }
    let given = server.spec.amneziawg.clone().unwrap_or_default();
    let chosen = complete_at_random(&given, server.spec.mtu)?;
    if chosen == given {
        return Ok(None);
    }
    Ok(Some(json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgServer",
        "metadata": {
            "name": server.name_any(),
            "resourceVersion": server.resource_version(),
        },
        "spec": {"amneziawg": managed_fields(&chosen)},
    })))
}

/// The fields of `block` the operator manages (see [`parameters_to_apply`]).
fn managed_fields(block: &AmneziaWgSpec) -> Value {
    let mut fields = json!({
        "jc": block.jc, "jmin": block.jmin, "jmax": block.jmax, "s1": block.s1, "s2": block.s2,
        "h1": block.h1, "h2": block.h2, "h3": block.h3, "h4": block.h4,
    });
    if block.version == Some(AmneziaVersion::V1_5) {
        fields["s3"] = json!(block.s3);
        fields["s4"] = json!(block.s4);
    }
    fields
}

/// What [`ensure`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was missing.
    Complete,
    /// The missing parameters were written.
    Chosen,
}

/// Why [`ensure`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The given parameters leave no valid completion (e.g. headers covering all of uint32).
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The apply failed (a 409 when the server changed since it was read: the next watch event
    /// brings the new one).
    #[error("writing the AmneziaWG parameters: {0}")]
    Kube(#[from] kube::Error),
}

/// Gives `server` its missing AmneziaWG parameters (see [`parameters_to_apply`]).
pub async fn ensure(client: &Client, server: &WgServer) -> Result<Outcome, EnsureError> {
    let Some(body) = parameters_to_apply(server)? else {
        return Ok(Outcome::Complete);
    };
    let namespace = server.namespace().unwrap_or_default();
    Api::<WgServer>::namespaced(client.clone(), &namespace)
        .patch(
            &server.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(body),
        )
        .await?;
    info!(server = %server.name_any(), %namespace, "chose the AmneziaWG parameters");
    Ok(Outcome::Chosen)
}

/// Watches the `WgServer`s of `namespace` (all when absent) and gives each AmneziaWG server its
/// missing parameters, until `shutdown` completes. Runs on the leader only: a single writer.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<WgServer> = match &namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    // Few servers: listed whole from the API server's watch cache, as the controller lists them.
    let whole = watcher::Config {
        page_size: None,
        ..watcher::Config::default().any_semantic()
    };
    let servers = watcher(api, whole)
        .default_backoff()
        .applied_objects()
        .filter_map(|server| async move {
            server
                .inspect_err(|error| warn!("watching WgServers: {error}"))
                .ok()
        });
    let work = servers.for_each(|server| {
        let client = client.clone();
        async move {
            if let Err(error) = ensure(&client, &server).await {
                warn!(server = %server.name_any(), "AmneziaWG parameters: {error}");
            }
        }
    });
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::WgServerSpec;
    use wgsub_crds::amnezia::validate;

    fn server(spec: Value) -> WgServer {
        let mut value = json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "key"},
        });
        value
            .as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        let mut server = WgServer::new("awg", serde_json::from_value(value).unwrap());
        server.metadata.namespace = Some("vpn".into());
        server.metadata.resource_version = Some("42".into());
        server
    }

    fn apply_block(body: &Value) -> WgServerSpec {
        let mut spec = json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "key"},
            "protocol": "amneziawg",
        });
        spec["amneziawg"] = body["spec"]["amneziawg"].clone();
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn a_wireguard_server_gets_nothing() {
        assert_eq!(parameters_to_apply(&server(json!({}))).unwrap(), None);
    }

    #[test]
    fn an_amneziawg_server_without_parameters_gets_a_complete_1_0_set_at_its_version() {
        let bare = server(json!({"protocol": "amneziawg"}));
        let body = parameters_to_apply(&bare).unwrap().unwrap();
        assert_eq!(
            body["metadata"],
            json!({"name": "awg", "resourceVersion": "42"})
        );
        assert_eq!(body["kind"], "WgServer");
        let spec = apply_block(&body);
        assert_eq!(validate(&spec), vec![]);
        assert!(spec.amneziawg_params().is_some());
        let keys: Vec<&String> = body["spec"]["amneziawg"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            keys,
            ["h1", "h2", "h3", "h4", "jc", "jmax", "jmin", "s1", "s2"]
        );
    }

    #[test]
    fn given_values_are_kept_and_version_and_signatures_are_left_to_their_owner() {
        let partial = server(json!({
            "protocol": "amneziawg",
            "amneziawg": {"version": "1.5", "jc": 9, "h2": "77", "i1": "<r 8>"},
        }));
        let body = parameters_to_apply(&partial).unwrap().unwrap();
        let block = &body["spec"]["amneziawg"];
        assert_eq!(block["jc"], 9);
        assert_eq!(block["h2"], "77");
        assert_eq!(block["s4"], 0);
        assert!(block["s3"].as_i64().is_some_and(|s3| s3 > 0));
        assert!(block.get("version").is_none() && block.get("i1").is_none());
    }

    #[test]
    fn a_complete_server_is_never_written() {
        let complete = server(json!({
            "protocol": "amneziawg",
            "amneziawg": {
                "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
                "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
            },
        }));
        assert_eq!(parameters_to_apply(&complete).unwrap(), None);
    }

    #[test]
    fn parameters_without_a_valid_completion_are_reported() {
        let crowded = server(json!({
            "protocol": "amneziawg",
            "amneziawg": {"version": "1.5", "h1": "5-4294967295"},
        }));
        assert_eq!(
            parameters_to_apply(&crowded),
            Err(GenerateError::NoRoomForHeader("h2"))
        );
    }
}
