//! In-memory object storage with one cluster-wide resourceVersion counter and a bounded history
//! of changes for watches, like etcd behind kube-apiserver.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::resources::StorageKey;

/// How many changes are kept for watches that resume from an older resourceVersion; older ones
/// get 410 Gone, as after an etcd compaction.
pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource_version: u64,
    pub storage: StorageKey,
    pub namespace: String,
    pub event_type: EventType,
    /// The object after the change; for a deletion, the last state with the deletion's RV.
    pub object: Arc<Value>,
    /// The object before the change, if it existed.
    pub previous: Option<Arc<Value>>,
}

/// What a read-modify-write decided to do with an object.
pub enum Write {
    /// Store this object (create or replace); its resourceVersion is set by the store.
    Put(Value),
    Delete,
    /// Leave the object as it is.
    Keep,
}

/// The result of a read-modify-write.
#[derive(Debug, Clone)]
pub enum Written {
    Stored(Value),
    Deleted(Value),
    Unchanged(Option<Value>),
}

/// The changes a watch replays from history, and the receiver of those still to come.
pub type WatchStart = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// A watch that resumes from a resourceVersion older than the history keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    objects: HashMap<StorageKey, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Change>>,
    /// Changes after this resourceVersion are all still in `history` (etcd's compaction).
    history_floor: u64,
    /// Watches may resume from this resourceVersion on (the watch cache's window), which can be
    /// newer than `history_floor`.
    watch_floor: u64,
}

pub struct Store {
    state: Mutex<State>,
    history_limit: Mutex<usize>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(65_536);
        Store {
            state: Mutex::new(State::default()),
            history_limit: Mutex::new(DEFAULT_HISTORY_LIMIT),
            changes,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data: every write is one insert.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().resource_version
    }

    pub fn get(&self, storage: &StorageKey, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .objects
            .get(storage)
            .and_then(|objects| objects.get(&(namespace.to_string(), name.to_string())))
            .cloned()
    }

    /// Objects of one resource, in one namespace or all, ordered by namespace and name, with the
    /// resourceVersion the list is consistent with.
    pub fn list(&self, storage: &StorageKey, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let state = self.state();
        let objects = objects_in(&state, storage, namespace);
        (objects, state.resource_version)
    }

