//! Watch streams: newline-delimited JSON events, as kube-apiserver sends them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use tokio::sync::{broadcast, mpsc};

use super::ApiServer;
use super::resources::{ResourceType, StorageKey};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, EventType};

/// What one watch request asks for.
pub struct WatchRequest {
    pub resource: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None` (or "0"): start with the current state as ADDED events.
    pub since: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Duration,
}

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

impl WatchRequest {
    fn selects(&self, object: &Value) -> bool {
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.labels.matches(labels) && self.fields.matches(object)
    }

    fn concerns(&self, change: &Change, storage: &StorageKey) -> bool {
        change.storage == *storage
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == change.namespace)
    }

    /// The event a client of this watch sees for a change, if any: an object that leaves the
    /// selection is DELETED for this watch, one that enters it is ADDED. Objects are shown in the
    /// watched API's form (converted only for kinds stored in another form).
    fn event_for(&self, change: &Change) -> Option<(EventType, Arc<Value>)> {
        let converts = super::conversion::converts(&self.resource);
        let shown = |object: &Arc<Value>| {
            if converts {
                Arc::new(super::conversion::from_storage(
                    &self.resource,
                    (**object).clone(),
                ))
            } else {
                object.clone()
            }
        };
        let object = shown(&change.object);
        let now = self.selects(&object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.selects(&shown(p)));
        let event_type = match (change.event_type, before, now) {
            (EventType::Deleted, true, _) | (_, true, false) => EventType::Deleted,
            (EventType::Deleted, false, _) | (_, false, false) => return None,
            (_, false, true) => EventType::Added,
            (_, true, true) => change.event_type,
        };
        Some((event_type, object))
    }
}

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": event_type, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Starts a watch; the chunks of its response body arrive on the returned channel.
pub fn start(server: &ApiServer, request: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let storage = request.resource.storage_key();
    let mut initial = Vec::new();
    let (mut live, mut last_rv) = match request.since {
        None => {
            let (objects, rv, receiver) = server
                .store()
                .snapshot_and_subscribe(&storage, request.namespace.as_deref());
            initial.extend(
                objects
                    .into_iter()
                    .map(|o| super::conversion::from_storage(&request.resource, o))
                    .filter(|o| request.selects(o))
                    .map(|o| line("ADDED", &o)),
            );
            (receiver, rv)
        }
        Some(since) => match server.store().watch_from(since) {
            Ok((past, receiver)) => {
                for change in past.iter().filter(|c| request.concerns(c, &storage)) {
                    if let Some((event_type, object)) = request.event_for(change) {
                        initial.push(line(event_type.as_str(), &object));
                    }
                }
                (receiver, server.store().resource_version())
            }
            Err(too_old) => {
                let status = ApiError::gone(format!(
                    "too old resource version: {} ({})",
                    too_old.requested, too_old.oldest
                ))
                .to_status();
                let _ = tx.try_send(line("ERROR", &status));
                return rx;
            }
        },
    };
    let mut drops = server.faults().watch_drops();
    drops.mark_unchanged();
    let resource = request.resource.clone();
    tokio::spawn(async move {
        for chunk in initial {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(request.timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmarks.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = drops.changed() => return,
                _ = bookmarks.tick(), if request.bookmarks => {
                    let bookmark = super::zero_values::bookmark(&resource, last_rv);
                    if tx.send(line("BOOKMARK", &bookmark)).await.is_err() {
                        return;
                    }
                }
                received = live.recv() => match received {
                    Ok(change) => {
                        last_rv = change.resource_version;
                        if !request.concerns(&change, &storage) {
                            continue;
                        }
                        if let Some((event_type, object)) = request.event_for(&change)
                            && tx.send(line(event_type.as_str(), &object)).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher that fell this far behind is ended, and resumes from its RV.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    rx
}
