//! `secretref secret ...`: manages Modal-style secrets through the same backend trait the
//! operator reads with.

use std::{io::IsTerminal, sync::Arc};

use anyhow::{Context as _, anyhow, bail};
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::{SecretCommand, Target, input};
use crate::{
    api::{ClusterSecretStore, SecretRef, StoreKind},
    backend::{BackendError, BuildContext, SecretBackend, SecretSummary, for_provider},
    model::{is_environment_name, is_secret_name},
};

pub async fn run(command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Create {
            name,
            assignments,
            from_dotenv,
            from_json,
            force,
            target,
        } => {
            check_name(&name)?;
            check_environment(&target)?;
            // Parse everything before touching the cluster: all or nothing.
            let data = input::collect(
                &assignments,
                from_dotenv.as_deref(),
                from_json.as_deref(),
                &mut input::Stdin::default(),
            )?;
            let (store, backend, env) = connect(&target).await?;
            let keys = data.len();
            if force {
                backend.replace(&env, &name, data).await?;
            } else {
                backend.create(&env, &name, data).await.map_err(|e| match e {
                    BackendError::AlreadyExists { .. } => anyhow!("{e} (use --force to replace it)"),
                    e => e.into(),
                })?;
            }
            println!(
                "{} secret {name:?} with {keys} key{} in environment {env:?} of {store}",
                if force { "Saved" } else { "Created" },
                if keys == 1 { "" } else { "s" }
            );
        }
        SecretCommand::List { json, target } => {
            check_environment(&target)?;
            let (_, backend, _) = connect(&target).await?;
            let secrets = backend.list(target.environment.as_deref()).await?;
            print_list(&secrets, json)?;
        }
        SecretCommand::Describe { name, target } => {
            check_name(&name)?;
            check_environment(&target)?;
            let (store, backend, env) = connect(&target).await?;
            let secret = backend
                .get(&env, &name)
                .await?
                .ok_or_else(|| anyhow!("secret {name:?} not found in environment {env:?} of {store}"))?;
            println!(
                "Name:        {}\nEnvironment: {}\nStore:       {store}\nVersion:     {}",
                secret.name, secret.environment, secret.version
            );
            println!(
                "Created:     {}\nUpdated:     {}",
                show_time(secret.created),
                show_time(secret.updated)
            );
            println!("Keys ({}):", secret.data.len());
            for key in secret.data.keys() {
                println!("  {key}");
            }
        }
        SecretCommand::Delete {
            name,
            allow_missing,
            yes,
            target,
        } => {
            check_name(&name)?;
            check_environment(&target)?;
            let (store, backend, env) = connect(&target).await?;
            if backend.get(&env, &name).await?.is_none() {
                if allow_missing {
                    println!("Secret {name:?} does not exist in environment {env:?}; nothing to delete");
                    return Ok(());
                }
                bail!("secret {name:?} not found in environment {env:?} of {store} (use --allow-missing to ignore)");
            }
            let users = referencing(&store_name(&store), &name).await?;
            if !users.is_empty() {
                eprintln!("Secret {name:?} is used by these SecretRefs (they will fail with SecretNotFound):");
                for u in &users {
                    eprintln!("  {u}");
                }
            }
            if !yes && !confirm(&format!("Delete secret {name:?} from environment {env:?} of {store}?"))? {
                bail!("not deleted");
            }
            backend.delete(&env, &name).await?;
            println!("Deleted secret {name:?} from environment {env:?} of {store}");
        }
    }
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if !is_secret_name(name) {
        bail!("invalid secret name {name:?}: use 1-64 characters of [A-Za-z0-9._-]");
    }
    Ok(())
}

fn check_environment(target: &Target) -> anyhow::Result<()> {
    match &target.environment {
        Some(env) if !is_environment_name(env) => {
            bail!("invalid environment {env:?}: use 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit")
        }
        _ => Ok(()),
    }
}

/// Finds the store (named, or the oldest default) and its backend and environment.
async fn connect(target: &Target) -> anyhow::Result<(String, Arc<dyn SecretBackend>, String)> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (is KUBECONFIG set?)")?;
    let api: Api<ClusterSecretStore> = Api::all(client.clone());
    let store = match &target.store {
        Some(name) => api
            .get_opt(name)
            .await
            .with_context(|| format!("reading ClusterSecretStore {name:?}"))?
            .ok_or_else(|| anyhow!("ClusterSecretStore {name:?} not found"))?,
        None => {
            let mut defaults: Vec<ClusterSecretStore> = api
                .list(&ListParams::default())
                .await
                .context("listing ClusterSecretStores")?
                .items;
            defaults.retain(|s| s.spec.default);
            defaults.sort_by_key(|s| (s.creation_timestamp(), s.name_any()));
            defaults
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no default ClusterSecretStore: pass --store NAME"))?
        }
    };
    let label = format!("ClusterSecretStore/{}", store.name_any());
    let backend = for_provider(&BuildContext::new(client, None, None), &store.spec.provider).await?;
    let env = target
        .environment
        .clone()
        .unwrap_or_else(|| store.spec.default_environment.clone());
    Ok((label, backend, env))
}

fn store_name(label: &str) -> String {
    label.rsplit('/').next().unwrap_or(label).to_string()
}

/// SecretRefs (in namespaces this identity may list) that name `secret` and may resolve to
/// the ClusterSecretStore `store`: naming it, or naming no store at all.
async fn referencing(store: &str, secret: &str) -> anyhow::Result<Vec<String>> {
    let client = Client::try_default().await?;
    let api: Api<SecretRef> = Api::all(client);
    let Ok(list) = api.list(&ListParams::default()).await else {
        eprintln!("warning: cannot list SecretRefs to check who uses this secret");
        return Ok(Vec::new());
    };
    Ok(list
        .items
        .iter()
        .filter(|sr| sr.spec.secrets.iter().any(|s| s.name == secret))
        .filter(|sr| match &sr.spec.store_ref {
            None => true,
            Some(r) => r.kind == StoreKind::ClusterSecretStore && r.name == store,
        })
        .map(|sr| format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any()))
        .collect())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to delete without confirmation: stdin is not a terminal, pass -y");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn show_time(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(|| "-".to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
}

fn print_list(secrets: &[SecretSummary], json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = secrets
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "environment": s.environment, "keys": s.keys.len(),
                    "created": s.created.map(|t| t.to_string()), "updated": s.updated.map(|t| t.to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(["NAME", "ENVIRONMENT", "KEYS", "CREATED", "UPDATED"]);
    for s in secrets {
        table.add_row([
            s.name.clone(),
            s.environment.clone(),
            s.keys.len().to_string(),
            show_time(s.created),
            show_time(s.updated),
        ]);
    }
    println!("{table}");
    Ok(())
}
