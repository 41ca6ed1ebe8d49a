//! Which speakers are alive, learned from the speakers themselves over UDP (SWIM, with the
//! `foca` crate), so that a dead node is noticed in well under a second and without the API
//! server in the path.
//!
//! SWIM keeps the traffic per node constant: every probe period each member probes one other
//! (a ping and its ack, or `indirect_probes` helpers when the ack is late) and piggybacks
//! membership updates on those messages, plus a small periodic gossip to `gossip_fanout`
//! members while there is news to spread. For N nodes that is O(N) messages per period in
//! total, against O(N²) for all-to-all heartbeats. In steady state (nothing to gossip) a node
//! sends a ping and an ack per probe period, every 50 ms by default: about 40 datagrams/s
//! whatever the cluster size; docs/benchmarks.md has the measured bytes.
//!
//! Detection time of a dead member: it is probed by someone within about one period (each
//! of the N-1 others picks it with probability 1/(N-1) per period, so the chance nobody does
//! is (1-1/(N-1))^(N-1) ≈ 37%, shrinking geometrically), the probe fails at the end of that
//! period, and after `suspect_to_down` without a refutation it is declared down and the news
//! spreads with the next gossip tick (a fifth of the period). Defaults: ≈ 50 + 50 + 100 ms.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foca::{Codec, Config, Foca, Identity, Message, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::two_way_contact::{MessageKind, Proof, TwoWayContact};

/// A speaker as the others know it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub node: String,
    pub addr: SocketAddr,
    /// Bumped on each start, so that a restarted speaker is a new identity that wins over
    /// its old, possibly suspected, self.
    pub generation: u64,
}

impl Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Peer {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// How fast failures are detected; see the module comment for the arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub suspect_to_down: Duration,
    pub indirect_probes: usize,
    pub gossip_fanout: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            // 50/20/80 ms: failover in ~0.18 s (median of 50 runs, SIGKILL and link cut), and
            // no false failover in 60 s with both cores saturated and 100,000+ ARP requests/s
            // at the owner (docs/benchmarks.md). The price: twice the probes of 100/40/200 ms
            // (still a few KB/s per node whatever the cluster's size), and a speaker starved
            // of CPU for over ~130 ms in a row is suspected and may lose its addresses.
            probe_period: Duration::from_millis(50),
            probe_rtt: Duration::from_millis(20),
            suspect_to_down: Duration::from_millis(80),
            indirect_probes: 3,
            gossip_fanout: 3,
        }
    }
}

impl Timing {
    /// The default timing with the three failure-detection times replaced, checked: a probe
    /// must time out within its period, and none may be zero.
    pub fn with_detection(
        probe_period: Duration,
        probe_timeout: Duration,
        suspect_to_down: Duration,
    ) -> Result<Timing, String> {
        if probe_period.is_zero() || probe_timeout.is_zero() || suspect_to_down.is_zero() {
            return Err(
                "the probe period, probe timeout and suspect timeout must not be zero".into(),
            );
        }
        if probe_timeout >= probe_period {
            return Err(format!(
                "the probe timeout ({} ms) must be shorter than the probe period ({} ms)",
                probe_timeout.as_millis(),
                probe_period.as_millis()
            ));
        }
        Ok(Timing {
            probe_period,
            probe_rtt: probe_timeout,
            suspect_to_down,
            ..Timing::default()
        })
    }
}

/// Periodic gossip runs this many times per probe period.
const GOSSIP_TICKS_PER_PROBE: u32 = 5;

fn foca_config(timing: Timing, expected_members: u32) -> Config {
    let mut config =
        Config::new_lan(NonZeroU32::new(expected_members.max(1)).unwrap_or(NonZeroU32::MIN));
    config.probe_period = timing.probe_period;
    config.probe_rtt = timing.probe_rtt;
    config.suspect_to_down_after = timing.suspect_to_down;
    config.num_indirect_probes =
        NonZeroUsize::new(timing.indirect_probes).unwrap_or(NonZeroUsize::MIN);
    config.max_transmissions = config.max_transmissions.max(NonZeroU8::MIN);
    if let Some(gossip) = config.periodic_gossip.as_mut() {
        // foca gossips only while it has news to spread, so a faster tick costs nothing in
        // steady state, and a peer's death reaches the node taking over its addresses
        // within a tick of being declared instead of up to a probe period later.
        gossip.frequency = timing.probe_period / GOSSIP_TICKS_PER_PROBE;
        gossip.num_members = NonZeroUsize::new(timing.gossip_fanout).unwrap_or(NonZeroUsize::MIN);
    }
    // Members that come back are noticed within a second.
    if let Some(announce) = config.periodic_announce_to_down_members.as_mut() {
        announce.frequency = Duration::from_secs(1);
    }
    config
}

