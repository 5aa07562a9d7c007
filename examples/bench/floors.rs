//! The floors a cold sync and a fan-out are judged against, measured by a raw client in the
//! same run and at the same concurrency as the operators, with no operator running:
//! - `limit.min_writes_per_s`: per object, the three writes a cold sync cannot avoid (create
//!   the SecretRef, create its target Secret, merge-patch the SecretRef's status), objects
//!   per second;
//! - `limit.fanout_apply_s`: seconds to server-side apply a new value to the M targets of one
//!   store secret (the median of the same number of rounds as the propagation measurement);
//! - `limit.fanout_apply_p99_s`: the 99th percentile of when each of those applies returned
//!   (from its round's start, all rounds pooled), taken as the propagation's p99 is: the
//!   like-for-like floor of that p99, which the API server's slowest round sets for both.

use std::{collections::BTreeMap, time::Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use secretref::{
    api::SecretRef,
    desired::{DATA_HASH_ANNOTATION, target_labels},
};

use crate::{Args, cluster, measure, report::RequestCost, secretref::spec};

const NS: &str = "bench-floor";

#[derive(Debug, Default, Clone)]
pub struct Floors {
    pub min_writes_per_s: f64,
    pub fanout_apply_s: f64,
    /// Each round's seconds (one store secret's M targets per round).
    pub fanout_apply_rounds_s: Vec<f64>,
    /// p99 of each apply's return from its round's start, the rounds pooled.
    pub fanout_apply_p99_s: f64,
    /// The API server's requests for the `min_writes_per_s` objects, per object, and its
    /// seconds serving them: the like-for-like of the operators' `cold_sync_requests_per_object`.
    pub min_writes_requests_per_object: BTreeMap<String, RequestCost>,
}

/// The target Secret the operator would write for SecretRef `name` (same labels, annotation,
/// owner and keys), with `round` in its values.
fn target(name: &str, uid: &str, store_index: usize, round: usize) -> serde_json::Value {
    let data: serde_json::Map<String, serde_json::Value> = cluster::store_data(store_index, round)
        .iter()
        .map(|(k, v)| (k.clone(), data_encoding::BASE64.encode(v.expose().as_bytes()).into()))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": target_labels(name),
            "annotations": { DATA_HASH_ANNOTATION: format!("floor-{store_index}-{round}") },
            "ownerReferences": [{
                "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "type": "Opaque",
        "data": data
    })
}

/// Measures both floors (and removes what it created).
pub async fn measure(client: &Client, args: &Args) -> anyhow::Result<Floors> {
    let (min_writes_per_s, min_writes_requests_per_object, uids) = min_writes(client, args).await?;
    let (fanout_apply_s, fanout_apply_rounds_s, fanout_apply_p99_s) = fanout(client, args, &uids).await?;
    cluster::delete_namespace_and_wait(client, NS).await?;
    Ok(Floors {
        min_writes_per_s,
        fanout_apply_s,
        fanout_apply_rounds_s,
        fanout_apply_p99_s,
        min_writes_requests_per_object,
    })
}

/// The cold-sync floor alone, taken again after the operators ran (`--growth`): the same raw
/// writes on an API server and etcd that have by then served them all, which tells a slower
/// operator from a slower cluster.
pub async fn min_writes_again(client: &Client, args: &Args) -> anyhow::Result<f64> {
    let (per_s, _, _) = min_writes(client, args).await?;
    cluster::delete_namespace_and_wait(client, NS).await?;
    Ok(per_s)
}

type Costs = BTreeMap<String, RequestCost>;

/// `limit.min_writes_per_s`, what each object cost, and the SecretRefs' uids by index (the
/// fan-out's targets are owned by them). Leaves the objects in place.
async fn min_writes(client: &Client, args: &Args) -> anyhow::Result<(f64, Costs, Vec<String>)> {
    cluster::namespace(client, NS).await?;
    let refs: Api<SecretRef> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let uids = std::sync::Mutex::new(vec![String::new(); args.refs]);
    let requests_before = cluster::apiserver_requests(client).await?;
    let took = cluster::create_all(args.refs, args.concurrency, |i| {
        let (refs, secrets, uids) = (refs.clone(), secrets.clone(), &uids);
        async move {
            let name = format!("sr-{i}");
            let sr: SecretRef = serde_json::from_value(serde_json::json!({
                "apiVersion": "secretref.dev/v1alpha1", "kind": "SecretRef",
                "metadata": { "name": name }, "spec": spec(args, i)
            }))?;
            let created = refs.create(&PostParams::default(), &sr).await?;
            let uid = created.uid().unwrap_or_default();
            let secret: Secret = serde_json::from_value(target(&name, &uid, i % args.store_secrets, 0))?;
            secrets.create(&PostParams::default(), &secret).await?;
            let status = serde_json::json!({ "status": {
                "observedGeneration": 1,
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Synced", "observedGeneration": 1,
                    "message": format!("Secret {name:?} holds 3 keys from 1 secret of bench (environment \"main\")"),
                    "lastTransitionTime": jiff::Timestamp::now().to_string()
                }],
                "dataHash": format!("floor-{}-0", i % args.store_secrets),
                "lastSyncTime": jiff::Timestamp::now().to_string()
            }});
            refs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
            if let Ok(mut u) = uids.lock()
                && let Some(slot) = u.get_mut(i)
            {
                *slot = uid;
            }
            Ok(())
        }
    })
    .await?;
    let min_writes_per_s = args.refs as f64 / took.as_secs_f64();
    let costs = RequestCost::per_object(&requests_before, &cluster::apiserver_requests(client).await?, args.refs);
    eprintln!("bench: floor: {min_writes_per_s:.0} objects/s with their 3 unavoidable writes each");
    Ok((
        min_writes_per_s,
        costs,
        uids.into_inner().unwrap_or_else(|p| p.into_inner()),
    ))
}

