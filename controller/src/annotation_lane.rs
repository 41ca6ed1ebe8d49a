//! The pool annotation (`metallb.io/ip-allocated-from-pool`) is written in its own lane, after
//! and apart from each Service's status: a user waits for the EXTERNAL-IP, not for the
//! annotation, and a real API server takes fewer metadata patches per second (716) than status
//! patches (855). While Services wait for their status the lane keeps one write going, so it
//! is never starved; once none waits it uses up to [`WIDE`] at a time.
//!
//! Only the newest wish per Service is kept (a Service re-decided while its annotation waits
//! replaces it), so the lane holds at most one small entry per Service.

use std::collections::{HashMap, VecDeque};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinSet;

use crate::service_request::{ALLOCATED_FROM_POOL, ServiceKey};

/// Annotation writes at a time while no Service waits for its status.
pub const WIDE: usize = 8;
/// Annotation writes at a time while Services wait for their status.
pub const NARROW: usize = 1;

/// What the annotation should say: the pool, or nothing (`None` removes it).
pub type PoolAnnotation = Option<String>;

pub struct AnnotationLane {
    client: Client,
    params: PatchParams,
    /// The newest wish of each Service not yet written.
    pending: HashMap<ServiceKey, PoolAnnotation>,
    /// Services with a pending wish, oldest first.
    order: VecDeque<ServiceKey>,
    /// Services whose write is running (a newer wish waits for it to finish), by task.
    running: HashMap<tokio::task::Id, ServiceKey>,
    writes: JoinSet<Result<(), kube::Error>>,
}

impl AnnotationLane {
    pub fn new(client: Client, params: PatchParams) -> Self {
        AnnotationLane {
            client,
            params,
            pending: HashMap::new(),
            order: VecDeque::new(),
            running: HashMap::new(),
            writes: JoinSet::new(),
        }
    }

    /// Asks for a Service's annotation to say `pool`, replacing any wish not yet written.
    pub fn push(&mut self, key: ServiceKey, pool: PoolAnnotation) {
        if self.pending.insert(key.clone(), pool).is_none() {
            self.order.push_back(key);
        }
    }

    /// Forgets a deleted Service's wish.
    pub fn forget(&mut self, key: &ServiceKey) {
        self.pending.remove(key);
    }

    /// Whether a write could start now, given how many may run at once.
    pub fn can_start(&self, limit: usize) -> bool {
        self.writes.len() < limit && !self.pending.is_empty()
    }

    pub fn is_running(&self) -> bool {
        !self.writes.is_empty()
    }

    /// Starts writes until `limit` run or nothing is pending (a Service whose write is running
    /// keeps its newer wish for later).
    pub fn start(&mut self, limit: usize) {
        let mut deferred = Vec::new();
        while self.writes.len() < limit {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if self.running.values().any(|k| *k == key) {
                deferred.push(key);
                continue;
            }
            let Some(pool) = self.pending.remove(&key) else {
                continue;
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
        for key in deferred.into_iter().rev() {
            self.order.push_front(key);
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
        let result = match result {
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            other => other,
        };
        (key, result)
    }
}
