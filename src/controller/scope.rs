//! What the operator watches: every namespace, or a list of them (a namespace-scoped install,
//! whose RBAC grants nothing across namespaces). A list is watched namespace by namespace and
//! merged into one stream that a reflector can follow: one initial list once every namespace
//! has listed, plain changes after, and, when one namespace re-lists, deletions for what
//! disappeared from it meanwhile.

use std::{collections::HashMap, fmt::Debug};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;

type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Watches `K` in every namespace (`namespaces` empty) or in each of `namespaces`.
pub fn watch<K>(client: &Client, namespaces: &[String], config: watcher::Config) -> Events<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match namespaces {
        [] => watcher(Api::<K>::all(client.clone()), config).default_backoff().boxed(),
        [one] => watcher(Api::<K>::namespaced(client.clone(), one), config)
            .default_backoff()
            .boxed(),
        many => {
            let streams = many.iter().enumerate().map(|(i, ns)| {
                watcher(Api::<K>::namespaced(client.clone(), ns), config.clone())
                    .default_backoff()
                    .map(move |event| (i, event))
                    .boxed()
            });
            let mut merge = Merge::new(many.len());
            futures::stream::select_all(streams)
                .flat_map(move |(i, event)| futures::stream::iter(merge.on(i, event)))
                .boxed()
        }
    }
}

/// The merge of several namespaces' watches.
struct Merge<K> {
    /// What each namespace holds, by name.
    known: Vec<HashMap<String, K>>,
    /// A namespace's list in progress.
    listing: Vec<Option<HashMap<String, K>>>,
    listed: Vec<bool>,
    /// Whether the merged initial list has been sent.
    started: bool,
}

impl<K: Resource + Clone> Merge<K> {
    fn new(n: usize) -> Self {
        Merge {
            known: (0..n).map(|_| HashMap::new()).collect(),
            listing: (0..n).map(|_| None).collect(),
            listed: vec![false; n],
            started: false,
        }
    }

    fn on(
        &mut self,
        i: usize,
        event: Result<watcher::Event<K>, watcher::Error>,
    ) -> Vec<Result<watcher::Event<K>, watcher::Error>> {
        use watcher::Event::*;
        let event = match event {
            Ok(e) => e,
            Err(e) => return vec![Err(e)],
        };
        match event {
            Init => {
                self.listing[i] = Some(HashMap::new());
                Vec::new()
            }
            InitApply(obj) => {
                if let Some(listing) = self.listing[i].as_mut() {
                    listing.insert(obj.name_any(), obj.clone());
                }
                if self.started { vec![Ok(Apply(obj))] } else { Vec::new() }
            }
            InitDone => {
                let listing = self.listing[i].take().unwrap_or_default();
                let gone: Vec<K> = self.known[i]
                    .iter()
                    .filter(|(name, _)| !listing.contains_key(*name))
                    .map(|(_, obj)| obj.clone())
                    .collect();
                self.known[i] = listing;
                self.listed[i] = true;
                if self.started {
                    gone.into_iter().map(|obj| Ok(Delete(obj))).collect()
                } else if self.listed.iter().all(|l| *l) {
                    // Every namespace has listed: one initial list of all of them.
                    self.started = true;
                    let objects = self.known.iter().flat_map(|m| m.values().cloned());
                    std::iter::once(Ok(Init))
                        .chain(objects.map(|obj| Ok(InitApply(obj))))
                        .chain(std::iter::once(Ok(InitDone)))
                        .collect()
                } else {
                    Vec::new()
                }
            }
            Apply(obj) => {
                self.known[i].insert(obj.name_any(), obj.clone());
                if self.started { vec![Ok(Apply(obj))] } else { Vec::new() }
            }
            Delete(obj) => {
                self.known[i].remove(&obj.name_any());
                if self.started {
                    vec![Ok(Delete(obj))]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event::*;

    use super::*;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some(ns.into());
        c
    }

    fn show(events: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>>) -> Vec<String> {
        events
            .into_iter()
            .map(|e| match e {
                Ok(Init) => "init".to_string(),
                Ok(InitApply(c)) => format!("list {}/{}", c.namespace().unwrap_or_default(), c.name_any()),
                Ok(InitDone) => "done".to_string(),
                Ok(Apply(c)) => format!("apply {}/{}", c.namespace().unwrap_or_default(), c.name_any()),
                Ok(Delete(c)) => format!("delete {}/{}", c.namespace().unwrap_or_default(), c.name_any()),
                Err(e) => format!("error {e}"),
            })
            .collect()
    }

    #[test]
    fn one_initial_list_once_every_namespace_has_listed_then_changes() {
        let mut m = Merge::new(2);
        assert!(show(m.on(0, Ok(Init))).is_empty());
        assert!(show(m.on(0, Ok(InitApply(cm("a", "x"))))).is_empty());
        assert!(show(m.on(0, Ok(InitDone))).is_empty(), "b has not listed yet");
        assert!(
            show(m.on(0, Ok(Apply(cm("a", "y"))))).is_empty(),
            "held for the initial list"
        );
        m.on(1, Ok(Init));
        m.on(1, Ok(InitApply(cm("b", "z"))));
        let mut initial = show(m.on(1, Ok(InitDone)));
        initial[1..4].sort();
        assert_eq!(initial, ["init", "list a/x", "list a/y", "list b/z", "done"]);
        assert_eq!(show(m.on(1, Ok(Apply(cm("b", "z"))))), ["apply b/z"]);
        assert_eq!(show(m.on(0, Ok(Delete(cm("a", "x"))))), ["delete a/x"]);
    }

    #[test]
    fn a_relist_of_one_namespace_deletes_what_it_lost() {
        let mut m = Merge::new(2);
        for (i, ns) in [(0, "a"), (1, "b")] {
            m.on(i, Ok(Init));
            m.on(i, Ok(InitApply(cm(ns, "x"))));
            m.on(i, Ok(InitApply(cm(ns, "y"))));
            m.on(i, Ok(InitDone));
        }
        assert!(show(m.on(0, Ok(Init))).is_empty());
        assert_eq!(show(m.on(0, Ok(InitApply(cm("a", "y"))))), ["apply a/y"]);
        assert_eq!(show(m.on(0, Ok(InitDone))), ["delete a/x"]);
        assert_eq!(
            show(m.on(1, Ok(Delete(cm("b", "x"))))),
            ["delete b/x"],
            "b is untouched"
        );
    }
}
