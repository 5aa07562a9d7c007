//! The secretref.dev API on a real kube-apiserver: CRDs install, DESIGN.md's valid examples
//! are accepted, and every invalid case V1–V10 is rejected with a message naming the field.

mod support;

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{TestNamespace, client, install_crds, kubectl};

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("secretref.dev", "v1alpha1", kind))
}

async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    (client, ns)
}

/// Creates `obj` the way `kubectl apply --server-side` does (strict field validation, so an
/// unknown field is an error rather than silently pruned) and returns the API server's error
/// message, if any.
async fn create(client: &Client, ns: &str, obj: Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().expect("kind").to_string();
    let ar = resource(&kind);
    let api: Api<DynamicObject> = if kind.starts_with("Cluster") {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    };
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    let params = PatchParams::apply("secretref-tests").validation_strict();
    match api.patch(&name, &params, &Patch::Apply(&obj)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

fn secret_ref(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "metadata": { "name": name }, "spec": spec })
}

/// Asserts that the API server rejects `spec` and that its message names `field` (and any
/// further words in `also`).
async fn assert_rejected(client: &Client, ns: &str, case: &str, spec: Value, field: &str) {
    let name = format!("bad-{}", case.to_lowercase());
    let err = create(client, ns, secret_ref(&name, spec))
        .await
        .expect_err(&format!("{case}: the API server accepted an invalid SecretRef"));
    assert!(err.contains(field), "{case}: message does not name {field}: {err}");
}

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let client = client().await;
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.git_version, "v1.37.2");
}

#[tokio::test]
async fn design_examples_are_accepted() {
    let (client, ns) = setup("api-valid").await;
    let store = json!({
        "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretStore",
        "metadata": { "name": format!("{}-default", ns.name) },
        "spec": { "default": true, "defaultEnvironment": "main", "namespaces": ["team-*", "shop"],
                  "provider": { "kubernetes": { "namespace": "secretref-store" } } }
    });
    // It says `default: true`: never leave it to other tests or the demo.
    let _guard = support::ClusterStoreGuard(format!("{}-default", ns.name));
    create(&client, &ns.name, store)
        .await
        .expect("the DESIGN.md ClusterSecretStore is valid");
    let namespaced = json!({
        "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretStore", "metadata": { "name": "local" },
        "spec": { "provider": { "kubernetes": { "namespace": ns.name } } }
    });
    create(&client, &ns.name, namespaced)
        .await
        .expect("a minimal SecretStore is valid");

    let full = secret_ref(
        "web",
        json!({
            "storeRef": { "kind": "ClusterSecretStore", "name": "default" },
            "environment": "prod",
            "secrets": [ { "name": "api_key_1" }, { "name": "stripe", "keys": ["STRIPE_KEY"], "optional": true } ],
            "requiredKeys": ["API_KEY_1", "STRIPE_KEY"],
            "target": { "name": "web-env", "type": "Opaque", "labels": {}, "annotations": {},
                        "creationPolicy": "Owner", "deletionPolicy": "Delete" },
            "files": [ { "key": ".env", "format": "dotenv" },
                       { "key": "config.yaml", "format": "template", "template": "stripe_key: {{ STRIPE_KEY }}" } ],
            "refreshInterval": "60s",
            "rolloutRestart": [ { "kind": "Deployment", "name": "web" } ]
        }),
    );
    create(&client, &ns.name, full)
        .await
        .expect("the DESIGN.md SecretRef is valid");
    create(
        &client,
        &ns.name,
        secret_ref("minimal", json!({ "secrets": [ { "name": "a" } ] })),
    )
    .await
    .expect("a SecretRef with one secret is valid");

    // Server-side defaults fill in what the user left out.
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource("SecretRef"));
    let minimal = api.get("minimal").await.expect("get");
    assert_eq!(minimal.data["spec"]["refreshInterval"], "60s");
    assert_eq!(minimal.data["spec"]["target"]["creationPolicy"], "Owner");
    assert_eq!(minimal.data["spec"]["target"]["type"], "Opaque");
}

