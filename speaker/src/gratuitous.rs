//! When gratuitous ARP / unsolicited Neighbor Advertisements go out after a takeover: at once,
//! then a few more times in case the first ones were lost or a switch was still learning.
//!
//! One schedule holds every address being announced, so that a node taking over thousands of
//! addresses at once (its peer died) runs one timer, not a thread per address. The schedule
//! itself is pure; [`spawn`] runs it on a thread that sends the frames.
//!
//! Optionally (`--gratuitous-arp-interval`) an owned address is announced again every period
//! after that, for as long as it is owned: switches whose forwarding entries age out sooner
//! than the clients' neighbour entries otherwise flood, or drop, the traffic in between.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tracing::warn;

/// Offsets from the takeover at which an address is announced.
pub const GRATUITOUS_SCHEDULE: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// The pending announcements, by when they are due. `K` names what to announce (an
/// interface and an address).
#[derive(Debug)]
pub struct Schedule<K> {
    /// (due, sequence) → what; the sequence keeps entries due at the same instant apart.
    due: BTreeMap<(Instant, u64), Pending<K>>,
    /// Where each announced `K` sits in `due`: a new takeover restarts its schedule.
    at: HashMap<K, (Instant, u64)>,
    sequence: u64,
    /// Announce again this often after the takeover's steps, while owned.
    period: Option<Duration>,
}

#[derive(Debug)]
struct Pending<K> {
    key: K,
    started: Instant,
    step: usize,
}

impl<K> Default for Schedule<K> {
    fn default() -> Self {
        Schedule {
            due: BTreeMap::new(),
            at: HashMap::new(),
            sequence: 0,
            period: None,
        }
    }
}

impl<K: Clone + Eq + Hash> Schedule<K> {
    /// A schedule that also announces every owned address every `period` (none when zero).
    pub fn with_period(period: Duration) -> Self {
        Schedule {
            period: (!period.is_zero()).then_some(period),
            ..Schedule::default()
        }
    }

    /// Starts (or restarts) announcing `key` from `now`.
    pub fn start(&mut self, key: K, now: Instant) {
        if let Some(slot) = self.at.remove(&key) {
            self.due.remove(&slot);
        }
        self.insert(Pending {
            key,
            started: now,
            step: 0,
        });
    }

    /// When a step is due: the takeover's steps, then one period after another.
    fn due(&self, pending: &Pending<K>) -> Instant {
        let last = GRATUITOUS_SCHEDULE.len() - 1;
        match GRATUITOUS_SCHEDULE.get(pending.step) {
            Some(offset) => pending.started + *offset,
            None => {
                let periods = u32::try_from(pending.step - last).unwrap_or(u32::MAX);
                let period = self.period.unwrap_or_default();
                pending.started + GRATUITOUS_SCHEDULE[last] + period.saturating_mul(periods)
            }
        }
    }

    fn insert(&mut self, pending: Pending<K>) {
        let when = self.due(&pending);
        self.sequence += 1;
        let slot = (when, self.sequence);
        self.at.insert(pending.key.clone(), slot);
        self.due.insert(slot, pending);
    }

    /// When the next announcement is due, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.keys().next().map(|(when, _)| *when)
    }

    /// Takes what is due at `now`, in order. Each is kept for its next step while `still_ours`
    /// says so; one that is no longer ours is dropped and not returned.
    pub fn take_due(&mut self, now: Instant, still_ours: impl Fn(&K) -> bool) -> Vec<K> {
        let mut taken = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let pending = entry.remove();
            self.at.remove(&pending.key);
            if !still_ours(&pending.key) {
                continue;
            }
            taken.push(pending.key.clone());
            if pending.step + 1 < GRATUITOUS_SCHEDULE.len() || self.period.is_some() {
                self.insert(Pending {
                    step: pending.step + 1,
                    ..pending
                });
            }
        }
        taken
    }

    /// How many announcements are pending.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// Frames sent back to back before a pause of [`PACE_PAUSE`]: a takeover of thousands of
/// addresses must not arrive as one burst that overflows the receivers' backlog (1,000 frames
/// by default on Linux) or trips a switch's broadcast storm control. At most about 128,000
/// frames/s: the 6,666 frames of 3,333 IPv4 addresses go out within about 50 ms.
pub const PACE_BURST: usize = 128;
pub const PACE_PAUSE: Duration = Duration::from_millis(1);

/// Runs a schedule on its own thread: `still_ours` is asked when each announcement is due and
/// `send` sends it, returning the frames it sent. The thread ends when the returned sender is
/// dropped.
pub fn spawn<K>(
    period: Duration,
    still_ours: impl Fn(&K) -> bool + Send + 'static,
    send: impl Fn(&K) -> usize + Send + 'static,
) -> Sender<K>
where
    K: Clone + Eq + Hash + Send + 'static,
{
    let (starts, started) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("gratuitous".into())
        .spawn(move || run(Schedule::with_period(period), &started, still_ours, send));
    if let Err(e) = spawned {
        warn!(error = %e, "could not start the gratuitous announcements' thread");
    }
    starts
}

