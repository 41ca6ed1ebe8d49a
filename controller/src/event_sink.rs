//! Kubernetes Events, written in the background with bounded memory and concurrency.
//!
//! The controller only records an Event on a transition, so it needs no deduplication or
//! series aggregation. kube's `Recorder` keeps every Event it sent for six minutes and scans
//! that cache on each publish; with 10,000 Services allocated at once that cache was a large
//! share of the controller's memory and time. Here an Event is a small struct in a bounded
//! queue, a few writers drain it, and an Event that does not fit is dropped, logged and counted:
//! Events are advice, and must never hold up or outgrow the addresses themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::warn;

/// Events waiting to be written; beyond this, new ones are dropped.
const QUEUE_CAPACITY: usize = 4096;
/// Events written at the same time.
const WRITERS: usize = 4;

/// Who writes the Events (`reportingController`, `reportingInstance`).
#[derive(Debug, Clone)]
pub struct Reporter {
    pub controller: String,
    pub instance: Option<String>,
}

/// One Event about one object.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub regarding: ObjectReference,
    pub warning: bool,
    pub reason: String,
    pub note: String,
    pub action: String,
}

/// Sends Events without waiting for them.
#[derive(Clone)]
pub struct EventSink {
    queue: mpsc::Sender<PendingEvent>,
    dropped: Counter,
}

impl EventSink {
    /// Starts the writers; `dropped` counts Events that did not fit in the queue or failed.
    pub fn spawn(client: Client, reporter: Reporter, dropped: Counter) -> Self {
        let (queue, pending) = mpsc::channel::<PendingEvent>(QUEUE_CAPACITY);
        let failed = dropped.clone();
        let reporter = Arc::new(reporter);
        let sequence = Arc::new(AtomicU64::new(0));
        let pending = futures::stream::unfold(pending, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        });
        tokio::spawn(
            pending
                .map(move |event| {
                    let client = client.clone();
                    let reporter = reporter.clone();
                    let failed = failed.clone();
                    let sequence = sequence.fetch_add(1, Ordering::Relaxed);
                    async move {
                        if let Err(e) = write(client, &reporter, &event, sequence).await {
                            failed.inc();
                            warn!(reason = %event.reason, error = %e, "could not record an Event");
                        }
                    }
                })
                .buffer_unordered(WRITERS)
                .for_each(|()| async {}),
        );
        Self { queue, dropped }
    }

    /// Queues an Event; never waits.
    pub fn record(&self, event: PendingEvent) {
        if let Err(e) = self.queue.try_send(event) {
            self.dropped.inc();
            let reason = match &e {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event.reason.clone(),
            };
            warn!(reason, "Event queue full, Event dropped");
        }
    }
}

async fn write(
    client: Client,
    reporter: &Reporter,
    event: &PendingEvent,
    sequence: u64,
) -> Result<(), kube::Error> {
    let namespace = event
        .regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let now = k8s_openapi::jiff::Timestamp::now();
    // As client-go names Events: the object's name and a unique suffix.
    let name = format!(
        "{}.{:x}.{sequence}",
        event.regarding.name.as_deref().unwrap_or("object"),
        now.as_nanosecond()
    );
    let object = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.to_string()),
        reason: Some(event.reason.clone()),
        note: Some(event.note.clone()),
        action: Some(event.action.clone()),
        regarding: Some(event.regarding.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..Default::default()
    };
    Api::<Event>::namespaced(client, &namespace)
        .create(&PostParams::default(), &object)
        .await?;
    Ok(())
}
