//! The API server's own checks of the `aws` provider fields.

use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, PostParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};

use crate::support::{TestNamespace, client, install_crds};

async fn create(client: &kube::Client, ns: &str, kind: &str, name: &str, spec: Value) -> Result<(), String> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("secretref.dev", "v1alpha1", kind));
    let api: Api<DynamicObject> = if kind == "ClusterSecretStore" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    };
    let obj: DynamicObject = serde_json::from_value(
        json!({ "apiVersion": "secretref.dev/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec }),
    )
    .expect("object");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&params, &obj).await.map(drop).map_err(|e| e.to_string())
}

#[tokio::test]
async fn aws_provider_fields_are_validated_by_the_api_server() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "aws-api").await;
    let n = ns.name.as_str();
    let aws = json!({ "region": "eu-west-1" });
    create(&client, n, "SecretStore", "ok", json!({ "provider": { "aws": aws } }))
        .await
        .expect("region alone is enough (prefix defaults)");
    create(
        &client,
        n,
        "SecretStore",
        "full",
        json!({ "provider": { "aws": { "region": "eu-west-1", "prefix": "team/a", "endpoint": "https://vpce.example:443",
            "auth": { "secretRef": { "name": "aws-creds" }, "roleArn": "arn:aws:iam::123456789012:role/reader" } } } }),
    )
    .await
    .expect("the issue's example");

    let rejected = [
        (
            "two providers",
            "SecretStore",
            json!({ "provider": { "aws": aws, "kubernetes": { "namespace": "x" } } }),
            "exactly one provider",
        ),
        (
            "empty auth",
            "SecretStore",
            json!({ "provider": { "aws": { "region": "eu-west-1", "auth": {} } } }),
            "auth needs secretRef, roleArn or both",
        ),
        (
            "bad region",
            "SecretStore",
            json!({ "provider": { "aws": { "region": "Europe" } } }),
            "region",
        ),
        (
            "bad prefix",
            "SecretStore",
            json!({ "provider": { "aws": { "region": "eu-west-1", "prefix": "/lead" } } }),
            "prefix",
        ),
        (
            "bad role",
            "SecretStore",
            json!({ "provider": { "aws": { "region": "eu-west-1", "auth": { "roleArn": "reader" } } } }),
            "roleArn",
        ),
        (
            "cluster store without namespace",
            "ClusterSecretStore",
            json!({ "provider": { "aws": { "region": "eu-west-1", "auth": { "secretRef": { "name": "c" } } } } }),
            "provider.aws.auth.secretRef.namespace is required",
        ),
    ];
    for (case, kind, spec, needle) in rejected {
        let err = create(&client, n, kind, &format!("bad-{n}"), spec)
            .await
            .expect_err(case);
        assert!(err.contains(needle), "{case}: {err}");
    }
}
