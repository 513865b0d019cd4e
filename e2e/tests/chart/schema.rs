//! `values.schema.json` refuses bad values: `helm template` fails and names the field.

use crate::support::{render, try_render};

fn refused(sets: &[&str], field: &str) {
    match try_render(sets) {
        Ok(_) => panic!("helm template accepted {sets:?}"),
        Err(stderr) => assert!(
            stderr.contains(field),
            "the error for {sets:?} names {field}:\n{stderr}"
        ),
    }
}

#[test]
fn bad_values_are_refused_with_the_field_named() {
    refused(&["nodeAgent.backend=bpf"], "/nodeAgent/backend");
    refused(
        &["nodeAgent.amneziawgBackend=bpf"],
        "/nodeAgent/amneziawgBackend",
    );
    refused(&["nodeAgent.firewall=pf"], "/nodeAgent/firewall");
    refused(&["bot.trialDays=400"], "/bot/trialDays");
    refused(&["yookassa.returnUrl=ftp://x"], "/yookassa/returnUrl");
    refused(&["operator.replicas=0"], "/operator/replicas");
    refused(&["api.port=70000"], "/api/port");
    refused(&["logFormat=xml"], "/logFormat");
    refused(
        &["defaultServer.endpoint=no-port"],
        "/defaultServer/endpoint",
    );
    refused(
        &["defaultServer.addressPool=10.8.0.0"],
        "/defaultServer/addressPool",
    );
    refused(&["defaultServer.mtu=500"], "/defaultServer/mtu");
    refused(
        &["defaultServer.interfaceName=a-name-longer-than-15"],
        "/defaultServer/interfaceName",
    );
    refused(&["plans[0].currency=rub"], "/plans/0/currency");
    refused(&["plans[0].priceMinor=0"], "/plans/0/priceMinor");
    refused(&["bot.adminIds={alice}"], "/bot/adminIds/0");
    refused(
        &["api.publicUrl=http://plain.example.test"],
        "/api/publicUrl",
    );
    refused(
        &["secrets.database.existingSecret=Not_A_Name"],
        "/secrets/database/existingSecret",
    );
    refused(
        &["operator.expiredPeerRetention=forever"],
        "/operator/expiredPeerRetention",
    );
    refused(&["api.driftInterval=soon"], "/api/driftInterval");
    refused(
        &["operator.usageWriteInterval=0s"],
        "/operator/usageWriteInterval",
    );
    // The binaries' one duration syntax, largest unit first; the api's intervals more than zero.
    refused(&["api.driftInterval=30s1m"], "/api/driftInterval");
    refused(&["api.initDataMaxAge=1h 30m"], "/api/initDataMaxAge");
    refused(&["api.initDataMaxAge=0h"], "/api/initDataMaxAge");
    refused(&["api.initDataMaxAge=0h0m"], "/api/initDataMaxAge");
    refused(
        &["operator.expiredPeerRetention=5w"],
        "/operator/expiredPeerRetention",
    );
    refused(&["bot.shutdownTimeout=26s"], "/bot/shutdownTimeout");
    refused(&["bot.shutdownTimeout=0s"], "/bot/shutdownTimeout");
    refused(
        &["yookassa.receipts.vatCode=13"],
        "/yookassa/receipts/vatCode",
    );
    refused(
        &["yookassa.receipts.enabled=yes"],
        "/yookassa/receipts/enabled",
    );
    refused(&["database.pgbouncer=on"], "/database/pgbouncer");
    refused(&["bot.mode=push"], "/bot/mode");
    refused(
        &["bot.webhook.url=http://plain.example.test/hook"],
        "/bot/webhook/url",
    );
    refused(&["bot.webhook.port=0"], "/bot/webhook/port");
    refused(
        &["bot.webhook.existingSecret=Not_A_Name"],
        "/bot/webhook/existingSecret",
    );
    refused(
        &["defaultServer.nat.clientToClient=sometimes"],
        "/defaultServer/nat/clientToClient",
    );
    for entry in [
        "203.0.113.0",
        "203.0.113.0/33",
        "203.0.113/24",
        "2001:db8::/129",
        "example.test/24",
    ] {
        refused(
            &[&format!(
                "defaultServer.nat.blockedDestinations={{{entry}}}"
            )],
            "/defaultServer/nat/blockedDestinations/0",
        );
    }
    let too_many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    refused(
        &[&format!(
            "defaultServer.nat.blockedDestinations={{{}}}",
            too_many.join(",")
        )],
        "/defaultServer/nat/blockedDestinations",
    );
}

#[test]
fn unknown_values_are_refused_so_typos_do_not_pass_silently() {
    refused(&["nodeAgent.hostNetwork=false"], "hostNetwork");
    refused(&["opertor.replicas=2"], "opertor");
}

#[test]
fn options_that_need_more_values_say_which() {
    refused(&["defaultServer.create=true"], "/defaultServer/endpoint");
    refused(&["api.ingress.enabled=true"], "/api/ingress/host");
    refused(
        &["secrets.createFromValues=true"],
        "secrets.values.botToken",
    );
    refused(&["bot.mode=webhook"], "bot.webhook.url");
    refused(
        &[
            "defaultServer.create=true",
            "defaultServer.endpoint=vpn.example.test:51820",
            "defaultServer.nodeName=a",
            "defaultServer.nodeSelector.x=y",
        ],
        "at most one of nodeName and nodeSelector",
    );
}

#[test]
fn good_values_of_the_same_fields_are_accepted() {
    for sets in [
        &["nodeAgent.backend=userspace"][..],
        &[
            "defaultServer.create=true",
            "defaultServer.endpoint=[2001:db8::1]:51820",
            "defaultServer.mtu=1420",
        ],
        &["api.publicUrl=https://vpn.example.test"],
        &["operator.expiredPeerRetention=12h"],
        &["operator.usageWriteInterval=5m"],
        &[
            "yookassa.receipts.enabled=true",
            "yookassa.receipts.vatCode=12",
            "database.pgbouncer=true",
            "api.driftInterval=90s",
            "api.initDataMaxAge=30m",
        ],
        &[
            "api.driftInterval=1m30s",
            "api.initDataMaxAge=1h30m",
            "operator.expiredPeerRetention=0s",
            "operator.usageWriteInterval=1d12h",
            "bot.shutdownTimeout=25s",
        ],
        &[
            "bot.mode=webhook",
            "bot.webhook.url=https://bot.example.test/hook",
        ],
        &[
            "defaultServer.nat.clientToClient=true",
            "defaultServer.nat.blockedDestinations={0.0.0.0/0,203.0.113.0/24,::/0,2001:db8::/32,fd00:1:2:3:4:5:6:0/112}",
        ],
    ] {
        if let Err(stderr) = try_render(sets) {
            panic!("{sets:?} refused:\n{stderr}");
        }
    }
}

#[test]
fn the_amneziawg_backend_choice_reaches_the_agent() {
    for choice in ["auto", "kernel", "userspace"] {
        let docs = render(&[&format!("nodeAgent.amneziawgBackend={choice}")]);
        let agent = docs
            .iter()
            .find(|d| d["kind"] == "DaemonSet")
            .expect("the node-agent DaemonSet");
        let env = agent["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("the agent's environment");
        assert!(
            env.iter()
                .any(|e| e["name"] == "WGSUB_AMNEZIAWG_BACKEND" && e["value"] == choice),
            "{choice}: {env:?}"
        );
    }
}