    /// Lets `read` see the objects of `storage` (in `namespace`, if given) with the current
    /// resourceVersion, under the store's lock and without copying them: a page of a list
    /// copies only what it returns.
    pub fn read_objects<R>(
        &self,
        storage: &StorageKey,
        namespace: Option<&str>,
        read: impl FnOnce(Vec<&Value>, u64) -> R,
    ) -> R {
        let state = self.state();
        let objects = state
            .objects
            .get(storage)
            .into_iter()
            .flatten()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| o)
            .collect();
        read(objects, state.resource_version)
    }

    /// Reads an object, lets `decide` compute what to do, and applies that atomically.
    pub fn modify<E>(
        &self,
        storage: &StorageKey,
        namespace: &str,
        name: &str,
        decide: impl FnOnce(Option<&Value>) -> Result<Write, E>,
    ) -> Result<Written, E> {
        let mut state = self.state();
        let key = (namespace.to_string(), name.to_string());
        let current = state.objects.get(storage).and_then(|o| o.get(&key));
        let previous = current.cloned();
        let decision = decide(current)?;
        let written = match decision {
            Write::Keep => Written::Unchanged(current.cloned()),
            Write::Put(mut object) => {
                state.resource_version += 1;
                let rv = state.resource_version;
                set_resource_version(&mut object, rv);
                state
                    .objects
                    .entry(storage.clone())
                    .or_default()
                    .insert(key, object.clone());
                let event_type = if previous.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                self.record(
                    &mut state, storage, namespace, event_type, &object, previous,
                );
                Written::Stored(object)
            }
            Write::Delete => {
                let Some(mut object) = state.objects.get_mut(storage).and_then(|o| o.remove(&key))
                else {
                    return Ok(Written::Unchanged(None));
                };
                state.resource_version += 1;
                let rv = state.resource_version;
                set_resource_version(&mut object, rv);
                self.record(
                    &mut state,
                    storage,
                    namespace,
                    EventType::Deleted,
                    &object,
                    previous,
                );
                Written::Deleted(object)
            }
        };
        Ok(written)
    }

    /// Runs `decide` as `modify` would, under the same lock, but stores nothing: what a
    /// `dryRun=All` request answers.
    pub fn preview<E>(
        &self,
        storage: &StorageKey,
        namespace: &str,
        name: &str,
        decide: impl FnOnce(Option<&Value>) -> Result<Write, E>,
    ) -> Result<Written, E> {
        let state = self.state();
        let key = (namespace.to_string(), name.to_string());
        let current = state.objects.get(storage).and_then(|o| o.get(&key));
        Ok(match decide(current)? {
            Write::Keep => Written::Unchanged(current.cloned()),
            Write::Put(object) => Written::Stored(object),
            Write::Delete => match current {
                Some(object) => Written::Deleted(object.clone()),
                None => Written::Unchanged(None),
            },
        })
    }

    fn record(
        &self,
        state: &mut State,
        storage: &StorageKey,
        namespace: &str,
        event_type: EventType,
        object: &Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            resource_version: state.resource_version,
            storage: storage.clone(),
            namespace: namespace.to_string(),
            event_type,
            object: Arc::new(object.clone()),
            previous: previous.map(Arc::new),
        });
        state.history.push_back(change.clone());
        let limit = *self
            .history_limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while state.history.len() > limit {
            if let Some(dropped) = state.history.pop_front() {
                state.history_floor = dropped.resource_version;
                state.watch_floor = state.watch_floor.max(dropped.resource_version);
            }
        }
        // Nobody listening is fine: watches subscribe before reading history.
        let _ = self.changes.send(change);
    }

    /// Starts watching: the changes after `since` still in history, and a receiver of the ones
    /// to come, taken under one lock so that none is missed or seen twice.
    pub fn watch_from(&self, since: u64) -> Result<WatchStart, TooOld> {
        let state = self.state();
        if since < state.watch_floor {
            return Err(TooOld {
                requested: since,
                oldest: state.watch_floor,
            });
        }
        let receiver = self.changes.subscribe();
        let past = state
            .history
            .iter()
            .filter(|c| c.resource_version > since)
            .cloned()
            .collect();
        Ok((past, receiver))
    }

    /// Keeps at most `limit` changes; older resourceVersions then get 410 Gone.
    pub fn set_history_limit(&self, limit: usize) {
        *self
            .history_limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = limit;
    }

    /// Forgets all history, as an etcd compaction at the current revision does.
    pub fn compact(&self) {
        let mut state = self.state();
        state.history.clear();
        state.history_floor = state.resource_version;
        state.watch_floor = state.resource_version;
    }

    /// Empties the watch window only, as kube-apiserver's watch cache does when it evicts old
    /// events: watches from older resourceVersions get 410, exact reads still work.
    pub fn evict_watch_cache(&self) {
        let mut state = self.state();
        state.watch_floor = state.resource_version;
    }

    /// The objects of one resource as they were at resourceVersion `at`, rebuilt from history.
    pub fn list_at(
        &self,
        storage: &StorageKey,
        namespace: Option<&str>,
        at: u64,
    ) -> Result<Vec<Value>, TooOld> {
        let state = self.state();
        if at < state.history_floor {
            return Err(TooOld {
                requested: at,
                oldest: state.history_floor,
            });
        }
        let mut objects: BTreeMap<(String, String), Value> =
            state.objects.get(storage).cloned().unwrap_or_default();
        for change in state.history.iter().rev() {
            if change.resource_version <= at {
                break;
            }
            if change.storage != *storage {
                continue;
            }
            let name = change.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let key = (change.namespace.clone(), name);
            match &change.previous {
                Some(previous) => {
                    objects.insert(key, (**previous).clone());
                }
                None => {
                    objects.remove(&key);
                }
            }
        }
        Ok(objects
            .into_iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, o)| o)
            .collect())
    }

    /// The whole content of one resource, with the RV it is consistent with, and a receiver for
    /// later changes; for watches that start with the current state.
    pub fn snapshot_and_subscribe(
        &self,
        storage: &StorageKey,
        namespace: Option<&str>,
    ) -> (Vec<Value>, u64, broadcast::Receiver<Arc<Change>>) {
        let state = self.state();
        let receiver = self.changes.subscribe();
        let objects = objects_in(&state, storage, namespace);
        (objects, state.resource_version, receiver)
    }
}