#[tokio::test]
async fn invalid_secretrefs_are_rejected_naming_the_field() {
    let (client, ns) = setup("api-invalid").await;
    let c = &client;
    let n = ns.name.as_str();
    let ok = || json!([{ "name": "a" }]);
    assert_rejected(c, n, "V1-empty", json!({ "secrets": [] }), "spec.secrets").await;
    assert_rejected(c, n, "V1-missing", json!({ "environment": "prod" }), "spec.secrets").await;
    assert_rejected(
        c,
        n,
        "V2-char",
        json!({ "secrets": [{ "name": "a/b" }] }),
        "spec.secrets[0].name",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V2-long",
        json!({ "secrets": [{ "name": "x".repeat(65) }] }),
        "spec.secrets[0].name",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V3-required",
        json!({ "secrets": ok(), "requiredKeys": ["1BAD"] }),
        "spec.requiredKeys[0]",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V3-keys",
        json!({ "secrets": [{ "name": "a", "keys": ["OK", "NOT-OK"] }] }),
        "spec.secrets[0].keys[1]",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V4",
        json!({ "secrets": ok(), "target": { "name": "Not_A_DNS_Name" } }),
        "spec.target.name",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V6-creation",
        json!({ "secrets": ok(), "target": { "creationPolicy": "Adopt" } }),
        "spec.target.creationPolicy",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V6-deletion",
        json!({ "secrets": ok(), "target": { "deletionPolicy": "Orphan" } }),
        "spec.target.deletionPolicy",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V6-format",
        json!({ "secrets": ok(), "files": [{ "key": "a", "format": "yaml" }] }),
        "spec.files[0].format",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V6-store",
        json!({ "secrets": ok(), "storeRef": { "kind": "Vault", "name": "x" } }),
        "spec.storeRef.kind",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V6-workload",
        json!({ "secrets": ok(), "rolloutRestart": [{ "kind": "Pod", "name": "x" }] }),
        "spec.rolloutRestart[0].kind",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V7",
        json!({ "secrets": ok(), "refreshInterval": "10 minutes" }),
        "spec.refreshInterval",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V7-unitless",
        json!({ "secrets": ok(), "refreshInterval": "30" }),
        "spec.refreshInterval",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V8-missing",
        json!({ "secrets": ok(), "files": [{ "key": "c", "format": "template" }] }),
        "spec.files[0].template",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V8-extra",
        json!({ "secrets": ok(), "files": [{ "key": "c", "format": "json", "template": "x" }] }),
        "spec.files[0].template",
    )
    .await;
    assert_rejected(
        c,
        n,
        "V9-key",
        json!({ "secrets": ok(), "files": [{ "key": "a/b", "format": "json" }] }),
        "spec.files[0].key",
    )
    .await;
    assert_rejected(c, n, "V9-duplicate", json!({ "secrets": ok(), "files": [{ "key": ".env", "format": "json" }, { "key": ".env", "format": "dotenv" }] }), "spec.files").await;
}

#[tokio::test]
async fn target_name_is_immutable() {
    let (client, ns) = setup("api-immutable").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource("SecretRef"));
    let params = PatchParams::apply("secretref-tests");
    let apply = |target: Value| {
        Patch::Apply(secret_ref(
            "web",
            json!({ "secrets": [{ "name": "a" }], "target": target }),
        ))
    };
    api.patch("web", &params, &apply(json!({ "name": "web-env" })))
        .await
        .expect("created");
    api.patch("web", &params, &apply(json!({ "name": "web-env", "type": "Opaque" })))
        .await
        .expect("other target fields may change");
    let err = api
        .patch("web", &params, &apply(json!({ "name": "other" })))
        .await
        .expect_err("a rename is rejected");
    assert!(err.to_string().contains("spec.target.name"), "{err}");

    // Without target.name the target is metadata.name; naming another one later is a rename too.
    api.patch(
        "implicit",
        &params,
        &Patch::Apply(secret_ref("implicit", json!({ "secrets": [{ "name": "a" }] }))),
    )
    .await
    .expect("created");
    let err = api
        .patch(
            "implicit",
            &params,
            &Patch::Apply(secret_ref(
                "implicit",
                json!({ "secrets": [{ "name": "a" }], "target": { "name": "elsewhere" } }),
            )),
        )
        .await
        .expect_err("setting a different target later is a rename");
    assert!(err.to_string().contains("spec.target.name"), "{err}");
    api.patch(
        "implicit",
        &params,
        &Patch::Apply(secret_ref(
            "implicit",
            json!({ "secrets": [{ "name": "a" }], "target": { "name": "implicit" } }),
        )),
    )
    .await
    .expect("spelling out the same name is not a change");
}

