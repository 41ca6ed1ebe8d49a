//! What the watches changed since the last pass, so that a pass looks at those objects only.
//!
//! The reflectors note here, as each event arrives, which Services (through their own object
//! or one of their EndpointSlices) and which ServiceL2Status objects it touched, and keep an
//! index of which objects belong to which Service. A relist says "everything": the objects it
//! replaced are not named one by one.

use std::collections::{BTreeSet, HashMap};

use ferrolb_crds::ServiceL2Status;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::l2_status::{self, ServiceKey};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Keys touched since they were last taken, or every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched<K: Ord> {
    Everything,
    Some(BTreeSet<K>),
}

impl<K: Ord> Default for Touched<K> {
    fn default() -> Self {
        Touched::Some(BTreeSet::new())
    }
}

impl<K: Ord + Clone> Touched<K> {
    pub fn insert(&mut self, key: K) {
        if let Touched::Some(keys) = self {
            keys.insert(key);
        }
    }

    pub fn extend(&mut self, other: &Touched<K>) {
        match other {
            Touched::Everything => *self = Touched::Everything,
            Touched::Some(keys) => keys.iter().cloned().for_each(|k| self.insert(k)),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Touched::Some(keys) if keys.is_empty())
    }

    pub fn contains(&self, key: &K) -> bool {
        match self {
            Touched::Everything => true,
            Touched::Some(keys) => keys.contains(key),
        }
    }
}

/// Which objects (EndpointSlices, ServiceL2Status objects) belong to which Service, as their
/// watch reports them; mirrors the reflector's store, including its relists (built aside,
/// swapped in when complete).
#[derive(Debug, Default)]
pub struct ServiceIndex {
    current: ServiceMap,
    relisting: Option<ServiceMap>,
}

#[derive(Debug, Default)]
struct ServiceMap {
    /// (namespace, object name) → the Service it belongs to.
    service_of: HashMap<(String, String), ServiceKey>,
    /// Service → its objects' names.
    objects_of: HashMap<ServiceKey, BTreeSet<String>>,
}

/// An object's place: its namespace and name, and the Service it belongs to.
type Placed = ((String, String), Option<ServiceKey>);

impl ServiceMap {
    /// Records an object; returns the Services whose objects changed (before and after).
    fn apply(&mut self, ((namespace, name), service): Placed) -> Vec<ServiceKey> {
        let mut touched = self.delete((namespace.clone(), name.clone()));
        let Some(service) = service else {
            return touched;
        };
        self.service_of
            .insert((namespace, name.clone()), service.clone());
        self.objects_of
            .entry(service.clone())
            .or_default()
            .insert(name);
        touched.push(service);
        touched
    }

    fn delete(&mut self, (namespace, name): (String, String)) -> Vec<ServiceKey> {
        let Some(service) = self.service_of.remove(&(namespace, name.clone())) else {
            return Vec::new();
        };
        if let Some(names) = self.objects_of.get_mut(&service) {
            names.remove(&name);
            if names.is_empty() {
                self.objects_of.remove(&service);
            }
        }
        vec![service]
    }
}

impl ServiceIndex {
    /// Follows one event of a watch; `place` says where an object belongs. Returns the
    /// Services it touched (a relist touches everything, which the caller notes on its own).
    pub fn follow<K>(&mut self, event: &Event<K>, place: fn(&K) -> Placed) -> Vec<ServiceKey> {
        match event {
            Event::Apply(object) => self.current.apply(place(object)),
            Event::Delete(object) => self.current.delete(place(object).0),
            Event::Init => {
                self.relisting = Some(ServiceMap::default());
                Vec::new()
            }
            Event::InitApply(object) => {
                if let Some(building) = self.relisting.as_mut() {
                    building.apply(place(object));
                }
                Vec::new()
            }
            Event::InitDone => {
                if let Some(built) = self.relisting.take() {
                    self.current = built;
                }
                Vec::new()
            }
        }
    }

    /// The names of the objects belonging to a Service.
    pub fn objects_of(&self, service: &ServiceKey) -> impl Iterator<Item = &String> {
        self.current.objects_of.get(service).into_iter().flatten()
    }
}

fn place_slice(slice: &EndpointSlice) -> Placed {
    let namespace = slice.namespace().unwrap_or_default();
    let service = slice
        .labels()
        .get(SERVICE_NAME_LABEL)
        .map(|service| (namespace.clone(), service.clone()));
    ((namespace, slice.name_any()), service)
}