/// Objects of one resource, in one namespace or all, in key order.
fn objects_in(state: &State, storage: &StorageKey, namespace: Option<&str>) -> Vec<Value> {
    state
        .objects
        .get(storage)
        .map(|objects| {
            objects
                .iter()
                .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                .map(|(_, o)| o.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> StorageKey {
        StorageKey {
            group: String::new(),
            resource: "configmaps".into(),
        }
    }

    fn put(store: &Store, name: &str) -> Value {
        match store
            .modify::<()>(&key(), "default", name, |_| {
                Ok(Write::Put(json!({"metadata": {"name": name}})))
            })
            .unwrap()
        {
            Written::Stored(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resource_versions_increase_across_objects() {
        let store = Store::new();
        let a = put(&store, "a");
        let b = put(&store, "b");
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        assert_eq!(store.resource_version(), 2);
    }

    #[test]
    fn watch_replays_history_then_streams() {
        let store = Store::new();
        put(&store, "a");
        put(&store, "b");
        let (past, mut live) = store.watch_from(1).unwrap();
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].object["metadata"]["name"], "b");
        put(&store, "c");
        let next = live.try_recv().unwrap();
        assert_eq!(next.resource_version, 3);
        assert_eq!(next.event_type, EventType::Added);
    }

    #[test]
    fn compacted_history_is_gone() {
        let store = Store::new();
        put(&store, "a");
        put(&store, "b");
        store.compact();
        assert_eq!(
            store.watch_from(1).unwrap_err(),
            TooOld {
                requested: 1,
                oldest: 2
            }
        );
        assert!(store.watch_from(2).is_ok());
    }

    #[test]
    fn bounded_history_forgets_the_oldest() {
        let store = Store::new();
        store.set_history_limit(2);
        for name in ["a", "b", "c", "d"] {
            put(&store, name);
        }
        assert!(store.watch_from(1).is_err());
        assert_eq!(store.watch_from(2).unwrap().0.len(), 2);
    }

    #[test]
    fn exact_reads_rebuild_past_states_and_outlive_the_watch_window() {
        let store = Store::new();
        put(&store, "a");
        put(&store, "b");
        store
            .modify::<()>(&key(), "default", "a", |_| Ok(Write::Delete))
            .unwrap();
        let names = |objects: Vec<Value>| -> Vec<String> {
            objects
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(store.list_at(&key(), None, 1).unwrap()), ["a"]);
        assert_eq!(names(store.list_at(&key(), None, 2).unwrap()), ["a", "b"]);
        assert_eq!(names(store.list_at(&key(), None, 3).unwrap()), ["b"]);
        store.evict_watch_cache();
        assert!(store.watch_from(1).is_err());
        assert!(store.list_at(&key(), None, 1).is_ok());
        store.compact();
        assert!(store.list_at(&key(), None, 1).is_err());
    }

    #[test]
    fn delete_records_the_last_state() {
        let store = Store::new();
        put(&store, "a");
        let written = store
            .modify::<()>(&key(), "default", "a", |_| Ok(Write::Delete))
            .unwrap();
        assert!(
            matches!(written, Written::Deleted(ref v) if v["metadata"]["resourceVersion"] == "2")
        );
        assert!(store.get(&key(), "default", "a").is_none());
    }
}
