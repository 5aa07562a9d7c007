//! Store secrets are watched only in the namespaces that stores name: a Secret dressed up as a
//! store secret anywhere else wakes nothing and is never read.

use std::time::Duration;

use secretref::{backend::SecretBackend, backend::kubernetes::KubernetesBackend, model::secret_data};
use serde_json::json;

use crate::{fixture::Fixture, support::metric_sum};

#[tokio::test]
async fn a_labelled_secret_outside_the_store_namespaces_wakes_nothing() {
    let f = Fixture::new("watch").await;
    f.put("main", "db", &[("DB_URL", "store-value")]).await;
    f.apply(
        "SecretRef",
        "app",
        json!({ "secrets": [ { "name": "db" } ], "refreshInterval": "0s" }),
    )
    .await;
    f.wait_target("app", &[("DB_URL", "store-value")]).await;
    let operator = f.operator.as_ref().expect("operator");
    let reconciles = || async {
        metric_sum(
            &operator.metrics().await,
            "secretref_reconciles_total",
            &["kind=\"SecretRef\""],
        )
    };
    // Settle: the first sync's own writes come back through the watches once.
    let mut before = reconciles().await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = reconciles().await;
        if now == before {
            break;
        }
        before = now;
    }
    assert!(before >= 1.0, "the metrics are served:\n{}", operator.metrics().await);

    // A tenant's impostor: the store label, annotations and object name of the real store
    // secret, but in the tenant's own namespace. Created, then changed.
    let impostor = KubernetesBackend::new(f.client.clone(), f.ns());
    impostor
        .replace("main", "db", secret_data(&[("DB_URL", "tenant-value")]))
        .await
        .expect("impostor");
    impostor
        .replace("main", "db", secret_data(&[("DB_URL", "tenant-value-2")]))
        .await
        .expect("impostor changed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        reconciles().await,
        before,
        "a Secret outside the store namespace woke a SecretRef"
    );
    assert_eq!(
        f.target("app").await.expect("target").get("DB_URL").map(String::as_str),
        Some("store-value")
    );

    // The same change in the real store namespace does wake it.
    f.put("main", "db", &[("DB_URL", "rotated")]).await;
    f.wait_target("app", &[("DB_URL", "rotated")]).await;
    assert!(reconciles().await > before);
}
