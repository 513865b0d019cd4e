//! The shared device writes ([`wgsub_devices::manage::DeviceWriter`]) on the real Kubernetes API
//! server of the test process (`wgsub_testkit::envtest`, a namespace per test), as the api's and
//! the bot's ServiceAccounts under the chart's RBAC: a delete or rotation of a device that was
//! replaced meanwhile by a newer peer of the same name (its uid differs) is refused as gone and
//! leaves everything as it was — no replacement left behind, no mark on the subscription — and
//! a delete of the last device marks the subscription, an add unmarks it.

use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use wgsub_crds::devices::ANNOTATION_DEVICES_REMOVED;
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, WgPeer};
use wgsub_devices::manage::{
    DeviceWriter, WriteError, device_to_add, new_device_peer, replacement_peer,
};
use wgsub_testkit::chart::{apply_chart_rbac, assert_nothing_forbidden, component_client};
use wgsub_testkit::envtest::ControlPlane;

const WRITERS: [&str; 2] = ["api", "bot"];

async fn mark(admin: &kube::Client, ns: &str) -> Option<String> {
    Api::<VpnSubscription>::namespaced(admin.clone(), ns)
        .get("tg-7")
        .await
        .unwrap()
        .annotations()
        .get(ANNOTATION_DEVICES_REMOVED)
        .cloned()
}

#[tokio::test]
async fn writes_on_a_replaced_device_are_gone_and_change_nothing_and_the_mark_follows_the_last_device()
 {
    for component in WRITERS {
        let plane = ControlPlane::with_crds();
        let ns = plane.namespace(&format!("manage-{component}")).await;
        apply_chart_rbac(plane, &ns, &[]).await;
        let admin = plane.admin_client();
        let mut spec = VpnSubscriptionSpec::for_user(7);
        spec.max_devices = 2;
        let mut sub = VpnSubscription::new("tg-7", spec);
        sub.metadata.namespace = Some(ns.clone());
        let sub = Api::<VpnSubscription>::namespaced(admin.clone(), &ns)
            .create(&PostParams::default(), &sub)
            .await
            .unwrap();
        let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &ns);
        let device = new_device_peer(&sub, 1, "main", Some("Phone".into()));
        let live = peers.create(&PostParams::default(), &device).await.unwrap();
        let writer = DeviceWriter::new(
            component_client(plane, &ns, component).await,
            &ns,
            &format!("wgsub-{component}"),
        );

        // What the caller saw: an older peer of that name (another uid).
        let mut stale = live.clone();
        stale.meta_mut().uid = Some("0d4c6c2e-0000-4000-8000-000000000000".into());
        let names = vec![live.name_any()];
        let replacement = replacement_peer(&sub, &stale, &names, "main");
        assert!(matches!(
            writer.rotate(&stale, &replacement).await,
            Err(WriteError::Gone)
        ));
        assert!(
            peers.get_opt("tg-7-2").await.unwrap().is_none(),
            "the replacement was taken back"
        );
        assert!(matches!(
            writer.delete("tg-7", &stale, true).await,
            Err(WriteError::Gone)
        ));
        assert_eq!(mark(&admin, &ns).await, None, "the mark was taken back");
        let kept = peers.get("tg-7-1").await.unwrap();
        assert_eq!(kept.uid(), live.uid());

        // The real device: deleted, and as the last one the subscription is marked.
        writer.delete("tg-7", &live, true).await.unwrap();
        assert!(peers.get_opt("tg-7-1").await.unwrap().is_none());
        assert_eq!(mark(&admin, &ns).await.as_deref(), Some("true"));
        let marked = Api::<VpnSubscription>::namespaced(admin.clone(), &ns)
            .get("tg-7")
            .await
            .unwrap();
        let added = device_to_add(&marked, &[], "main", None).unwrap();
        let created = writer.add(&marked, &added).await.unwrap();
        assert_eq!(created.name_any(), "tg-7-1");
        assert_eq!(mark(&admin, &ns).await, None);
        // A second add under the same name collides.
        assert!(matches!(
            writer.add(&marked, &added).await,
            Err(WriteError::Conflict)
        ));
        assert_eq!(
            created.meta().owner_references.as_ref().unwrap()[0].name,
            "tg-7"
        );
        assert_nothing_forbidden(plane, &ns, component);
    }
}