fn place_status(object: &ServiceL2Status) -> Placed {
    let labels = object.labels();
    let service = labels
        .get(l2_status::SERVICE_NAMESPACE_LABEL)
        .zip(labels.get(l2_status::SERVICE_NAME_LABEL))
        .map(|(namespace, name)| (namespace.clone(), name.clone()));
    (
        (object.namespace().unwrap_or_default(), object.name_any()),
        service,
    )
}

/// What the reflectors noted since the last pass took it.
#[derive(Debug, Default)]
pub struct WatchChanges {
    /// Services whose object or EndpointSlices changed.
    pub services: Touched<ServiceKey>,
    /// ServiceL2Status objects, by name.
    pub statuses: Touched<String>,
    /// The Services whose ServiceL2Status objects changed.
    pub status_services: Touched<ServiceKey>,
    pub slices: ServiceIndex,
    pub status_objects: ServiceIndex,
}

/// What a pass takes from the notes.
#[derive(Debug, Default)]
pub struct Taken {
    pub services: Touched<ServiceKey>,
    pub statuses: Touched<String>,
    pub status_services: Touched<ServiceKey>,
}

fn relist<K>(event: &Event<K>) -> bool {
    matches!(event, Event::Init | Event::InitApply(_) | Event::InitDone)
}

impl WatchChanges {
    /// Everything noted so far, leaving nothing noted (the indexes stay).
    pub fn take(&mut self) -> Taken {
        Taken {
            services: std::mem::take(&mut self.services),
            statuses: std::mem::take(&mut self.statuses),
            status_services: std::mem::take(&mut self.status_services),
        }
    }

    pub fn follow_service(&mut self, event: &Event<Service>) {
        match event {
            Event::Apply(service) | Event::Delete(service) => self
                .services
                .insert((service.namespace().unwrap_or_default(), service.name_any())),
            _ => self.services = Touched::Everything,
        }
    }

    pub fn follow_slice(&mut self, event: &Event<EndpointSlice>) {
        for key in self.slices.follow(event, place_slice) {
            self.services.insert(key);
        }
        if relist(event) {
            self.services = Touched::Everything;
        }
    }

    pub fn follow_status(&mut self, event: &Event<ServiceL2Status>) {
        for key in self.status_objects.follow(event, place_status) {
            self.status_services.insert(key);
        }
        match event {
            Event::Apply(object) | Event::Delete(object) => self.statuses.insert(object.name_any()),
            _ => {
                self.statuses = Touched::Everything;
                self.status_services = Touched::Everything;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(name: &str, service: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": [],
        }))
        .unwrap_or_default()
    }

    fn key(service: &str) -> ServiceKey {
        ("default".to_string(), service.to_string())
    }

    fn slices_of(changes: &WatchChanges, service: &str) -> Vec<String> {
        changes.slices.objects_of(&key(service)).cloned().collect()
    }

    #[test]
    fn a_slice_event_touches_its_service_and_the_one_it_left() {
        let mut changes = WatchChanges::default();
        changes.follow_slice(&Event::Apply(slice("a-1", "a")));
        changes.follow_slice(&Event::Apply(slice("a-2", "a")));
        assert_eq!(slices_of(&changes, "a"), ["a-1", "a-2"]);
        assert_eq!(changes.take().services, Touched::Some([key("a")].into()));
        changes.follow_slice(&Event::Apply(slice("a-2", "b")));
        assert_eq!(
            changes.take().services,
            Touched::Some([key("a"), key("b")].into())
        );
        assert_eq!(slices_of(&changes, "a"), ["a-1"]);
        changes.follow_slice(&Event::Delete(slice("a-1", "a")));
        assert!(slices_of(&changes, "a").is_empty());
        assert_eq!(changes.take().services, Touched::Some([key("a")].into()));
        assert!(changes.take().services.is_empty());
    }

    #[test]
    fn a_relist_touches_everything_and_replaces_the_index_when_done() {
        let mut changes = WatchChanges::default();
        changes.follow_slice(&Event::Apply(slice("a-1", "a")));
        changes.take();
        changes.follow_slice(&Event::Init);
        changes.follow_slice(&Event::InitApply(slice("b-1", "b")));
        assert_eq!(slices_of(&changes, "a"), ["a-1"], "the old view until done");
        changes.follow_slice(&Event::InitDone);
        assert!(slices_of(&changes, "a").is_empty());
        assert_eq!(slices_of(&changes, "b"), ["b-1"]);
        assert_eq!(changes.take().services, Touched::Everything);
        assert!(changes.take().services.is_empty());
    }
}