fn run<K: Clone + Eq + Hash>(
    mut schedule: Schedule<K>,
    started: &Receiver<K>,
    still_ours: impl Fn(&K) -> bool,
    send: impl Fn(&K) -> usize,
) {
    // Frames sent since the last pause (or the last wait as long as one).
    let mut in_burst = 0;
    loop {
        let waiting_since = Instant::now();
        let received = match schedule.next_due() {
            Some(when) => started
                .recv_timeout(when.saturating_duration_since(Instant::now()))
                .map_err(|e| e == RecvTimeoutError::Disconnected),
            None => started.recv().map_err(|_| true),
        };
        match received {
            Ok(key) => {
                schedule.start(key, Instant::now());
                // Takeovers come in bursts: schedule the whole burst before sending.
                while let Ok(key) = started.try_recv() {
                    schedule.start(key, Instant::now());
                }
            }
            Err(true) => return,
            Err(false) => {}
        }
        if waiting_since.elapsed() >= PACE_PAUSE {
            in_burst = 0;
        }
        for key in schedule.take_due(Instant::now(), &still_ours) {
            if in_burst >= PACE_BURST {
                std::thread::sleep(PACE_PAUSE);
                in_burst = 0;
            }
            in_burst += send(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn an_address_is_announced_at_each_step_then_dropped() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.start("a", start);
        let mut sent = Vec::new();
        for ms in [0, 499, 500, 999, 1000, 1999, 2000, 5000] {
            if !schedule.take_due(at(start, ms), |_| true).is_empty() {
                sent.push(ms);
            }
        }
        assert_eq!(sent, vec![0, 500, 1000, 2000]);
        assert!(schedule.is_empty());
        assert_eq!(schedule.next_due(), None);
    }

    #[test]
    fn an_address_no_longer_ours_ends_its_schedule() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.start("a", start);
        schedule.start("b", start);
        assert_eq!(schedule.take_due(start, |_| true), vec!["a", "b"]);
        assert_eq!(schedule.take_due(at(start, 500), |k| *k == "b"), vec!["b"]);
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule.next_due(), Some(at(start, 1000)));
    }

    #[test]
    fn a_new_takeover_restarts_the_schedule_instead_of_adding_one() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.start("a", start);
        assert_eq!(schedule.take_due(start, |_| true), vec!["a"]);
        schedule.start("a", at(start, 300));
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule.take_due(at(start, 300), |_| true), vec!["a"]);
        // The first schedule's 500 ms step is gone; the new one's comes at 800 ms.
        assert!(schedule.take_due(at(start, 799), |_| true).is_empty());
        assert_eq!(schedule.next_due(), Some(at(start, 800)));
    }

    #[test]
    fn a_burst_is_sent_in_the_order_it_was_started() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        for key in 0..1000 {
            schedule.start(key, start);
        }
        let sent = schedule.take_due(start, |_| true);
        assert_eq!(sent, (0..1000).collect::<Vec<_>>());
        assert_eq!(schedule.len(), 1000);
    }

    #[test]
    fn with_a_period_an_owned_address_is_announced_again_until_it_is_lost() {
        let start = Instant::now();
        let mut schedule = Schedule::with_period(Duration::from_secs(30));
        schedule.start("a", start);
        let mut sent = Vec::new();
        for ms in [0, 500, 1000, 2000, 31_999, 32_000, 62_000, 92_000] {
            if !schedule.take_due(at(start, ms), |_| true).is_empty() {
                sent.push(ms);
            }
        }
        assert_eq!(sent, vec![0, 500, 1000, 2000, 32_000, 62_000, 92_000]);
        assert_eq!(schedule.next_due(), Some(at(start, 122_000)));
        // Lost: the next due step ends the schedule.
        assert!(schedule.take_due(at(start, 122_000), |_| false).is_empty());
        assert!(schedule.is_empty());
        // A zero period is no period.
        let mut once = Schedule::with_period(Duration::ZERO);
        once.start("b", start);
        for ms in [0, 500, 1000, 2000] {
            assert_eq!(once.take_due(at(start, ms), |_| true), vec!["b"]);
        }
        assert!(once.is_empty());
    }

    /// The thread, with every key always owned and each send (one frame) recorded with
    /// when it happened.
    fn spawn_recording() -> (Sender<u32>, Receiver<(u32, Instant)>) {
        let (sent_tx, sent_rx) = std::sync::mpsc::channel();
        let starts = spawn(
            Duration::ZERO,
            |_: &u32| true,
            move |key: &u32| {
                let _ = sent_tx.send((*key, Instant::now()));
                1
            },
        );
        (starts, sent_rx)
    }

    #[test]
    fn a_large_takeover_is_sent_in_paced_bursts() {
        let (starts, sent_rx) = spawn_recording();
        let burst = 3 * PACE_BURST as u32;
        for key in 0..burst {
            starts.send(key).unwrap();
        }
        let sent: Vec<(u32, Instant)> = (0..burst)
            .map(|_| sent_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        // However the keys reached the thread, no more than a burst goes out within a pause.
        for window in sent.windows(PACE_BURST + 1) {
            let span = window[PACE_BURST].1 - window[0].1;
            assert!(
                span >= PACE_PAUSE,
                "{} frames within {span:?}",
                PACE_BURST + 1
            );
        }
    }

    #[test]
    fn the_thread_sends_at_once_and_ends_with_its_sender() {
        let (starts, sent_rx) = spawn_recording();
        starts.send(7).unwrap();
        assert_eq!(
            sent_rx
                .recv_timeout(Duration::from_secs(5))
                .map(|(key, _)| key),
            Ok(7)
        );
        drop(starts);
        // The thread ends: its `send` closure, and with it the channel, is dropped.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match sent_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the thread did not end"),
                Ok(_) => {}
            }
        }
    }
}
