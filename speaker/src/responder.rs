//! Answers ARP and NDP on the node's interfaces for the addresses this node announces, and
//! announces takeovers with gratuitous ARP / unsolicited Neighbor Advertisements.
//!
//! One blocking thread per interface reads frames from a raw socket (`packet_socket`) and
//! answers from the current table; the speaker's reconciler corrects the table at the
//! addresses a pass changed, so a change costs the same with ten addresses or ten thousand.
//! Takeovers are announced by one thread for all addresses (`gratuitous`). The
//! kernel passes the socket only ARP and NDP about the addresses in the table or yielded
//! (`frame_filter`), so frames about other addresses cost this process nothing. Addresses
//! are never added to an interface: only this process answers for them.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pnet_datalink::NetworkInterface;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::{debug, info, warn};

use ferrolb_ops::metallb_metrics::{IpLabels, UntypedCounter};

use crate::conflict::Conflict;
use crate::frame_filter::Program;
use crate::gratuitous;
use crate::packet::{self, Claim, Dropped, MacAddr, Question};
use crate::packet_socket::PacketSocket;
use crate::watch_changes::Touched;

/// Longer frames are cut to this: ARP and NDP fit many times over.
const FRAME_BUFFER: usize = 2048;

/// Conflicts waiting for the reconciler beyond this are counted but not queued: a flood of
/// conflicting frames must not grow memory.
const CONFLICT_QUEUE: usize = 256;

/// An interface the speaker may answer on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: MacAddr,
}

/// Interfaces that can carry ARP: up, not loopback, with a MAC, broadcast-capable, and not
/// enslaved to a bridge or bond (the master answers for them).
pub fn eligible_interfaces() -> Vec<Interface> {
    candidate_interfaces()
        .into_iter()
        .filter(|(_, up)| *up)
        .map(|(interface, _)| interface)
        .collect()
}

/// Every interface that could carry ARP once up (not loopback, broadcast-capable, not
/// enslaved to a bond or bridge), and whether it is up now. A link that is down for a moment
/// (a cable, a switch restart) is still a candidate: the speaker waits for it.
pub fn candidate_interfaces() -> Vec<(Interface, bool)> {
    pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| !i.is_loopback() && i.is_broadcast())
        .filter(|i| !std::path::Path::new(&format!("/sys/class/net/{}/master", i.name)).exists())
        .filter_map(|i| Some((interface_of(&i)?, i.is_up())))
        .collect()
}

fn interface_of(raw: &NetworkInterface) -> Option<Interface> {
    let mac = raw.mac.filter(|m| *m != MacAddr::zero())?;
    Some(Interface {
        name: raw.name.clone(),
        mac,
    })
}

/// What the responder did; registered as Prometheus metrics by the speaker's health module.
#[derive(Default, Clone)]
pub struct Counters {
    pub arp_requests: Counter,
    pub ndp_solicitations: Counter,
    pub responses: Counter,
    pub gratuitous: Counter,
    pub dropped: Family<DropLabels, Counter>,
    /// Frames in which another MAC claims an address this node answers for, by kind.
    pub conflicts: Family<ConflictLabels, Counter>,
    /// MetalLB's per-address counters (`metallb_layer2_requests_received`, `_responses_sent`,
    /// `_gratuitous_sent`), for the addresses this node answers for.
    pub metallb_requests: Family<IpLabels, UntypedCounter>,
    pub metallb_responses: Family<IpLabels, UntypedCounter>,
    pub metallb_gratuitous: Family<IpLabels, UntypedCounter>,
}

/// One answered address's MetalLB counters, looked up by address on every frame (no label
/// text is built per frame).
#[derive(Clone, Default)]
struct AddressCounters {
    requests: UntypedCounter,
    responses: UntypedCounter,
    gratuitous: UntypedCounter,
}

type PerAddress = Arc<RwLock<HashMap<IpAddr, AddressCounters>>>;

