//! `secretref secret ...` and `secretref env ...`: manage Modal-style secrets through the same
//! backend trait the operator reads with.

use std::io::IsTerminal;

use anyhow::{anyhow, bail};
use kube::ResourceExt;

use super::{
    EnvCommand, SecretCommand, Target, input,
    status::{Row, users_of},
    store::{Connected, connect},
};
use crate::{
    backend::{BackendError, SecretSummary},
    model::{is_environment_name, is_secret_name},
};

pub async fn run(command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Create {
            name,
            assignments,
            from_env,
            from_dotenv,
            from_json,
            force,
            target,
        } => {
            check_name(&name)?;
            check_environment(&target)?;
            // Parse everything before touching the cluster: all or nothing.
            let environment = input::from_env(&from_env, |k| std::env::var_os(k))?;
            let data = input::collect(
                &assignments,
                environment,
                from_dotenv.as_deref(),
                from_json.as_deref(),
                &mut input::Stdin::default(),
            )?;
            let c = connect_to(&target).await?;
            let (store, env) = (&c.label, &c.environment);
            let keys = data.len();
            if force {
                c.backend.replace(env, &name, data).await?;
            } else {
                c.backend.create(env, &name, data).await.map_err(|e| match e {
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
        SecretCommand::List {
            json,
            all_environments,
            target,
        } => {
            check_environment(&target)?;
            let c = connect_to(&target).await?;
            let environment = (!all_environments).then_some(c.environment.as_str());
            let secrets = c.backend.list(environment).await?;
            print_list(&secrets, json)?;
        }
        SecretCommand::Describe { name, target } => {
            check_name(&name)?;
            check_environment(&target)?;
            let c = connect_to(&target).await?;
            let (store, env) = (&c.label, &c.environment);
            let secret = c
                .backend
                .get(env, &name)
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
            match users(&c, &name).await {
                None => println!("Used by:     (SecretRefs cannot be listed with these credentials)"),
                Some(users) if users.is_empty() => println!("Used by:     no SecretRef"),
                Some(users) => {
                    println!("Used by ({}):", users.len());
                    for u in users {
                        println!(
                            "  {}/{}  Ready={} {}  target {}",
                            u.namespace, u.name, u.ready, u.reason, u.target
                        );
                    }
                }
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
            let c = connect_to(&target).await?;
            let (store, env) = (&c.label, &c.environment);
            if c.backend.get(env, &name).await?.is_none() {
                if allow_missing {
                    println!("Secret {name:?} does not exist in environment {env:?}; nothing to delete");
                    return Ok(());
                }
                bail!("secret {name:?} not found in environment {env:?} of {store} (use --allow-missing to ignore)");
            }
            match users(&c, &name).await {
                None => eprintln!("warning: cannot list SecretRefs to check who uses this secret"),
                Some(users) if users.is_empty() => {}
                Some(users) => {
                    eprintln!("Secret {name:?} is used by these SecretRefs (they will fail with SecretNotFound):");
                    for u in &users {
                        eprintln!("  {}/{}", u.namespace, u.name);
                    }
                }
            }
            if !yes && !confirm(&format!("Delete secret {name:?} from environment {env:?} of {store}?"))? {
                bail!("not deleted");
            }
            c.backend.delete(env, &name).await?;
            println!("Deleted secret {name:?} from environment {env:?} of {store}");
        }
    }
    Ok(())
}

pub async fn run_env(command: EnvCommand) -> anyhow::Result<()> {
    match command {
        EnvCommand::List { store, json } => {
            let c = connect(store.as_deref(), None).await?;
            let mut counts = std::collections::BTreeMap::<String, usize>::new();
            for s in c.backend.list(None).await? {
                *counts.entry(s.environment).or_default() += 1;
            }
            if json {
                let rows: Vec<serde_json::Value> = counts
                    .iter()
                    .map(|(e, n)| serde_json::json!({ "environment": e, "secrets": n, "default": *e == c.environment }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            if counts.is_empty() {
                eprintln!("No secrets in {} yet.", c.label);
                return Ok(());
            }
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::NOTHING)
                .set_header(["ENVIRONMENT", "SECRETS", "DEFAULT"]);
            for (environment, n) in &counts {
                let default = if *environment == c.environment { "yes" } else { "" };
                table.add_row([environment.clone(), n.to_string(), default.to_string()]);
            }
            println!("{table}");
        }
    }
    Ok(())
}

async fn connect_to(target: &Target) -> anyhow::Result<Connected> {
    connect(target.store.as_deref(), target.environment.as_deref()).await
}

async fn users(c: &Connected, secret: &str) -> Option<Vec<Row>> {
    users_of(
        &c.client,
        &c.store.name_any(),
        &c.store.spec.default_environment,
        &c.environment,
        secret,
    )
    .await
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
