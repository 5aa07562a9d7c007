//! `secretref status`: what is synced where, from the SecretRefs' and ClusterSecretRefs' own
//! status; and the SecretRefs that use one secret (`secret describe`, `secret delete`), so a
//! rotation's reach is visible before it happens.

use anyhow::Context as _;
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::Serialize;

use super::{Output, StatusArgs, store};
use crate::api::{ClusterSecretRef, SecretRef, StoreKind, condition::find_ready};

/// One line of `status`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: &'static str,
    /// Empty for a ClusterSecretRef.
    pub namespace: String,
    pub name: String,
    /// `True`, `False` or `Unknown` (not synced yet).
    pub ready: String,
    pub reason: String,
    pub target: String,
    pub keys: Option<u32>,
    pub last_sync: Option<String>,
    pub store: Option<String>,
    pub environment: Option<String>,
    pub message: String,
}

impl Row {
    pub fn of_secretref(sr: &SecretRef) -> Row {
        let status = sr.status.as_ref();
        let ready = status.and_then(|s| find_ready(&s.conditions));
        Row {
            kind: "SecretRef",
            namespace: sr.namespace().unwrap_or_default(),
            name: sr.name_any(),
            ready: ready.map_or("Unknown".into(), |c| c.status.clone()),
            reason: ready.map_or_else(String::new, |c| c.reason.clone()),
            target: sr.target_name(),
            keys: status.and_then(|s| s.key_count),
            last_sync: status.and_then(|s| s.last_sync_time.as_ref()).map(|t| t.0.to_string()),
            store: status.and_then(|s| s.store.clone()),
            environment: status.and_then(|s| s.environment.clone()),
            message: ready.map_or_else(String::new, |c| c.message.clone()),
        }
    }

    fn of_cluster_secretref(csr: &ClusterSecretRef) -> Row {
        let status = csr.status.as_ref();
        let ready = status.and_then(|s| find_ready(&s.conditions));
        let spec = &csr.spec.template.spec;
        Row {
            kind: "ClusterSecretRef",
            namespace: String::new(),
            name: csr.name_any(),
            ready: ready.map_or("Unknown".into(), |c| c.status.clone()),
            reason: ready.map_or_else(String::new, |c| c.reason.clone()),
            target: spec.target.name.clone().unwrap_or_else(|| csr.secretref_name()),
            keys: None,
            last_sync: None,
            store: spec.store_ref.as_ref().map(|r| format!("{:?}/{}", r.kind, r.name)),
            environment: spec.environment.clone(),
            message: ready.map_or_else(String::new, |c| c.message.clone()),
        }
    }
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = store::client().await?;
    let (secretrefs, cluster): (Api<SecretRef>, bool) = match (&args.namespace, args.all_namespaces) {
        (_, true) => (Api::all(client.clone()), true),
        (Some(ns), false) => (Api::namespaced(client.clone(), ns), false),
        (None, false) => (Api::default_namespaced(client.clone()), false),
    };
    let mut rows: Vec<Row> = secretrefs
        .list(&ListParams::default())
        .await
        .context("listing SecretRefs")?
        .items
        .iter()
        .map(Row::of_secretref)
        .collect();
    if cluster {
        let csrs: Api<ClusterSecretRef> = Api::all(client.clone());
        rows.extend(
            csrs.list(&ListParams::default())
                .await
                .context("listing ClusterSecretRefs")?
                .items
                .iter()
                .map(Row::of_cluster_secretref),
        );
    }
    rows.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    print(&rows, args.output)
}

/// Prints rows as a table (no messages: `-o json|yaml` has them), JSON or YAML.
pub fn print(rows: &[Row], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&rows)?),
        Output::Table => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING).set_header([
                "KIND",
                "NAMESPACE",
                "NAME",
                "READY",
                "REASON",
                "TARGET",
                "KEYS",
                "LAST SYNC",
                "STORE",
                "ENVIRONMENT",
            ]);
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for r in rows {
                table.add_row([
                    r.kind.to_string(),
                    if r.namespace.is_empty() {
                        "-".into()
                    } else {
                        r.namespace.clone()
                    },
                    r.name.clone(),
                    r.ready.clone(),
                    r.reason.clone(),
                    r.target.clone(),
                    or_dash(r.keys.map(|k| k.to_string())),
                    or_dash(r.last_sync.clone()),
                    or_dash(r.store.clone()),
                    or_dash(r.environment.clone()),
                ]);
            }
            if rows.is_empty() {
                eprintln!("No SecretRefs found.");
            } else {
                println!("{table}");
            }
        }
    }
    Ok(())
}

/// The SecretRefs (in namespaces this identity may list) that read `secret` in `environment`
/// of the ClusterSecretStore `store`: they name it, or name no store (and may resolve to it
/// as the default), and ask for that environment (or none, when it is the store's default).
/// `None` when SecretRefs cannot be listed.
pub async fn users_of(
    client: &Client,
    store: &str,
    default_environment: &str,
    environment: &str,
    secret: &str,
) -> Option<Vec<Row>> {
    let api: Api<SecretRef> = Api::all(client.clone());
    let list = api.list(&ListParams::default()).await.ok()?;
    let label = format!("ClusterSecretStore/{store}");
    // What the last sync resolved is the truth; before any sync, the spec says what may be.
    let reads_store = |sr: &SecretRef| match sr.status.as_ref().and_then(|s| s.store.as_deref()) {
        Some(resolved) => resolved == label,
        None => sr
            .spec
            .store_ref
            .as_ref()
            .is_none_or(|r| r.kind == StoreKind::ClusterSecretStore && r.name == store),
    };
    let reads_environment = |sr: &SecretRef| match sr.status.as_ref().and_then(|s| s.environment.as_deref()) {
        Some(resolved) => resolved == environment,
        None => sr.spec.environment.as_deref().unwrap_or(default_environment) == environment,
    };
    Some(
        list.items
            .iter()
            .filter(|sr| sr.spec.secrets.iter().any(|s| s.name == secret))
            .filter(|sr| reads_store(sr) && reads_environment(sr))
            .map(Row::of_secretref)
            .collect(),
    )
}