impl Counters {
    fn address_counters(&self, ip: IpAddr) -> AddressCounters {
        let labels = IpLabels { ip: ip.to_string() };
        AddressCounters {
            requests: self.metallb_requests.get_or_create(&labels).clone(),
            responses: self.metallb_responses.get_or_create(&labels).clone(),
            gratuitous: self.metallb_gratuitous.get_or_create(&labels).clone(),
        }
    }

    fn forget_address(&self, ip: IpAddr) {
        let labels = IpLabels { ip: ip.to_string() };
        self.metallb_requests.remove(&labels);
        self.metallb_responses.remove(&labels);
        self.metallb_gratuitous.remove(&labels);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConflictLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
}

impl Counters {
    fn drop_frame(&self, reason: Dropped) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: reason.label().to_string(),
            })
            .inc();
    }

    /// Conflicting frames heard, of every kind.
    pub fn conflicts_total(&self) -> u64 {
        [
            packet::ClaimKind::ArpReply,
            packet::ClaimKind::GratuitousArp,
            packet::ClaimKind::ArpSender,
            packet::ClaimKind::NeighborAdvertisement,
            packet::ClaimKind::SolicitationSource,
        ]
        .iter()
        .map(|kind| {
            self.conflicts
                .get_or_create(&ConflictLabels {
                    kind: kind.label().to_string(),
                })
                .get()
        })
        .sum()
    }

    /// Frames dropped for one reason (a [`Dropped::label`]).
    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.dropped
            .get_or_create(&DropLabels {
                reason: reason.to_string(),
            })
            .get()
    }
}

/// The addresses announced on each interface.
pub type Table = HashMap<String, BTreeSet<IpAddr>>;

struct Port {
    interface: Interface,
    socket: PacketSocket,
    /// Whether the kernel filter lists this port's addresses (false past its size limit).
    filter_lists_addresses: AtomicBool,
}

impl Port {
    fn send(&self, frame: &[u8]) -> bool {
        match self.socket.send(frame) {
            Ok(_) => true,
            Err(e) => {
                debug!(interface = %self.interface.name, error = %e, "could not send a frame");
                false
            }
        }
    }

    /// Lets the kernel pass frames about the addresses in `sets`, and only those. Past the
    /// filter's size the addresses are not even collected: every ARP and NDP frame passes.
    fn filter_for(&self, sets: &[&BTreeSet<IpAddr>]) {
        let count: usize = sets.iter().map(|set| set.len()).sum();
        let program = if Program::could_list(count) {
            let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
            for ip in sets.iter().copied().flatten() {
                match ip {
                    IpAddr::V4(ip) => v4.insert(*ip),
                    IpAddr::V6(ip) => v6.insert(*ip),
                };
            }
            Program::for_addresses(&v4, &v6)
        } else {
            Program::pass_all()
        };
        let lists = program.lists_addresses();
        let listed = self.filter_lists_addresses.swap(lists, Ordering::Relaxed);
        if !lists && !listed {
            // Already passing everything: nothing to tell the kernel.
            return;
        }
        if !lists {
            warn!(
                interface = %self.interface.name,
                addresses = count,
                "too many addresses for the kernel filter: every ARP and NDP frame is read"
            );
        }
        if let Err(e) = self.socket.set_filter(&program.instructions) {
            warn!(interface = %self.interface.name, error = %e, "could not set the kernel frame filter");
        }
    }
}

/// The running responder.
pub struct Responder {
    table: Arc<RwLock<Table>>,
    ports: HashMap<String, Arc<Port>>,
    shared: Arc<Shared>,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    conflicts: Mutex<Option<tokio::sync::mpsc::Receiver<Conflict>>>,
    /// Starts an address's gratuitous announcements on an interface (see `gratuitous`).
    announcements: Mutex<std::sync::mpsc::Sender<(String, IpAddr)>>,
}