#[tokio::test]
async fn stores_need_exactly_one_provider() {
    let (client, ns) = setup("api-store").await;
    let store = |name: &str, provider: Value| {
        json!({
            "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretStore", "metadata": { "name": name },
            "spec": { "provider": provider }
        })
    };
    let err = create(&client, &ns.name, store("none", json!({})))
        .await
        .expect_err("V10: no provider");
    assert!(err.contains("spec.provider"), "{err}");
    let vault = |auth: Value| json!({ "server": "https://vault.example:8200", "auth": auth });
    let token = json!({ "secretRef": { "name": "vault-token", "key": "token" } });
    let err = create(
        &client,
        &ns.name,
        store(
            "two",
            json!({ "kubernetes": { "namespace": "a" }, "vault": vault(json!({ "token": token })) }),
        ),
    )
    .await
    .expect_err("V10: two providers");
    assert!(err.contains("exactly one provider"), "{err}");
    create(
        &client,
        &ns.name,
        store("vault", json!({ "vault": vault(json!({ "token": token })) })),
    )
    .await
    .expect("a vault store with token auth is valid");
    let app_role = json!({ "roleId": "r", "secretRef": { "name": "approle", "key": "secret-id" } });
    for (case, auth) in [
        ("no-auth", json!({})),
        ("two-auths", json!({ "token": token, "appRole": app_role })),
    ] {
        let err = create(&client, &ns.name, store(case, json!({ "vault": vault(auth) })))
            .await
            .expect_err(case);
        assert!(
            err.contains("spec.provider.vault.auth") && err.contains("exactly one auth method"),
            "{case}: {err}"
        );
    }
    let err = create(
        &client,
        &ns.name,
        store(
            "bad-server",
            json!({ "vault": { "server": "vault:8200", "auth": { "token": token } } }),
        ),
    )
    .await
    .expect_err("a server that is not a URL");
    assert!(err.contains("spec.provider.vault.server"), "{err}");
    let err = create(
        &client,
        &ns.name,
        json!({
            "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretStore", "metadata": { "name": "env" },
            "spec": { "defaultEnvironment": "-prod", "provider": { "kubernetes": { "namespace": "a" } } }
        }),
    )
    .await
    .expect_err("bad environment");
    assert!(err.contains("spec.defaultEnvironment"), "{err}");
}

#[test]
fn kubectl_explain_prints_the_field_docs() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async { install_crds(&client().await).await });
    // A new CRD reaches the published OpenAPI (what explain reads) a few seconds after it is
    // Established, so a fresh control plane needs a moment.
    let explain = |path: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = kubectl().args(["explain", path]).output().expect("kubectl runs");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    };
    let text = explain("secretref.spec.secrets");
    assert!(text.contains("later secret wins"), "{text}");
    assert!(text.contains("optional"), "{text}");
    let text = explain("sref.spec.target.creationPolicy");
    assert!(text.contains("refuse a Secret someone else made"), "{text}");
}

/// The local control plane's namespace controller really empties and removes a deleted
/// namespace, custom resources included (what every test's clean-up relies on).
#[tokio::test]
async fn a_deleted_namespace_is_emptied_and_removed() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    let (client, ns) = setup("nsdelete").await;
    let secret: Secret =
        serde_json::from_value(json!({ "metadata": { "name": "s" }, "stringData": { "A": "b" } })).expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&Default::default(), &secret)
        .await
        .expect("secret created");
    create(
        &client,
        &ns.name,
        secret_ref("sr", json!({ "secrets": [{ "name": "db" }] })),
    )
    .await
    .expect("secretref created");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns.name, &Default::default())
        .await
        .expect("namespace deleted");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while namespaces.get_opt(&ns.name).await.expect("namespace read").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "namespace {} still exists 60 s after its deletion",
            ns.name
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn cluster_secret_ref(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": "ClusterSecretRef", "metadata": { "name": name }, "spec": spec })
}

