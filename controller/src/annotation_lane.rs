//! The pool annotation (`metallb.io/ip-allocated-from-pool`) is written in its own lane, after
//! and apart from each Service's status: a user waits for the EXTERNAL-IP, not for the
//! annotation, and a real API server takes fewer metadata patches per second (716) than status
//! patches (855). While Services wait for their status the lane keeps one write going, so it
//! is never starved; once none waits it uses up to [`WIDE`] at a time.
//!
//! Only the newest wish per Service is kept (a Service re-decided while its annotation waits
//! replaces it), so the lane holds at most one small entry per Service, and a Service has at
//! most one write running.

use std::collections::{HashMap, HashSet, VecDeque};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinSet;

use crate::service_request::{ALLOCATED_FROM_POOL, ServiceKey};

/// Annotation writes at a time while no Service waits for its status.
const WIDE: usize = 8;
/// Annotation writes at a time while Services wait for their status.
const NARROW: usize = 1;

/// How many annotation writes may run: few while Services wait for their status (EXTERNAL-IP
/// first), more once none waits.
pub fn width(statuses_waiting: bool) -> usize {
    if statuses_waiting { NARROW } else { WIDE }
}

/// What the annotation should say: the pool, or nothing (`None` removes it).
pub type PoolAnnotation = Option<String>;

/// Which Services' annotations wait, in order, apart from the writes themselves (pure, so
/// that its rules are unit-tested). A Service has at most one write running; a newer wish
/// for it waits aside until that write ends, so every queued wish can start at once.
#[derive(Default)]
pub struct AnnotationQueue {
    /// The newest wish of each Service that could start now.
    pending: HashMap<ServiceKey, PoolAnnotation>,
    /// Services with a pending wish, oldest first (may hold keys since forgotten).
    order: VecDeque<ServiceKey>,
    /// Services whose write runs.
    running: HashSet<ServiceKey>,
    /// Newer wishes of Services whose write runs.
    after_running: HashMap<ServiceKey, PoolAnnotation>,
}

impl AnnotationQueue {
    /// Asks for a Service's annotation to say `pool`, replacing any wish not yet written.
    pub fn push(&mut self, key: ServiceKey, pool: PoolAnnotation) {
        if self.running.contains(&key) {
            self.after_running.insert(key, pool);
        } else if self.pending.insert(key.clone(), pool).is_none() {
            self.order.push_back(key);
        }
    }

    /// Forgets a deleted Service's wishes.
    pub fn forget(&mut self, key: &ServiceKey) {
        self.pending.remove(key);
        self.after_running.remove(key);
    }

    /// Whether a wish can start now.
    pub fn has_startable(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The oldest wish that can start, now counted as running.
    pub fn start_next(&mut self) -> Option<(ServiceKey, PoolAnnotation)> {
        while let Some(key) = self.order.pop_front() {
            if let Some(pool) = self.pending.remove(&key) {
                self.running.insert(key.clone());
                return Some((key, pool));
            }
        }
        None
    }

    /// A Service's write ended: a wish that waited for it can start.
    pub fn finished(&mut self, key: &ServiceKey) {
        self.running.remove(key);
        if let Some(pool) = self.after_running.remove(key) {
            self.push(key.clone(), pool);
        }
    }
}

pub struct AnnotationLane {
    client: Client,
    params: PatchParams,
    queue: AnnotationQueue,
    /// The Service of each running write, by task.
    running: HashMap<tokio::task::Id, ServiceKey>,
    writes: JoinSet<Result<(), kube::Error>>,
}

impl AnnotationLane {
    pub fn new(client: Client, params: PatchParams) -> Self {
        AnnotationLane {
            client,
            params,
            queue: AnnotationQueue::default(),
            running: HashMap::new(),
            writes: JoinSet::new(),
        }
    }

    /// Asks for a Service's annotation to say `pool`, replacing any wish not yet written.
    pub fn push(&mut self, key: ServiceKey, pool: PoolAnnotation) {
        self.queue.push(key, pool);
    }