/// What every receiving thread shares.
struct Shared {
    table: Arc<RwLock<Table>>,
    counters: Arc<Counters>,
    /// Every MAC of this node's ports: frames from them are this node's own.
    own_macs: BTreeSet<[u8; 6]>,
    conflicts: tokio::sync::mpsc::Sender<Conflict>,
    /// Addresses this node is elected for but has yielded to a lower MAC: claims on them are
    /// still conflicts, so a claimant that keeps claiming keeps this node silent.
    yielded: RwLock<BTreeSet<IpAddr>>,
    per_address: PerAddress,
}

impl Responder {
    /// Opens a raw socket on each interface and starts answering (nothing, until a table is
    /// set). With a non-zero `gratuitous_period`, owned addresses are also announced again
    /// that often (see `gratuitous`).
    pub fn start(interfaces: Vec<Interface>, gratuitous_period: Duration) -> anyhow::Result<Self> {
        let table: Arc<RwLock<Table>> = Arc::default();
        let counters: Arc<Counters> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let raw_interfaces = pnet_datalink::interfaces();
        let (conflicts_tx, conflicts) = tokio::sync::mpsc::channel(CONFLICT_QUEUE);
        let shared = Arc::new(Shared {
            table: table.clone(),
            counters: counters.clone(),
            own_macs: interfaces.iter().map(|i| i.mac.octets()).collect(),
            conflicts: conflicts_tx,
            yielded: RwLock::default(),
            per_address: PerAddress::default(),
        });
        let mut ports = HashMap::new();
        for interface in interfaces {
            let Some(raw) = raw_interfaces.iter().find(|r| r.name == interface.name) else {
                warn!(interface = %interface.name, "interface vanished before it was opened");
                continue;
            };
            let nothing = Program::for_addresses(&BTreeSet::new(), &BTreeSet::new());
            // The read timeout lets the thread notice `stop` without a frame arriving.
            let socket =
                PacketSocket::open(&raw.name, &nothing.instructions, Duration::from_millis(200))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot open a raw socket on {}: {e} (the speaker needs CAP_NET_RAW)",
                            interface.name
                        )
                    })?;
            let port = Arc::new(Port {
                interface: interface.clone(),
                socket,
                filter_lists_addresses: AtomicBool::new(true),
            });
            ports.insert(interface.name.clone(), port.clone());
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("answer-{}", interface.name))
                .spawn(move || {
                    // A link that goes down fails every read: said once, not ten times a second.
                    let mut failing = false;
                    let mut buffer = vec![0u8; FRAME_BUFFER];
                    while !stop.load(Ordering::Relaxed) {
                        match port.socket.recv(&mut buffer) {
                            Ok(length) => {
                                if std::mem::take(&mut failing) {
                                    info!(interface = %port.interface.name, "receiving again");
                                }
                                answer(&port, &buffer[..length.min(buffer.len())], &shared);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                                ) => {}
                            Err(e) => {
                                if !std::mem::replace(&mut failing, true) {
                                    warn!(interface = %port.interface.name, error = %e, "receive failed (link down?)");
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                })?;
            info!(interface = %interface.name, mac = %interface.mac, "answering ARP/NDP");
        }
        let announcements = {
            let (table, ports, counters) = (table.clone(), ports.clone(), counters.clone());
            let per_address = shared.per_address.clone();
            gratuitous::spawn(
                gratuitous_period,
                move |(interface, ip): &(String, IpAddr)| {
                    let table = table.read().unwrap_or_else(|e| e.into_inner());
                    table.get(interface).is_some_and(|a| a.contains(ip))
                },
                move |(interface, ip): &(String, IpAddr)| {
                    let Some(port) = ports.get(interface) else {
                        return 0;
                    };
                    let frames = gratuitous_frames(&port.interface, *ip);
                    let sent = frames.iter().filter(|frame| port.send(frame)).count();
                    counters.gratuitous.inc_by(sent as u64);
                    if let Some(address) = per_address
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(ip)
                    {
                        address.gratuitous.inc_by(sent as u64);
                    }
                    frames.len()
                },
            )
        };
        Ok(Responder {
            table,
            ports,
            shared,
            counters,
            stop,
            conflicts: Mutex::new(Some(conflicts)),
            announcements: Mutex::new(announcements),
        })
    }

    /// The conflicts heard on the wire, for the reconciler to resolve (once: the first
    /// caller gets the receiver).
    pub fn take_conflicts(&self) -> Option<tokio::sync::mpsc::Receiver<Conflict>> {
        self.conflicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The addresses this node is elected for but leaves to a lower MAC for now.
    pub fn set_yielded(&self, yielded: BTreeSet<IpAddr>) {
        let changed = {
            let mut held = self
                .shared
                .yielded
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let changed = *held != yielded;
            *held = yielded;
            changed
        };
        if changed {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            for name in self.ports.keys() {
                self.refresh_filter(name, &table, None);
            }
        }
    }

    /// Sets a port's kernel filter to its addresses in `table` (and `also`, while addresses
    /// are being added), plus the yielded ones.
    fn refresh_filter(&self, name: &str, table: &Table, also: Option<&BTreeSet<IpAddr>>) {
        let Some(port) = self.ports.get(name) else {
            return;
        };
        let yielded = self
            .shared
            .yielded
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let none = BTreeSet::new();
        let listed = table.get(name).unwrap_or(&none);
        port.filter_for(&[&*yielded, listed, also.unwrap_or(&none)]);
    }

    /// Announces `ip` again on every interface it is answered on: after a conflict this node
    /// keeps, the segment's caches must end on this node.
    pub fn reassert(&self, ip: IpAddr) {
        let on: Vec<Arc<Port>> = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            self.ports
                .iter()
                .filter(|(name, _)| table.get(*name).is_some_and(|a| a.contains(&ip)))
                .map(|(_, port)| port.clone())
                .collect()
        };
        for port in on {
            for frame in gratuitous_frames(&port.interface, ip) {
                if port.send(&frame) {
                    self.counters.gratuitous.inc();
                }
            }
        }
    }

    pub fn interfaces(&self) -> Vec<Interface> {
        self.ports.values().map(|p| p.interface.clone()).collect()
    }

    /// Replaces what is announced. Answering for dropped addresses stops at once; new ones
    /// are announced gratuitously (at once, and again over the next seconds).
    pub fn set_table(&self, next: Table) {
        self.update(&next, &Touched::Everything);
    }

    /// Brings what is announced in line with `next` at the addresses `changed` names (all of
    /// them for `Touched::Everything`): the work follows the change, not the table's size.
    pub fn update(&self, next: &Table, changed: &Touched<IpAddr>) {
        // Per interface, the addresses gained and lost.
        let mut gained: HashMap<String, BTreeSet<IpAddr>> = HashMap::new();
        let mut lost: HashMap<String, BTreeSet<IpAddr>> = HashMap::new();
        {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            let mut compare = |name: &str, ip: IpAddr| {
                let was = table.get(name).is_some_and(|a| a.contains(&ip));
                let now = next.get(name).is_some_and(|a| a.contains(&ip));
                if now && !was {
                    gained.entry(name.to_string()).or_default().insert(ip);
                } else if was && !now {
                    lost.entry(name.to_string()).or_default().insert(ip);
                }
            };
            for name in self.ports.keys() {
                match changed {
                    Touched::Everything => {
                        let empty = BTreeSet::new();
                        let (was, now) = (
                            table.get(name).unwrap_or(&empty),
                            next.get(name).unwrap_or(&empty),
                        );
                        for ip in was.symmetric_difference(now) {
                            compare(name, *ip);
                        }
                    }
                    Touched::Some(addresses) => {
                        for ip in addresses {
                            compare(name, *ip);
                        }
                    }
                }
            }
        }
        // The filter widens before the table changes and narrows after: no question about a
        // gained address is filtered out in between.
        {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            for (name, addresses) in &gained {
                self.refresh_filter(name, &table, Some(addresses));
            }
        }
        {
            let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
            for (name, addresses) in &gained {
                table
                    .entry(name.clone())
                    .or_default()
                    .extend(addresses.iter().copied());
            }
            for (name, addresses) in &lost {
                if let Some(answered) = table.get_mut(name) {
                    answered.retain(|ip| !addresses.contains(ip));
                }
            }
            table.retain(|_, answered| !answered.is_empty());
            let mut per_address = self
                .shared
                .per_address
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for ip in gained.values().flatten() {
                per_address
                    .entry(*ip)
                    .or_insert_with(|| self.counters.address_counters(*ip));
            }
            for ip in lost.values().flatten() {
                if !table.values().any(|answered| answered.contains(ip))
                    && per_address.remove(ip).is_some()
                {
                    self.counters.forget_address(*ip);
                }
            }
        }
        {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            for name in lost.keys() {
                self.refresh_filter(name, &table, None);
            }
        }
        let announcements = self.announcements.lock().unwrap_or_else(|e| e.into_inner());
        for (name, addresses) in &gained {
            for ip in addresses {
                info!(interface = %name, address = %ip, "announcing");
                // The thread only ends with the responder.
                let _ = announcements.send((name.clone(), *ip));
            }
        }
        for (name, addresses) in &lost {
            for ip in addresses {
                info!(interface = %name, address = %ip, "no longer announcing");
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn gratuitous_frames(interface: &Interface, ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => packet::gratuitous_arp(interface.mac, v4).into(),
        IpAddr::V6(v6) => vec![packet::unsolicited_advertisement(interface.mac, v6)],
    }
}

fn answer(port: &Port, frame: &[u8], shared: &Shared) {
    // The socket also sees what this node sends.
    if frame.get(6..12) == Some(&port.interface.mac.octets()[..]) {
        return;
    }
    let heard = match packet::read(frame) {
        Ok(heard) => heard,
        // Most frames on a segment are ordinary traffic, not address resolution: those are
        // not "dropped", just not ours to look at.
        Err(Dropped::OtherProtocol | Dropped::NotSolicitation) => return,
        Err(reason) => {
            shared.counters.drop_frame(reason);
            return;
        }
    };
    let answered_here = |ip: IpAddr| {
        let table = shared.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .get(&port.interface.name)
            .is_some_and(|a| a.contains(&ip))
    };
    if let Some(claim) = heard.claim
        && !shared.own_macs.contains(&claim.mac.octets())
        && (answered_here(claim.ip)
            || shared
                .yielded
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&claim.ip))
    {
        conflict_heard(port, claim, shared);
    }
    let Some(question) = heard.question else {
        return;
    };
    match question {
        Question::Arp { .. } => shared.counters.arp_requests.inc(),
        Question::Neighbor { .. } => shared.counters.ndp_solicitations.inc(),
    };
    if !answered_here(question.target()) {
        return;
    }
    // One look-up for both of the address's counters.
    let address = shared
        .per_address
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&question.target())
        .cloned();
    if let Some(address) = &address {
        address.requests.inc();
    }
    let reply = match question {
        Question::Arp {
            sender_mac,
            sender_ip,
            target,
        } => packet::arp_reply(port.interface.mac, target, sender_mac, sender_ip),
        Question::Neighbor {
            reply_mac,
            source_ip,
            target,
        } => packet::answer_solicitation(port.interface.mac, reply_mac, source_ip, target),
    };
    if port.send(&reply) {
        shared.counters.responses.inc();
        if let Some(address) = &address {
            address.responses.inc();
        }
        debug!(interface = %port.interface.name, address = %question.target(), "answered");
    }
}

fn conflict_heard(port: &Port, claim: Claim, shared: &Shared) {
    shared
        .counters
        .conflicts
        .get_or_create(&ConflictLabels {
            kind: claim.kind.label().to_string(),
        })
        .inc();
    // A full queue means the reconciler already has plenty of these to act on.
    let _ = shared.conflicts.try_send(Conflict {
        ip: claim.ip,
        interface: port.interface.name.clone(),
        ours: port.interface.mac,
        theirs: claim.mac,
        kind: claim.kind,
    });
}
