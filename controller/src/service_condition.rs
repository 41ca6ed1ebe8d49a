//! What a Service is told about its addresses: a status condition and, on every change of it,
//! an Event. Pure: the runtime decides when to write.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::allocator::Assignment;

/// The condition type ferrolb owns on Services (prefixed: Services are not ferrolb's type).
pub const ADDRESS_ALLOCATED: &str = "ferrolb.io/AddressAllocated";

/// Whether the Service has its addresses, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationState {
    pub allocated: bool,
    pub reason: String,
    pub message: String,
    /// What the Event announcing this state says.
    pub note: String,
}

/// What a Service was last told, kept for each Service so that Events go out on transitions
/// only: whether it is allocated, and a fingerprint of the texts rather than the texts (with
/// 10,000 Services the texts were a few hundred bytes each, for a comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub allocated: bool,
    fingerprint: u64,
}

/// An Event announcing a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl AllocationState {
    /// What is kept of this state once told.
    pub fn reported(&self) -> Reported {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same texts give the same fingerprint for the life of
        // the process, which is all a comparison needs.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&self.reason, &self.message, &self.note).hash(&mut hasher);
        Reported {
            allocated: self.allocated,
            fingerprint: hasher.finish(),
        }
    }

    /// The Service holds `assignment`.
    pub fn allocated(assignment: &Assignment) -> Self {
        let ips = list(&assignment.ips);
        match (&assignment.pool, &assignment.former_pool) {
            (Some(pool), _) => Self {
                allocated: true,
                reason: "Allocated".into(),
                message: format!("Assigned IP [{ips}] from pool {pool}"),
                note: format!("Assigned IP [{ips}]"),
            },
            (None, former) => {
                let message = format!(
                    "Kept IP [{ips}], which no IPAddressPool contains any more{}; it is not renumbered until the Service's requested addresses or pool change, or it is recreated",
                    former
                        .as_ref()
                        .map(|p| format!(" (pool {p} shrank or was deleted)"))
                        .unwrap_or_default()
                );
                Self {
                    allocated: true,
                    reason: "OutsidePool".into(),
                    note: message.clone(),
                    message,
                }
            }
        }
    }

    /// The Service gets no address (or not the one it asked for).
    pub fn refused(reason: &str, message: String) -> Self {
        Self {
            allocated: false,
            reason: reason.into(),
            note: message.clone(),
            message,
        }
    }

    /// The Event that says this state happened.
    pub fn announcement(&self) -> Announcement {
        match (self.allocated, self.reason.as_str()) {
            (true, "OutsidePool") => Announcement {
                warning: true,
                reason: "AddressOutsidePool",
                note: self.note.clone(),
            },
            (true, _) => Announcement {
                warning: false,
                reason: "IPAllocated",
                note: self.note.clone(),
            },
            (false, _) => Announcement {
                warning: true,
                reason: "AllocationFailed",
                note: self.note.clone(),
            },
        }
    }

    fn status(&self) -> &'static str {
        if self.allocated { "True" } else { "False" }
    }

    /// Whether `condition` already says this.
    pub fn is_shown_by(&self, condition: &Condition) -> bool {
        condition.status == self.status()
            && condition.reason == self.reason
            && condition.message == self.message
    }

    /// The condition to write; the transition time moves only when the status does.
    pub fn condition(
        &self,
        generation: Option<i64>,
        previous: Option<&Condition>,
        now: Time,
    ) -> Condition {
        let last_transition_time = match previous {
            Some(previous) if previous.status == self.status() => {
                previous.last_transition_time.clone()
            }
            _ => now,
        };
        Condition {
            type_: ADDRESS_ALLOCATED.into(),
            status: self.status().into(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            observed_generation: generation,
            last_transition_time,
        }
    }
}

/// ferrolb's condition on a Service, if it has one.
pub fn current(service: &Service) -> Option<&Condition> {
    service
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ADDRESS_ALLOCATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(pool: Option<&str>, former: Option<&str>) -> Assignment {
        Assignment {
            ips: vec!["192.168.117.100".parse().unwrap()],
            pool: pool.map(str::to_string),
            former_pool: former.map(str::to_string),
        }
    }

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn allocated_from_a_pool() {
        let state = AllocationState::allocated(&assignment(Some("first-pool"), None));
        assert_eq!(
            state.message,
            "Assigned IP [192.168.117.100] from pool first-pool"
        );
        let event = state.announcement();
        assert_eq!(
            (event.warning, event.reason, event.note.as_str()),
            (false, "IPAllocated", "Assigned IP [192.168.117.100]")
        );
    }

    #[test]
    fn kept_outside_its_pool_is_a_warning_naming_the_pool() {
        let state = AllocationState::allocated(&assignment(None, Some("first-pool")));
        assert!(state.allocated);
        assert_eq!(state.reason, "OutsidePool");
        assert!(
            state
                .message
                .contains("pool first-pool shrank or was deleted")
        );
        let event = state.announcement();
        assert!(event.warning);
        assert_eq!(event.reason, "AddressOutsidePool");
    }

    #[test]
    fn refusal_is_false_with_the_reason() {
        let state = AllocationState::refused(
            "NotInAnyPool",
            "192.0.2.9 is not in any IPAddressPool".into(),
        );
        let condition = state.condition(Some(3), None, time("2026-11-22T10:00:00Z"));
        assert_eq!(condition.type_, ADDRESS_ALLOCATED);
        assert_eq!(condition.status, "False");
        assert_eq!(condition.reason, "NotInAnyPool");
        assert_eq!(condition.observed_generation, Some(3));
        assert_eq!(state.announcement().reason, "AllocationFailed");
        assert!(state.is_shown_by(&condition));
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let earlier = time("2026-11-22T10:00:00Z");
        let now = time("2026-11-22T11:00:00Z");
        let orphaned = AllocationState::allocated(&assignment(None, Some("first-pool")));
        let before = AllocationState::allocated(&assignment(Some("first-pool"), None)).condition(
            None,
            None,
            earlier.clone(),
        );
        let same_status = orphaned.condition(None, Some(&before), now.clone());
        assert_eq!(same_status.last_transition_time, earlier);
        assert!(!orphaned.is_shown_by(&before));
        let refused = AllocationState::refused("NoPool", "no pool".into());
        assert_eq!(
            refused
                .condition(None, Some(&before), now.clone())
                .last_transition_time,
            now
        );
    }

    #[test]
    fn what_is_kept_tells_states_apart() {
        let allocated = AllocationState::allocated(&assignment(Some("first-pool"), None));
        let orphaned = AllocationState::allocated(&assignment(None, Some("first-pool")));
        let refused = AllocationState::refused("NoPool", "no pool".into());
        let refused_otherwise = AllocationState::refused("NoPool", "no pool at all".into());
        assert_eq!(allocated.reported(), allocated.clone().reported());
        assert!(allocated.reported().allocated);
        assert!(!refused.reported().allocated);
        assert_ne!(allocated.reported(), orphaned.reported());
        assert_ne!(refused.reported(), refused_otherwise.reported());
    }
}
