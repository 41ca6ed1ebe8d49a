//! Leader election on a `coordination.k8s.io` Lease, so that of several controller replicas
//! only one acts.
//!
//! The holder renews every `renew_every`; another replica takes over once it has seen the same
//! record, unchanged, for a whole `lease_duration` on its own clock (as client-go does, so clock
//! skew between nodes does not matter). A leader that shuts down releases the Lease, so the
//! hand-over is immediate.
//!
//! A leader stops acting once `renew_deadline` has passed since it *sent* its last renewal that
//! succeeded, even while a renewal is still waiting for an answer. Another replica can only have
//! seen that renewal's record after it was sent, so it cannot take over before the record is
//! `lease_duration` old: stopping at the shorter `renew_deadline` leaves a margin in which
//! neither acts, never one in which both do. A replica that stopped stands by again.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tracing::{debug, info, warn};

/// Timing of the election: client-go's 15 s / 10 s / 2 s, scaled down so that a dead leader is
/// replaced within about 4 s.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long others wait, from when they first saw the holder's last record, to take over.
    pub lease_duration: Duration,
    /// How long the leader keeps acting after sending its last successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews, and twice how often a standby replica looks.
    pub renew_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
        }
    }
}

impl Timing {
    /// Why this timing could let two replicas act at once, or a healthy leader lose the Lease.
    pub fn problem(&self) -> Option<String> {
        if self.renew_deadline >= self.lease_duration {
            return Some(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.renew_every >= self.renew_deadline {
            return Some(format!(
                "renewing every {:?} leaves no second try within the renew deadline ({:?})",
                self.renew_every, self.renew_deadline
            ));
        }
        None
    }
}

/// A leader's term: until when it may act, given the renewals that succeeded.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    renew_deadline: Duration,
    /// When the newest request that won or renewed the Lease was sent.
    confirmed_sent_at: Instant,
}

impl Term {
    /// A term won by a request sent at `sent_at`.
    pub fn won(sent_at: Instant, timing: &Timing) -> Self {
        Term {
            renew_deadline: timing.renew_deadline,
            confirmed_sent_at: sent_at,
        }
    }

    /// A renewal sent at `sent_at` succeeded. Its answer may come late (an API server that
    /// stalls); the term still counts from the sending, which is all another replica's wait is
    /// sure to come after.
    pub fn renewed(&mut self, sent_at: Instant) {
        self.confirmed_sent_at = self.confirmed_sent_at.max(sent_at);
    }

    /// When this replica must have stopped acting unless another renewal succeeds.
    pub fn ends_at(&self) -> Instant {
        self.confirmed_sent_at + self.renew_deadline
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
    #[error("no renewal succeeded within the renew deadline ({0:?}); the last error: {1}")]
    RenewFailed(Duration, String),
    #[error("no renewal was answered within the renew deadline ({0:?})")]
    Unanswered(Duration),
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

    /// Waits until this replica leads; returns its term.
    pub async fn acquire(&mut self) -> Term {
        loop {
            let sent_at = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.identity, lease = %self.name, "became leader");
                    return Term::won(sent_at, &self.timing);
                }
                Ok(false) => debug!("another replica leads"),
                Err(e) => warn!(error = %e, "could not read or write the leader Lease"),
            }
            tokio::time::sleep(self.timing.renew_every / 2).await;
        }
    }

    /// Renews while leading; returns when this replica must stop acting.
    pub async fn keep(&mut self, mut term: Term) -> LostLeadership {
        let mut last_error: Option<String> = None;
        loop {
            // After a failure, sooner: the deadline leaves room for a few tries.
            let wait = match last_error {
                Some(_) => self.timing.renew_every / 2,
                None => self.timing.renew_every,
            };
            let next_try = Instant::now() + wait;
            if next_try >= term.ends_at() {
                tokio::time::sleep_until(term.ends_at().into()).await;
                return self.out_of_time(last_error);
            }
            tokio::time::sleep_until(next_try.into()).await;
            let sent_at = Instant::now();
            let attempt =
                tokio::time::timeout_at(term.ends_at().into(), self.try_acquire_or_renew()).await;
            match attempt {
                Err(_) => return self.out_of_time(last_error),
                Ok(Ok(true)) => {
                    term.renewed(sent_at);
                    last_error = None;
                }
                Ok(Ok(false)) => {
                    let holder = self
                        .observed
                        .as_ref()
                        .and_then(|(h, _, _)| h.clone())
                        .unwrap_or_else(|| "unknown".into());
                    return LostLeadership::TakenBy(holder);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "could not renew the leader Lease; retrying");
                    last_error = Some(e.to_string());
                }
            }
        }
    }

    fn out_of_time(&self, last_error: Option<String>) -> LostLeadership {
        match last_error {
            Some(error) => LostLeadership::RenewFailed(self.timing.renew_deadline, error),
            None => LostLeadership::Unanswered(self.timing.renew_deadline),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timing_leaves_a_margin_between_the_two_clocks() {
        assert_eq!(Timing::default().problem(), None);
        let equal = Timing {
            renew_deadline: Duration::from_secs(4),
            ..Timing::default()
        };
        assert!(equal.problem().unwrap().contains("shorter than the lease"));
        let no_retry = Timing {
            renew_every: Duration::from_secs(3),
            ..Timing::default()
        };
        assert!(no_retry.problem().unwrap().contains("no second try"));
    }

    #[test]
    fn a_term_counts_from_when_a_renewal_was_sent_not_answered() {
        let timing = Timing::default();
        let start = Instant::now();
        let mut term = Term::won(start, &timing);
        assert_eq!(term.ends_at(), start + timing.renew_deadline);
        // Sent at 1 s, answered at 3.9 s after a stall: the term ends at 1 s + deadline.
        let sent = start + Duration::from_secs(1);
        term.renewed(sent);
        assert_eq!(term.ends_at(), sent + timing.renew_deadline);
        // Another replica saw that record no earlier than it was sent, so it waits at least
        // until sent + lease duration: later than this replica stops.
        assert!(term.ends_at() < sent + timing.lease_duration);
        // An older renewal answered after a newer one does not shorten the term.
        term.renewed(start);
        assert_eq!(term.ends_at(), sent + timing.renew_deadline);
    }
}