/// `limit.fanout_apply_s`, its rounds and `limit.fanout_apply_p99_s`, on the targets
/// [`min_writes`] left.
async fn fanout(client: &Client, args: &Args, uids: &[String]) -> anyhow::Result<(f64, Vec<f64>, f64)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let (mut rounds, done) = (Vec::new(), std::sync::Mutex::new(Vec::new()));
    for round in 0..args.store_secrets.min(5) {
        let members: Vec<usize> = (0..args.refs).filter(|i| i % args.store_secrets == round).collect();
        let requests_before = cluster::apiserver_requests(client).await?;
        let runtime_before = cluster::ApiserverRuntime::now(client).await?;
        let profile = measure::apiserver_profile(
            client,
            args,
            &format!("floor-round{round}-apiserver.pprof"),
            measure::ROUND_PROFILE_SECONDS,
        );
        let started = Instant::now();
        cluster::create_all(members.len(), args.concurrency, |k| {
            let (secrets, i, done) = (secrets.clone(), members[k], &done);
            let uid = uids.get(i).cloned().unwrap_or_default();
            async move {
                let name = format!("sr-{i}");
                let value = target(&name, &uid, round, round + 1);
                secrets
                    .patch(&name, &PatchParams::apply("secretref").force(), &Patch::Apply(&value))
                    .await?;
                let returned = started.elapsed().as_secs_f64();
                done.lock().unwrap_or_else(|p| p.into_inner()).push(returned);
                Ok(())
            }
        })
        .await?;
        rounds.push(started.elapsed().as_secs_f64());
        let runtime = cluster::ApiserverRuntime::now(client).await?.since(&runtime_before);
        let requests = cluster::requests_between(&requests_before, &cluster::apiserver_requests(client).await?);
        eprintln!(
            "bench: floor round {round}'s API requests: {}; {runtime}",
            requests.join(", ")
        );
        if let Some(profile) = profile {
            let _ = profile.await;
        }
    }
    let fanout_apply_s = cluster::percentile(&mut rounds.clone(), 0.5);
    let fanout_apply_p99_s = cluster::percentile(&mut done.into_inner().unwrap_or_else(|p| p.into_inner()), 0.99);
    eprintln!(
        "bench: floor: {fanout_apply_s:.2} s to apply a new value to the {} targets of one store secret \
         (rounds {rounds:.2?}; p99 of the applies {fanout_apply_p99_s:.2} s)",
        args.refs.div_ceil(args.store_secrets)
    );
    Ok((fanout_apply_s, rounds, fanout_apply_p99_s))
}