enum Input {
    Data(Bytes),
    /// A timer of the membership instance numbered `epoch`.
    Timer(u64, Timer<Peer>),
    Join(SocketAddr),
    Leave,
}

/// The running membership of this speaker.
pub struct Membership {
    inputs: mpsc::UnboundedSender<Input>,
    alive: watch::Receiver<BTreeSet<String>>,
    pub local_addr: SocketAddr,
}

impl Membership {
    /// Binds `bind` and starts taking part; `advertise` is the address the others reach this
    /// speaker at (its Node's InternalIP and the gossip port).
    pub async fn start(
        node: &str,
        bind: SocketAddr,
        advertise: Option<SocketAddr>,
        timing: Timing,
        expected_members: u32,
    ) -> anyhow::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(bind).await?);
        let local_addr = socket.local_addr()?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let me = Peer {
            node: node.to_string(),
            addr: advertise.unwrap_or(local_addr),
            generation,
        };
        let config = foca_config(timing, expected_members);
        let max_packet = config.max_packet_size.get();
        let rng: StdRng = rand::make_rng();
        let mut foca = Foca::new(me.clone(), config.clone(), rng, PostcardCodec);
        // Bumped each time the membership starts over; timers of an older one are dropped.
        let mut epoch = 0u64;
        let mut contact = TwoWayContact::<Peer>::default();
        let (inputs, mut input_rx) = mpsc::unbounded_channel::<Input>();
        let (alive_tx, alive) = watch::channel(BTreeSet::from([me.node.clone()]));

        let receiver = socket.clone();
        let data_inputs = inputs.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; max_packet];
            loop {
                match receiver.recv_from(&mut buffer).await {
                    Ok((length, _)) => {
                        let data = Bytes::copy_from_slice(&buffer[..length]);
                        if data_inputs.send(Input::Data(data)).is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!(error = %e, "gossip receive failed"),
                }
            }
        });

        let timer_inputs = inputs.clone();
        tokio::spawn(async move {
            let mut runtime = foca::AccumulatingRuntime::new();
            while let Some(input) = input_rx.recv().await {
                let mut changed = false;
                let result = match input {
                    Input::Data(data) => {
                        let mut answer = None;
                        if let Ok(header) = PostcardCodec.decode_header(&data[..]) {
                            let kind = match header.message {
                                Message::Feed => MessageKind::Feed,
                                _ => MessageKind::Other,
                            };
                            let proof =
                                contact.observe(foca.identity(), &header.src, &header.dst, kind);
                            if proof != Proof::Known {
                                debug!(node = %header.src.node, "peer hears this speaker");
                                changed = true;
                            }
                            if proof == Proof::NewAnswerIt {
                                answer = Some(header.src);
                            }
                        }
                        let handled = foca.handle_data(&data, &mut runtime);
                        match answer {
                            Some(peer) if handled.is_ok() => foca.announce(peer, &mut runtime),
                            _ => handled,
                        }
                    }
                    Input::Timer(of, timer) if of == epoch => {
                        foca.handle_timer(timer, &mut runtime)
                    }
                    Input::Timer(..) => Ok(()),
                    Input::Join(addr) => {
                        // Only the address of a peer is known before it answers; foca accepts
                        // an announcement addressed that way.
                        let peer = Peer {
                            node: String::new(),
                            addr,
                            generation: 0,
                        };
                        foca.announce(peer, &mut runtime)
                    }
                    Input::Leave => {
                        let left = foca.leave_cluster(&mut runtime);
                        flush(&socket, &mut runtime).await;
                        if let Err(e) = left {
                            warn!(error = %e, "leaving the gossip cluster");
                        }
                        let _ = alive_tx.send(BTreeSet::new());
                        return;
                    }
                };
                if let Err(e) = result {
                    // Stray or corrupt datagrams end here: counted by foca's refusal, never fatal.
                    debug!(error = %e, "gossip input refused");
                }
                flush(&socket, &mut runtime).await;
                while let Some((delay, timer)) = runtime.to_schedule() {
                    let timer_inputs = timer_inputs.clone();
                    let of = epoch;
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = timer_inputs.send(Input::Timer(of, timer));
                    });
                }
                while let Some(notification) = runtime.to_notify() {
                    match notification {
                        OwnedNotification::MemberUp(peer) => {
                            info!(node = %peer.node, addr = %peer.addr, "peer up");
                            changed = true;
                        }
                        OwnedNotification::MemberDown(peer) => {
                            info!(node = %peer.node, addr = %peer.addr, "peer down");
                            contact.forget(&peer);
                            changed = true;
                        }
                        OwnedNotification::Rename(before, after) => {
                            debug!(?before, ?after, "peer restarted");
                            contact.forget(&before);
                            changed = true;
                        }
                        OwnedNotification::Idle => {
                            // Cut off from everyone, this node has declared every peer down,
                            // and those verdicts wait in its gossip backlog. Passed on when the
                            // link comes back, they would make the others drop live peers (and
                            // their ServiceL2Status). A fresh membership, under a renewed
                            // identity, carries none; the speaker introduces it to the peers
                            // it does not hear (every REINTRODUCE_EVERY).
                            info!("no live peer: starting the membership over");
                            let renewed = foca.identity().renew().unwrap_or_else(|| me.clone());
                            foca =
                                Foca::new(renewed, config.clone(), rand::make_rng(), PostcardCodec);
                            epoch += 1;
                            contact.forget_all();
                            changed = true;
                        }
                        OwnedNotification::Defunct => {
                            warn!("declared down by the others; rejoining");
                            if let Err(e) = foca.reuse_down_identity() {
                                warn!(error = %e, "could not rejoin");
                            }
                            contact.forget_all();
                            changed = true;
                        }
                        _ => {}
                    }
                }
                if changed {
                    contact.keep_only(foca.iter_members().map(|m| m.id()));
                    // A member counts once it has shown it hears this speaker too; see
                    // `two_way_contact`.
                    let mut alive: BTreeSet<String> = foca
                        .iter_members()
                        .filter(|m| contact.is_proven(m.id()))
                        .map(|m| m.id().node.clone())
                        .filter(|n| !n.is_empty())
                        .collect();
                    alive.insert(foca.identity().node.clone());
                    alive_tx.send_replace(alive);
                }
            }
        });
        Ok(Membership {
            inputs,
            alive,
            local_addr,
        })
    }

    /// Introduces this speaker to a peer (from the Node objects); harmless if already known.
    pub fn join(&self, peer: SocketAddr) {
        let _ = self.inputs.send(Input::Join(peer));
    }

    /// The names of the live speakers' nodes, this one included.
    pub fn alive(&self) -> watch::Receiver<BTreeSet<String>> {
        self.alive.clone()
    }

    /// Tells the others this speaker is going (graceful shutdown: they take over at once).
    pub fn leave(&self) {
        let _ = self.inputs.send(Input::Leave);
    }

    /// A handle that can leave after the membership itself has moved elsewhere.
    pub fn leave_handle(&self) -> LeaveHandle {
        LeaveHandle {
            inputs: self.inputs.clone(),
            alive: self.alive.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LeaveHandle {
    inputs: mpsc::UnboundedSender<Input>,
    alive: watch::Receiver<BTreeSet<String>>,
}

impl LeaveHandle {
    /// Leaves and waits (at most a second) until the goodbye is sent.
    pub async fn leave(&self) {
        let _ = self.inputs.send(Input::Leave);
        let mut alive = self.alive.clone();
        let sent = async {
            while !alive.borrow_and_update().is_empty() {
                if alive.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), sent).await;
    }
}

async fn flush(socket: &UdpSocket, runtime: &mut foca::AccumulatingRuntime<Peer>) {
    while let Some((peer, data)) = runtime.to_send() {
        if let Err(e) = socket.send_to(&data, peer.addr).await {
            debug!(peer = %peer.addr, error = %e, "gossip send failed");
        }
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;

    #[test]
    fn detection_times_are_checked() {
        let ms = Duration::from_millis;
        let timing = Timing::with_detection(ms(50), ms(20), ms(100)).unwrap_or_default();
        assert_eq!(
            (
                timing.probe_period,
                timing.probe_rtt,
                timing.suspect_to_down
            ),
            (ms(50), ms(20), ms(100))
        );
        assert_eq!(timing.indirect_probes, Timing::default().indirect_probes);
        assert!(Timing::with_detection(ms(50), ms(50), ms(100)).is_err());
        assert!(Timing::with_detection(ms(50), ms(0), ms(100)).is_err());
        assert!(Timing::with_detection(ms(50), ms(20), ms(0)).is_err());
    }
}