    /// Forgets a deleted Service's wish.
    pub fn forget(&mut self, key: &ServiceKey) {
        self.queue.forget(key);
    }

    /// Whether a write could start now, given how many may run at once.
    pub fn can_start(&self, limit: usize) -> bool {
        self.writes.len() < limit && self.queue.has_startable()
    }

    pub fn is_running(&self) -> bool {
        !self.writes.is_empty()
    }

    /// Starts writes until `limit` run or nothing can start.
    pub fn start(&mut self, limit: usize) {
        while self.writes.len() < limit {
            let Some((key, pool)) = self.queue.start_next() else {
                break;
            };
            let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
            let params = self.params.clone();
            let name = key.name.clone();
            let task = self.writes.spawn(async move {
                let patch = json!({"metadata": {"annotations": {ALLOCATED_FROM_POOL: pool}}});
                api.patch(&name, &params, &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            });
            self.running.insert(task.id(), key);
        }
    }

    /// The next finished write: the Service and what the API server said. A Service that is
    /// gone (404) is not an error.
    pub async fn next_done(&mut self) -> Option<(ServiceKey, Result<(), kube::Error>)> {
        let done = self.writes.join_next_with_id().await?;
        Some(self.finish(done))
    }

    /// Finished writes already available, without waiting.
    pub fn try_done(&mut self) -> Vec<(ServiceKey, Result<(), kube::Error>)> {
        let mut done = Vec::new();
        while let Some(finished) = self.writes.try_join_next_with_id() {
            done.push(self.finish(finished));
        }
        done
    }

    fn finish(
        &mut self,
        done: Result<(tokio::task::Id, Result<(), kube::Error>), tokio::task::JoinError>,
    ) -> (ServiceKey, Result<(), kube::Error>) {
        let (id, result) = match done {
            Ok((id, result)) => (id, result),
            // A write task cannot panic by design; if one did, its Service asks again when
            // it is next decided (its next change or resync).
            Err(e) => (e.id(), Ok(())),
        };
        let key = self.running.remove(&id).unwrap_or(ServiceKey {
            namespace: String::new(),
            name: String::new(),
        });
        self.queue.finished(&key);
        let result = match result {
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            other => other,
        };
        (key, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn pool(name: &str) -> PoolAnnotation {
        Some(name.into())
    }

    #[test]
    fn oldest_first_newest_wish_wins() {
        let mut queue = AnnotationQueue::default();
        queue.push(key("a"), pool("p1"));
        queue.push(key("b"), pool("p1"));
        queue.push(key("a"), pool("p2"));
        assert_eq!(queue.start_next(), Some((key("a"), pool("p2"))));
        assert_eq!(queue.start_next(), Some((key("b"), pool("p1"))));
        assert_eq!(queue.start_next(), None);
        assert!(!queue.has_startable());
    }

    /// A wish for a Service whose write runs waits for it, and is not offered meanwhile (the
    /// controller's loop would otherwise spin on a wish it cannot start).
    #[test]
    fn a_wish_waits_for_its_services_running_write() {
        let mut queue = AnnotationQueue::default();
        queue.push(key("a"), pool("p1"));
        assert_eq!(queue.start_next(), Some((key("a"), pool("p1"))));
        queue.push(key("a"), None);
        assert!(!queue.has_startable());
        assert_eq!(queue.start_next(), None);
        queue.finished(&key("a"));
        assert!(queue.has_startable());
        assert_eq!(queue.start_next(), Some((key("a"), None)));
    }

    #[test]
    fn a_deleted_services_wishes_are_forgotten() {
        let mut queue = AnnotationQueue::default();
        queue.push(key("a"), pool("p1"));
        queue.push(key("b"), pool("p1"));
        assert_eq!(queue.start_next(), Some((key("a"), pool("p1"))));
        queue.push(key("a"), pool("p2"));
        queue.forget(&key("a"));
        queue.forget(&key("b"));
        queue.finished(&key("a"));
        assert!(!queue.has_startable());
        assert_eq!(queue.start_next(), None);
    }
}
