//! Address conflicts heard on the wire: another MAC answering or announcing an address this
//! node answers for (an ARP reply, a gratuitous ARP, an ARP request sent from the address, a
//! Neighbor Advertisement). Two speakers that both believe they own an address (a split brain
//! the quorum rules have not ended yet) or a host configured with a LoadBalancer address by
//! hand both show up this way.
//!
//! The resolution is the same on every node and needs no message between them: the lower MAC
//! keeps the address and announces it again at once, so that the segment's caches end on it;
//! the higher MAC stops answering for `YIELD_FOR`, then answers again if it is still elected.
//! A conflict that persists repeats that cycle, counted and reported every time, and the
//! segment's caches keep ending on the lower MAC.
//!
//! Pure bookkeeping: the responder hears, the speaker's reconciler acts on what this says.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::packet::{ClaimKind, MacAddr};

/// How long the higher MAC stays silent after hearing the lower one claim an address: long
/// enough for a conflicting speaker to end its own takeover announcements (2 s), short enough
/// that an address whose other claimant has stepped down is answered again soon.
pub const YIELD_FOR: Duration = Duration::from_secs(3);
/// At most one re-announcement per address in this time: a flood of conflicting frames costs
/// one gratuitous burst per second, not one per frame.
pub const REASSERT_EVERY: Duration = Duration::from_secs(1);
/// A conflict between the same address and MAC is logged and recorded as an Event at most
/// this often (it is counted every time).
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// One conflicting frame, as the responder heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub ip: IpAddr,
    pub interface: String,
    /// This node's MAC on `interface`.
    pub ours: MacAddr,
    /// The MAC the frame claimed the address for.
    pub theirs: MacAddr,
    pub kind: ClaimKind,
}

/// Who keeps an address two MACs claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// This node has the lower MAC: it keeps answering and announces again.
    Keep,
    /// This node has the higher MAC: it stops answering for `YIELD_FOR`.
    Yield,
}

/// The lower MAC keeps the address: both sides compute the same answer from the two MACs.
pub fn resolve(ours: MacAddr, theirs: MacAddr) -> Resolution {
    if ours.octets() <= theirs.octets() {
        Resolution::Keep
    } else {
        Resolution::Yield
    }
}

/// What to do about one conflicting frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handling {
    pub resolution: Resolution,
    /// Log it and record a Warning Event (not done for this address and MAC recently).
    pub report: bool,
    /// Send gratuitous announcements again now (only when keeping).
    pub reassert: bool,
}

/// The conflicts this node is in the middle of.
#[derive(Debug, Default)]
pub struct Conflicts {
    /// Addresses yielded, until when.
    yielded: HashMap<IpAddr, Instant>,
    reported: HashMap<(IpAddr, [u8; 6]), Instant>,
    reasserted: HashMap<IpAddr, Instant>,
}

impl Conflicts {
    pub fn observe(&mut self, conflict: &Conflict, now: Instant) -> Handling {
        let resolution = resolve(conflict.ours, conflict.theirs);
        let recently = |at: Option<&Instant>, every: Duration| {
            at.is_some_and(|at| now.saturating_duration_since(*at) < every)
        };
        let key = (conflict.ip, conflict.theirs.octets());
        let report = !recently(self.reported.get(&key), REPORT_EVERY);
        if report {
            self.reported.insert(key, now);
        }
        let mut reassert = false;
        match resolution {
            Resolution::Yield => {
                self.yielded.insert(conflict.ip, now + YIELD_FOR);
            }
            Resolution::Keep => {
                reassert = !recently(self.reasserted.get(&conflict.ip), REASSERT_EVERY);
                if reassert {
                    self.reasserted.insert(conflict.ip, now);
                }
            }
        }
        self.forget_old(now);
        Handling {
            resolution,
            report,
            reassert,
        }
    }