/// ClusterSecretRefs: the README example is valid; the template goes through SecretRef's rules.
#[tokio::test]
async fn cluster_secretrefs_are_validated_like_secretrefs() {
    let (client, ns) = setup("api-csref").await;
    let name = |case: &str| format!("{}-{case}", ns.name);
    let template = json!({ "metadata": { "name": "registry-creds" },
                           "spec": { "secrets": [ { "name": "registry" } ], "target": { "type": "kubernetes.io/dockerconfigjson" } } });
    let valid = cluster_secret_ref(
        &name("ok"),
        json!({ "namespaceSelector": { "matchLabels": { "team": "shop" } }, "namespaces": ["team-*"], "template": template }),
    );
    create(&client, &ns.name, valid)
        .await
        .expect("the README ClusterSecretRef is valid");
    Api::<DynamicObject>::all_with(client.clone(), &resource("ClusterSecretRef"))
        .delete(&name("ok"), &Default::default())
        .await
        .expect("clean up");
    let spec = |secrets: Value, extra: Value| {
        let mut template = json!({ "spec": { "secrets": secrets } });
        if let (Some(t), Some(e)) = (template["spec"].as_object_mut(), extra.as_object()) {
            t.extend(e.clone());
        }
        json!({ "namespaces": ["team-*"], "template": template })
    };
    let ok = || json!([{ "name": "a" }]);
    for (case, spec, field) in [
        (
            "no-selection",
            json!({ "template": { "spec": { "secrets": ok() } } }),
            "spec.namespaces",
        ),
        (
            "glob",
            json!({ "namespaces": ["Team/*"], "template": { "spec": { "secrets": ok() } } }),
            "spec.namespaces[0]",
        ),
        ("v1", spec(json!([]), json!({})), "spec.template.spec.secrets"),
        (
            "v2",
            spec(json!([{ "name": "a b" }]), json!({})),
            "spec.template.spec.secrets[0].name",
        ),
        (
            "v3",
            spec(ok(), json!({ "requiredKeys": ["1A"] })),
            "spec.template.spec.requiredKeys[0]",
        ),
        (
            "v7",
            spec(ok(), json!({ "refreshInterval": "soon" })),
            "spec.template.spec.refreshInterval",
        ),
        (
            "v8",
            spec(
                ok(),
                json!({ "files": [ { "key": "a", "format": "json", "template": "x" } ] }),
            ),
            "spec.template.spec.files[0].template",
        ),
        (
            "name",
            json!({ "namespaces": ["a"], "template": { "metadata": { "name": "Bad_Name" }, "spec": { "secrets": ok() } } }),
            "spec.template.metadata.name",
        ),
    ] {
        let err = create(&client, &ns.name, cluster_secret_ref(&name(case), spec))
            .await
            .expect_err(&format!("{case}: the API server accepted an invalid ClusterSecretRef"));
        assert!(err.contains(field), "{case}: message does not name {field}: {err}");
    }
}

/// Every form users type with the pinned kubectl: the kinds' singular, plural and short names
/// resolve to one resource, and the category lists all of them.
#[tokio::test]
async fn kubectl_resolves_every_name_users_type() {
    let (client, ns) = setup("api-kubectl").await;
    create(
        &client,
        &ns.name,
        secret_ref("web", json!({ "secrets": [{ "name": "a" }] })),
    )
    .await
    .expect("secretref");
    // A discovery cache of its own: kubectl keeps one for minutes, and an earlier run of the
    // suite may have cached these CRDs as they were before.
    let cache = support::repo_root().join(format!("target/kubectl-cache-{}", ns.name));
    let run = |args: &[&str]| {
        let out = kubectl()
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let n = ns.name.as_str();
    assert!(run(&["get", "secretref", "web", "-n", n]).contains("web"));
    assert!(run(&["get", "secretrefs", "web", "-n", n]).contains("web"));
    assert!(run(&["get", "sref", "-n", n]).contains("web"));
    assert!(run(&["get", "secretrefs", "-A"]).contains(n));
    assert!(run(&["describe", "secretref", "web", "-n", n]).contains("Name:"));
    run(&[
        "patch",
        "secretref",
        "web",
        "-n",
        n,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    assert!(run(&["get", "secretref-all", "-n", n]).contains("secretref.secretref.dev/web"));
    run(&["get", "csref"]); // the ClusterSecretRef short name resolves (run checks the exit code)
    run(&["delete", "secretref", "web", "-n", n]);
    assert!(!run(&["get", "secretrefs", "-n", n]).contains("web"));
}
