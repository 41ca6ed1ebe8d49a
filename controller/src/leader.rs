//! Leader election on a `coordination.k8s.io` Lease, so that of several controller replicas
//! only one acts.
//!
//! The holder renews every `renew_every`; another replica takes over once it has seen the same
//! record, unchanged, for a whole `lease_duration` on its own clock (as client-go does, so clock
//! skew between nodes does not matter). A leader that cannot renew within the lease duration
//! stops acting; a leader that shuts down releases the Lease, so the hand-over is immediate.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tracing::{debug, info, warn};

/// Timing of the election.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(4),
            renew_every: Duration::from_secs(1),
        }
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The last record seen from another holder, and when it was first seen unchanged.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

/// Why this replica stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum LostLeadership {
    #[error("another replica ({0}) holds the Lease now")]
    TakenBy(String),
    #[error("could not renew the Lease for {0:?}: {1}")]
    RenewFailed(Duration, String),
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Elector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    /// One attempt: true if this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() {
            let record = (holder.clone(), spec.renew_time.clone());
            let unchanged_since = match &self.observed {
                Some((h, r, since)) if (h, r) == (&record.0, &record.1) => *since,
                _ => {
                    self.observed = Some((record.0, record.1, Instant::now()));
                    Instant::now()
                }
            };
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.timing.lease_duration, Duration::from_secs);
            if unchanged_since.elapsed() < duration {
                return Ok(false);
            }
            info!(previous = ?holder, "the Lease expired; taking over");
        }
        let mut next = spec;
        if !mine {
            next.acquire_time = Some(Self::now());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(self.lease_seconds());
        next.renew_time = Some(Self::now());
        lease.spec = Some(next);
        // The resourceVersion in `lease` makes this a compare-and-swap: a 409 means another
        // replica wrote first.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.identity, lease = %self.name, "became leader");
                    return;
                }
                Ok(false) => debug!("another replica leads"),
                Err(e) => warn!(error = %e, "could not read or write the leader Lease"),
            }
            tokio::time::sleep(self.timing.renew_every / 2).await;
        }
    }

    /// Renews while leading; returns when leadership is lost.
    pub async fn keep(&mut self) -> LostLeadership {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .and_then(|(h, _, _)| h.clone())
                        .unwrap_or_else(|| "unknown".into());
                    return LostLeadership::TakenBy(holder);
                }
                Err(e) => {
                    if last_renewed.elapsed() >= self.timing.lease_duration {
                        return LostLeadership::RenewFailed(last_renewed.elapsed(), e.to_string());
                    }
                    warn!(error = %e, "could not renew the leader Lease; retrying");
                }
            }
        }
    }

    /// Gives the Lease up, so that another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released the leader Lease"),
            Err(e) => warn!(error = %e, "could not release the leader Lease"),
        }
    }
}
