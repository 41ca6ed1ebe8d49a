//! A model of a real API server's write throughput. The emulator answers writes several times
//! faster than kube-apiserver + etcd do, so a benchmark on it alone overstates what a real
//! cluster allows. With the model on, each kind of write is paced to the rate measured on a
//! real kube-apiserver + etcd on the project's kind of machine (2 cores, 32 connections:
//! `lab/tests/golden/README.md`), shared by every client, as one API server is.
//!
//! Each kind is a queue served at its rate: a write waits for the next free slot of its kind
//! (no burst allowance; the measured rates are sustained throughputs). Writes of kinds that
//! were not measured (creates other than Events, deletes) and reads are not paced.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Sustained writes per second, by kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteRates {
    /// Patches and updates of a `status` subresource.
    pub status_patches: f64,
    /// Patches and updates of an object itself (its metadata or spec).
    pub object_patches: f64,
    /// Event creates and patches (core/v1 and events.k8s.io/v1).
    pub event_writes: f64,
}

impl WriteRates {
    /// Measured from kube-apiserver 1.36.2 + etcd 3.5.16 on 2 cores with 32 connections: 855
    /// Service status merge patches/s, 716 metadata merge patches/s, 1,383 Event creates/s.
    pub const RECORDED: WriteRates = WriteRates {
        status_patches: 855.0,
        object_patches: 716.0,
        event_writes: 1383.0,
    };

    fn of(&self, kind: WriteKind) -> f64 {
        match kind {
            WriteKind::StatusPatch => self.status_patches,
            WriteKind::ObjectPatch => self.object_patches,
            WriteKind::EventWrite => self.event_writes,
        }
    }
}

/// The kinds of write the model paces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    StatusPatch,
    ObjectPatch,
    EventWrite,
}

impl WriteKind {
    fn index(self) -> usize {
        match self {
            WriteKind::StatusPatch => 0,
            WriteKind::ObjectPatch => 1,
            WriteKind::EventWrite => 2,
        }
    }

    /// The kind of a request, from its method, resource and subresource; `None`: not paced.
    pub fn of_request(method: &str, plural: &str, subresource: Option<&str>) -> Option<Self> {
        let writes = matches!(method, "PATCH" | "PUT");
        match (plural, subresource) {
            ("events", None) if writes || method == "POST" => Some(WriteKind::EventWrite),
            (_, Some("status")) if writes => Some(WriteKind::StatusPatch),
            (_, None) if writes => Some(WriteKind::ObjectPatch),
            _ => None,
        }
    }
}

/// The pacing state: off, or the rates and each kind's next free slot.
#[derive(Default)]
pub struct CostModel {
    state: Mutex<Option<(WriteRates, [Instant; 3])>>,
}

impl CostModel {
    /// Turns the model on with these rates, or off with `None`.
    pub fn set(&self, rates: Option<WriteRates>) {
        let now = Instant::now();
        *self.lock() = rates.map(|r| (r, [now; 3]));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(WriteRates, [Instant; 3])>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The moment a write of `kind` arriving at `now` is served, claiming that slot.
    fn claim(&self, kind: WriteKind, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        let (rates, next_free) = state.as_mut()?;
        let rate = rates.of(kind);
        if !rate.is_finite() || rate <= 0.0 {
            return None;
        }
        let slot = next_free[kind.index()].max(now);
        next_free[kind.index()] = slot + Duration::from_secs_f64(1.0 / rate);
        Some(slot)
    }

    /// Waits for the slot of a write of `kind` (at once when the model is off).
    pub async fn pace(&self, kind: WriteKind) {
        if let Some(slot) = self.claim(kind, Instant::now()) {
            tokio::time::sleep_until(slot).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_method_and_subresource() {
        use WriteKind::*;
        assert_eq!(
            WriteKind::of_request("PATCH", "services", Some("status")),
            Some(StatusPatch)
        );
        assert_eq!(
            WriteKind::of_request("PUT", "ipaddresspools", Some("status")),
            Some(StatusPatch)
        );
        assert_eq!(
            WriteKind::of_request("PATCH", "services", None),
            Some(ObjectPatch)
        );
        assert_eq!(
            WriteKind::of_request("POST", "events", None),
            Some(EventWrite)
        );
        assert_eq!(
            WriteKind::of_request("PATCH", "events", None),
            Some(EventWrite)
        );
        assert_eq!(WriteKind::of_request("POST", "services", None), None);
        assert_eq!(WriteKind::of_request("GET", "services", None), None);
        assert_eq!(WriteKind::of_request("DELETE", "services", None), None);
    }

    #[test]
    fn each_kind_is_served_at_its_rate_independently() {
        let model = CostModel::default();
        model.set(Some(WriteRates {
            status_patches: 100.0,
            object_patches: 50.0,
            event_writes: 1000.0,
        }));
        let start = Instant::now();
        let slots: Vec<Duration> = (0..100)
            .map(|_| model.claim(WriteKind::StatusPatch, start).unwrap() - start)
            .collect();
        // 100 writes arriving together at 100/s: served 10 ms apart, the last at 0.99 s.
        assert_eq!(slots[1], Duration::from_millis(10));
        assert_eq!(slots[99], Duration::from_millis(990));
        // Another kind has its own queue.
        let object: Vec<Duration> = (0..10)
            .map(|_| model.claim(WriteKind::ObjectPatch, start).unwrap() - start)
            .collect();
        assert_eq!(object[0], Duration::ZERO);
        assert_eq!(object[9], Duration::from_millis(180));
        // Idle time is not saved up: a write arriving after the queue drained goes at once,
        // and the next one a period later.
        let later = start + Duration::from_secs(5);
        assert_eq!(model.claim(WriteKind::StatusPatch, later), Some(later));
        assert_eq!(
            model.claim(WriteKind::StatusPatch, later),
            Some(later + Duration::from_millis(10))
        );
        model.set(None);
        assert_eq!(model.claim(WriteKind::EventWrite, start), None);
    }
    /// The rates are the recorded ones: `lab/tests/golden/README.md` is where they were
    /// written down with the recordings, and the model must not drift from it.
    #[test]
    fn the_recorded_rates_are_those_of_the_golden_readme() {
        let readme = include_str!("../../tests/golden/README.md").replace('\n', " ");
        let figure = |what: &str| -> f64 {
            let end = readme
                .find(what)
                .unwrap_or_else(|| panic!("the golden README names {what}"));
            let number: String = readme[..end]
                .trim_end()
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .replace(',', "");
            number
                .parse()
                .unwrap_or_else(|e| panic!("{number:?} before {what}: {e}"))
        };
        assert_eq!(
            WriteRates::RECORDED,
            WriteRates {
                status_patches: figure("Service status merge patches/s"),
                object_patches: figure("metadata merge patches/s"),
                event_writes: figure("Event creates/s"),
            }
        );
    }
}
