//! Hostile input, items 7 and 8: store content nobody validated, and specs the schema lets
//! through. Each gives a clear Ready reason and message; nothing panics, no target is partial,
//! and the operator stays responsive.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, api::ObjectMeta};
use secretref::backend::kubernetes::{ENVIRONMENT_ANNOTATION, NAME_ANNOTATION, STORE_SECRET_LABEL, object_name};
use serde_json::json;

use crate::{
    sampler::Data,
    world::{APPS, ENV, MARKER, STORE, World, exclusive},
};

/// A store Secret at `object` as secretref writes it: labelled (or not), and annotated as
/// secret `claims` of the environment (or not annotated at all).
fn store_secret(object: &str, claims: Option<&str>, labelled: bool, type_: &str, data: &Data) -> Secret {
    let annotations = claims.map(|name| {
        [
            (NAME_ANNOTATION.to_string(), name.to_string()),
            (ENVIRONMENT_ANNOTATION.to_string(), ENV.to_string()),
        ]
        .into()
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(object.to_string()),
            labels: labelled.then(|| [(STORE_SECRET_LABEL.to_string(), "true".to_string())].into()),
            annotations,
            ..Default::default()
        },
        type_: Some(type_.to_string()),
        data: Some(data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()),
        ..Default::default()
    }
}

impl World {
    /// Writes store secret `name` by hand at its address, as secretref would (or not: `claims`,
    /// `labelled`, `type_`), recording it as a store value when `valid`.
    async fn hand_write(&self, name: &str, claims: Option<&str>, labelled: bool, type_: &str, data: Data, valid: bool) {
        if valid {
            self.record(name, data.clone());
        }
        let secret = store_secret(&object_name(ENV, name), claims, labelled, type_, &data);
        self.write_raw(STORE, secret).await;
    }
}

