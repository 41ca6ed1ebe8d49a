//! SWIM membership between speakers over real UDP on loopback: they find each other from
//! one introduction, notice a crashed member without any message from it, and notice a
//! graceful leave.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrolb_speaker::membership::{Membership, Timing};
use tokio::sync::watch;

/// A speaker's membership on a runtime of its own, so that dropping it is a crash: its tasks
/// and socket vanish without a word to the others.
struct Member {
    addr: SocketAddr,
    alive: watch::Receiver<BTreeSet<String>>,
    leave: Option<std::sync::mpsc::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(node: &str, introduce_to: Option<SocketAddr>) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (leave_tx, leave_rx) = std::sync::mpsc::channel::<bool>();
        let node = node.to_string();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let membership = runtime
                .block_on(Membership::start(
                    &node,
                    "127.0.0.1:0".parse().unwrap(),
                    None,
                    Timing::default(),
                    3,
                ))
                .unwrap();
            if let Some(peer) = introduce_to {
                membership.join(peer);
            }
            ready_tx
                .send((membership.local_addr, membership.alive()))
                .unwrap();
            // true: leave gracefully; false or a dropped sender: crash.
            if leave_rx.recv().unwrap_or(false) {
                membership.leave();
                runtime.block_on(async {
                    let mut alive = membership.alive();
                    while !alive.borrow().is_empty() {
                        alive.changed().await.unwrap();
                    }
                });
            }
            drop(runtime);
        });
        let (addr, alive) = ready_rx.recv().unwrap();
        Member {
            addr,
            alive,
            leave: Some(leave_tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self, graceful: bool) {
        if let Some(leave) = self.leave.take() {
            let _ = leave.send(graceful);
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop(false);
    }
}

fn wait_until_alive(member: &Member, expected: &[&str], what: &str) -> Duration {
    let started = Instant::now();
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    while *member.alive.borrow() != expected {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: still {:?}",
            member.alive.borrow()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

#[test]
fn members_find_each_other_and_notice_a_crash() {
    let a = Member::start("node-a", None);
    let b = Member::start("node-b", Some(a.addr));
    let mut c = Member::start("node-c", Some(a.addr));
    let all = ["node-a", "node-b", "node-c"];
    for member in [&a, &b, &c] {
        wait_until_alive(member, &all, "everyone learns everyone");
    }
    // Garbage on the gossip port is refused, never fatal.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for length in [0usize, 1, 3, 64, 1500] {
        let bytes: Vec<u8> = (0..length).map(|i| (i * 37 % 251) as u8).collect();
        garbage.send_to(&bytes, a.addr).unwrap();
    }
    c.stop(false);
    let took = wait_until_alive(&a, &["node-a", "node-b"], "a notices c crashed");
    wait_until_alive(&b, &["node-a", "node-b"], "b notices c crashed");
    eprintln!("crash noticed after {} ms", took.as_millis());
}

#[test]
fn a_graceful_leave_is_noticed() {
    let a = Member::start("node-a", None);
    let mut b = Member::start("node-b", Some(a.addr));
    wait_until_alive(&a, &["node-a", "node-b"], "a learns b");
    b.stop(true);
    wait_until_alive(&a, &["node-a"], "a notices b left");
}