    /// Ends every yield: a peer was declared down, and it may well be the other claimant. A
    /// yield then only delays the takeover the election now asks of this node (a link flap
    /// of the owner made the next failover wait out the whole `YIELD_FOR`). If the other
    /// claimant is still there, its next frame starts a new yield.
    pub fn end_yields(&mut self) {
        self.yielded.clear();
    }

    /// The addresses this node must not answer for now.
    pub fn yielded(&mut self, now: Instant) -> BTreeSet<IpAddr> {
        self.yielded.retain(|_, until| *until > now);
        self.yielded.keys().copied().collect()
    }

    fn forget_old(&mut self, now: Instant) {
        self.reported
            .retain(|_, at| now.saturating_duration_since(*at) < REPORT_EVERY);
        self.reasserted
            .retain(|_, at| now.saturating_duration_since(*at) < REASSERT_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
    const HIGH: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x02);

    fn conflict(ours: MacAddr, theirs: MacAddr) -> Conflict {
        Conflict {
            ip: IpAddr::from([192, 0, 2, 10]),
            interface: "eth0".into(),
            ours,
            theirs,
            kind: ClaimKind::GratuitousArp,
        }
    }

    #[test]
    fn both_sides_agree_that_the_lower_mac_keeps_the_address() {
        assert_eq!(resolve(LOW, HIGH), Resolution::Keep);
        assert_eq!(resolve(HIGH, LOW), Resolution::Yield);
        // Compared as bytes, most significant first.
        let a = MacAddr(0x01, 0xff, 0xff, 0xff, 0xff, 0xff);
        let b = MacAddr(0x02, 0, 0, 0, 0, 0);
        assert_eq!(resolve(a, b), Resolution::Keep);
        assert_eq!(resolve(b, a), Resolution::Yield);
    }

    #[test]
    fn the_higher_mac_yields_for_a_while_then_may_answer_again() {
        let mut conflicts = Conflicts::default();
        let start = Instant::now();
        let handling = conflicts.observe(&conflict(HIGH, LOW), start);
        assert_eq!(handling.resolution, Resolution::Yield);
        assert!(!handling.reassert);
        let ip = IpAddr::from([192, 0, 2, 10]);
        assert_eq!(conflicts.yielded(start), BTreeSet::from([ip]));
        assert_eq!(
            conflicts.yielded(start + YIELD_FOR - Duration::from_millis(1)),
            BTreeSet::from([ip])
        );
        assert!(conflicts.yielded(start + YIELD_FOR).is_empty());
    }

    #[test]
    fn a_flood_is_reasserted_once_a_second_and_reported_once_a_minute() {
        let mut conflicts = Conflicts::default();
        let start = Instant::now();
        let mut reasserted = 0;
        let mut reported = 0;
        // 100 frames a second for ten seconds.
        for i in 0..1_000u64 {
            let at = start + Duration::from_millis(i * 10);
            let handling = conflicts.observe(&conflict(LOW, HIGH), at);
            assert_eq!(handling.resolution, Resolution::Keep);
            reasserted += usize::from(handling.reassert);
            reported += usize::from(handling.report);
        }
        assert_eq!(reasserted, 10);
        assert_eq!(reported, 1);
        assert!(
            conflicts.yielded(start).is_empty(),
            "keeping yields nothing"
        );
        // Another MAC on the same address is news.
        let third = MacAddr(0x02, 0, 0, 0, 0, 0x03);
        assert!(
            conflicts
                .observe(&conflict(LOW, third), start + Duration::from_secs(10))
                .report
        );
    }

    #[test]
    fn a_peer_declared_down_ends_the_yields() {
        let mut conflicts = Conflicts::default();
        let start = Instant::now();
        conflicts.observe(&conflict(HIGH, LOW), start);
        assert_eq!(conflicts.yielded(start).len(), 1);
        conflicts.end_yields();
        assert!(conflicts.yielded(start).is_empty());
        // The other claimant, still there, is yielded to again at its next frame.
        conflicts.observe(&conflict(HIGH, LOW), start);
        assert_eq!(conflicts.yielded(start).len(), 1);
    }
}