/// Item 7: store content nobody validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_store_content() {
    let _one = exclusive().await;
    let mut w = World::new("hostile-store").await;
    let opaque = "Opaque";

    // A value of exactly 1 MiB (a store Secret's limit), 5,000 keys, awkward text and a key of
    // 253 characters: served byte for byte.
    let huge = {
        let mut v = w.value("huge").into_bytes();
        v.resize(1024 * 1024, b'x');
        Data::from([("BLOB".to_string(), v)])
    };
    let many: Data = (0..5_000)
        .map(|i| (format!("K{i:04}"), w.value("k").into_bytes()))
        .collect();
    let odd: Data = [
        ("NUL".to_string(), format!("a\0b{}", w.value("nul")).into_bytes()),
        (
            "CRLF".to_string(),
            format!("line1\r\nline2\r\n{}", w.value("crlf")).into_bytes(),
        ),
        ("EMOJI".to_string(), format!("🔑🗝️ {} ✓", w.value("emoji")).into_bytes()),
        ("X".repeat(253), w.value("long").into_bytes()),
    ]
    .into();
    for (name, data) in [("huge", huge), ("many", many), ("odd", odd)] {
        w.hand_write(name, Some(name), true, opaque, data, true).await;
        w.apply_secretref(&w.cluster.client, APPS, name, json!({ "secrets": [{ "name": name }] }))
            .await
            .expect("apply");
        w.mirror(APPS, name, name);
    }
    w.put("small", w.fresh(&["SMALL"])).await;
    // 1 MiB plus more does not fit a Secret: TooLarge, and no target at all.
    w.apply_secretref(
        &w.cluster.client,
        APPS,
        "too-large",
        json!({ "secrets": [{ "name": "huge" }, { "name": "small" }] }),
    )
    .await
    .expect("apply");
    // A TLS-typed Secret made by hand at the right address: served, keys that are not
    // environment variable names earn a warning.
    let tls: Data = [
        ("tls.crt".to_string(), w.value("crt").into_bytes()),
        ("tls.key".to_string(), w.value("key").into_bytes()),
    ]
    .into();
    w.hand_write("tls", Some("tls"), true, "kubernetes.io/tls", tls, true)
        .await;
    w.apply_secretref(
        &w.cluster.client,
        APPS,
        "tls",
        json!({ "secrets": [{ "name": "tls" }] }),
    )
    .await
    .expect("apply");
    w.mirror(APPS, "tls", "tls");

    // A secret that becomes binary later: the target keeps the last good value.
    w.put("binary", w.fresh(&["BIN"])).await;
    w.apply_secretref(
        &w.cluster.client,
        APPS,
        "binary",
        json!({ "secrets": [{ "name": "binary" }], "refreshInterval": "2s" }),
    )
    .await
    .expect("apply");
    w.mirror(APPS, "binary", "binary");
    // The victim's real data, and impostors: one at the right address whose annotations name
    // another secret, one at another object name claiming to be the victim.
    w.put("victim", w.fresh(&["REAL"])).await;
    w.apply_secretref(
        &w.cluster.client,
        APPS,
        "victim",
        json!({ "secrets": [{ "name": "victim" }], "refreshInterval": "2s" }),
    )
    .await
    .expect("apply");
    w.mirror(APPS, "victim", "victim");
    w.start_operator().await;
    w.converge(Duration::from_secs(300)).await;
    let writes = w.sampler.observed().target_writes;

    let fake: Data = [("REAL".to_string(), w.value("fake").into_bytes())].into();
    w.hand_write("impostor", Some("victim"), true, opaque, fake.clone(), false)
        .await;
    w.write_raw(STORE, store_secret("evil-twin", Some("victim"), true, opaque, &fake))
        .await;
    w.hand_write("unannotated", None, true, opaque, w.fresh(&["A"]), false)
        .await;
    w.hand_write("unlabelled", Some("unlabelled"), false, opaque, w.fresh(&["A"]), false)
        .await;
    let mut binary: Data = w.fresh(&["BIN"]);
    binary.insert("BIN".into(), [MARKER.as_bytes(), &[0xff, 0xfe, 0x00, 0xc3]].concat());
    w.hand_write("binary", Some("binary"), true, opaque, binary, false)
        .await;
    w.failing(APPS, "binary");
    for name in ["impostor", "unannotated", "unlabelled"] {
        w.apply_secretref(&w.cluster.client, APPS, name, json!({ "secrets": [{ "name": name }] }))
            .await
            .expect("apply");
    }

    let mut messages = BTreeMap::new();
    for (name, reason, says) in [
        ("too-large", "TooLarge", "over the 1 MiB limit"),
        ("impostor", "InvalidSecret", "annotated as secret \"victim\""),
        ("unannotated", "InvalidSecret", "annotation"),
        ("unlabelled", "InvalidSecret", STORE_SECRET_LABEL),
        ("binary", "InvalidSecret", "\"BIN\" in its Secret"),
    ] {
        let message = w.wait_reason(APPS, name, reason).await;
        assert!(message.contains(says), "{name}: {message}");
        messages.insert(name, format!("{reason}: {message}"));
    }
    // Give the 2 s refreshes a few rounds: the victim is never served the impostors' data, and
    // the binary secret's target keeps its last good value.
    tokio::time::sleep(Duration::from_secs(6)).await;
    w.converge(Duration::from_secs(120)).await;
    assert_eq!(
        w.sampler.observed().target_writes,
        writes,
        "no target written since the hostile edits"
    );
    let secrets: Api<Secret> = Api::namespaced(w.cluster.client.clone(), APPS);
    for absent in ["too-large", "impostor", "unannotated", "unlabelled"] {
        assert!(
            secrets.get_opt(absent).await.expect("get").is_none(),
            "{absent}: no partial target"
        );
    }
    let warned = serde_json::to_string(
        &Api::<k8s_openapi::api::events::v1::Event>::namespaced(w.cluster.client.clone(), APPS)
            .list(&Default::default())
            .await
            .expect("events")
            .items,
    )
    .expect("json");
    assert!(
        warned.contains("not environment variable names"),
        "the tls keys earned a warning"
    );
    assert!(w.operator().alive(), "the operator survived every input");
    w.assert_no_leaks().await;
    w.report(json!({ "input": "store content", "reasons": messages, "target_writes_after_hostile_edits": 0 }));
}
