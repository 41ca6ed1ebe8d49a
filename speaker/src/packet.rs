//! ARP and NDP frames: what the speaker reads off the wire and what it answers with. Pure
//! functions over bytes, so that every rule is tested without a network.
//!
//! Parsing never trusts the frame: anything short, inconsistent or not addressed to an
//! address resolution question comes back as a [`Dropped`] reason, which the responder counts.

use std::net::{Ipv4Addr, Ipv6Addr};

use pnet_packet::Packet;
use pnet_packet::arp::{
    ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket,
};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::{Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};

pub use pnet_base::MacAddr;

const ETHERNET_HEADER: usize = 14;
const ARP_BODY: usize = 28;
const IPV6_HEADER: usize = 40;
/// Type, code, checksum, reserved/flags, target address.
const NDP_BODY: usize = 24;
const NDP_OPTION_SOURCE_LINK_ADDRESS: u8 = 1;
const NDP_OPTION_TARGET_LINK_ADDRESS: u8 = 2;
const NA_FLAG_SOLICITED: u8 = 0b0100_0000;
const NA_FLAG_OVERRIDE: u8 = 0b0010_0000;

/// An address resolution question the speaker may have to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// "Who has `target`? Tell `sender_ip`."
    Arp {
        sender_mac: MacAddr,
        sender_ip: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// A Neighbor Solicitation for `target`. `source_ip` is `::` during duplicate address
    /// detection; `reply_mac` is where a unicast answer goes (the source link-layer option,
    /// else the frame's sender).
    Neighbor {
        reply_mac: MacAddr,
        source_ip: Ipv6Addr,
        target: Ipv6Addr,
    },
}

impl Question {
    pub fn target(&self) -> std::net::IpAddr {
        match self {
            Question::Arp { target, .. } => (*target).into(),
            Question::Neighbor { target, .. } => (*target).into(),
        }
    }
}

/// Why a frame was not a question to answer. Each is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dropped {
    /// Neither ARP nor IPv6 (the socket sees every frame of the interface).
    OtherProtocol,
    /// IPv6, but neither a Neighbor Solicitation nor an Advertisement.
    NotSolicitation,
    /// An ARP operation other than request and reply (RARP, InARP).
    NotRequest,
    /// Shorter than its headers say, or fields with impossible values.
    Malformed,
    /// ARP for something other than Ethernet/IPv4.
    UnsupportedArp,
    /// A Neighbor Solicitation that RFC 4861 §7.1.1 says to discard (hop limit, code,
    /// checksum, multicast target, options).
    InvalidSolicitation,
    /// A Neighbor Advertisement that RFC 4861 §7.1.2 says to discard.
    InvalidAdvertisement,
}

impl Dropped {
    pub fn label(&self) -> &'static str {
        match self {
            Dropped::OtherProtocol => "other_protocol",
            Dropped::NotSolicitation => "not_solicitation",
            Dropped::NotRequest => "not_request",
            Dropped::Malformed => "malformed",
            Dropped::UnsupportedArp => "unsupported_arp",
            Dropped::InvalidSolicitation => "invalid_solicitation",
            Dropped::InvalidAdvertisement => "invalid_advertisement",
        }
    }
}

/// "`ip` is at `mac`", as another host said it on the segment: what conflict detection
/// looks at (RFC 5227's passive detection, and its IPv6 analogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub mac: MacAddr,
    pub ip: std::net::IpAddr,
    pub kind: ClaimKind,
}

/// How a claim was made. Each is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClaimKind {
    /// An ARP reply.
    ArpReply,
    /// A gratuitous ARP (request or reply whose sender and target addresses are the same).
    GratuitousArp,
    /// The sender of an ordinary ARP request: the asker uses that address itself.
    ArpSender,
    /// A Neighbor Advertisement, solicited or not.
    NeighborAdvertisement,
    /// The source of a Neighbor Solicitation that names its link-layer address.
    SolicitationSource,
}

impl ClaimKind {
    pub fn label(&self) -> &'static str {
        match self {
            ClaimKind::ArpReply => "arp_reply",
            ClaimKind::GratuitousArp => "gratuitous_arp",
            ClaimKind::ArpSender => "arp_sender",
            ClaimKind::NeighborAdvertisement => "neighbor_advertisement",
            ClaimKind::SolicitationSource => "solicitation_source",
        }
    }
}

/// What one address resolution frame carries: a question to answer, a claim on an address,
/// or both (an ARP request asks about its target and tells its sender's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heard {
    pub question: Option<Question>,
    pub claim: Option<Claim>,
}

/// Reads one Ethernet frame: only its question (see [`read`] for claims too). Frames that
/// ask nothing are `NotRequest` (ARP) or `NotSolicitation` (IPv6).
pub fn parse(frame: &[u8]) -> Result<Question, Dropped> {
    let heard = read(frame)?;
    heard.question.ok_or_else(|| {
        if frame.get(12..14) == Some(&[0x08, 0x06][..]) {
            Dropped::NotRequest
        } else {
            Dropped::NotSolicitation
        }
    })
}

/// Reads one Ethernet frame: the question it asks and the address it claims, if any.
pub fn read(frame: &[u8]) -> Result<Heard, Dropped> {
    let ethernet = EthernetPacket::new(frame).ok_or(Dropped::Malformed)?;
    match ethernet.get_ethertype() {
        EtherTypes::Arp => read_arp(ethernet.payload()),
        EtherTypes::Ipv6 => read_ndp(ethernet.get_source(), ethernet.payload()),
        _ => Err(Dropped::OtherProtocol),
    }
}

fn read_arp(body: &[u8]) -> Result<Heard, Dropped> {
    if body.len() < ARP_BODY {
        return Err(Dropped::Malformed);
    }
    let arp = ArpPacket::new(body).ok_or(Dropped::Malformed)?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return Err(Dropped::UnsupportedArp);
    }
    let (sender_mac, sender_ip) = (arp.get_sender_hw_addr(), arp.get_sender_proto_addr());
    let target = arp.get_target_proto_addr();
    let claim = |kind| {
        // A probe (RFC 5227) has no sender address yet: it claims nothing.
        (!sender_ip.is_unspecified()).then_some(Claim {
            mac: sender_mac,
            ip: sender_ip.into(),
            kind,
        })
    };
    let gratuitous = sender_ip == target;
    match arp.get_operation() {
        // A gratuitous request announces; it does not ask (Linux does not answer it either).
        ArpOperations::Request if gratuitous => Ok(Heard {
            question: None,
            claim: claim(ClaimKind::GratuitousArp),
        }),
        ArpOperations::Request => Ok(Heard {
            question: Some(Question::Arp {
                sender_mac,
                sender_ip,
                target,
            }),
            claim: claim(ClaimKind::ArpSender),
        }),
        ArpOperations::Reply => Ok(Heard {
            question: None,
            claim: claim(if gratuitous {
                ClaimKind::GratuitousArp
            } else {
                ClaimKind::ArpReply
            }),
        }),
        _ => Err(Dropped::NotRequest),
    }
}

/// The link-layer address options of an NDP message (source, target), or `None` when the
/// options are malformed (RFC 4861 §7.1.1 and §7.1.2: a length of zero, or past the end).
fn link_options(mut options: &[u8]) -> Option<(Option<MacAddr>, Option<MacAddr>)> {
    let (mut source, mut target) = (None, None);
    while !options.is_empty() {
        // Each option: type, length in units of 8 octets (0 is invalid), value.
        let (&kind, &units) = (options.first()?, options.get(1)?);
        let size = usize::from(units) * 8;
        if size == 0 || size > options.len() {
            return None;
        }
        let mac = MacAddr::new(
            options[2], options[3], options[4], options[5], options[6], options[7],
        );
        match kind {
            NDP_OPTION_SOURCE_LINK_ADDRESS => source = Some(mac),
            NDP_OPTION_TARGET_LINK_ADDRESS => target = Some(mac),
            _ => {}
        }
        options = &options[size..];
    }
    Some((source, target))
}

fn read_ndp(frame_source: MacAddr, body: &[u8]) -> Result<Heard, Dropped> {
    let ip = Ipv6Packet::new(body).ok_or(Dropped::Malformed)?;
    if ip.get_version() != 6 {
        return Err(Dropped::Malformed);
    }
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 {
        return Err(Dropped::NotSolicitation);
    }
    let length = usize::from(ip.get_payload_length());
    let icmp_bytes = body
        .get(IPV6_HEADER..IPV6_HEADER + length)
        .ok_or(Dropped::Malformed)?;
    let icmp = Icmpv6Packet::new(icmp_bytes).ok_or(Dropped::Malformed)?;
    let kind = icmp.get_icmpv6_type();
    let invalid = match kind {
        Icmpv6Types::NeighborSolicit => Dropped::InvalidSolicitation,
        Icmpv6Types::NeighborAdvert => Dropped::InvalidAdvertisement,
        _ => return Err(Dropped::NotSolicitation),
    };
    let source_ip = ip.get_source();
    let destination = ip.get_destination();
    // No packet comes from a multicast address (RFC 4291 §2.7); an answer to one would go
    // to a group. Found by fuzz/arp_ndp_frames.
    if source_ip.is_multicast() {
        return Err(invalid);
    }
    if ip.get_hop_limit() != 255 || icmp.get_icmpv6_code().0 != 0 || icmp_bytes.len() < NDP_BODY {
        return Err(invalid);
    }
    if pnet_packet::icmpv6::checksum(&icmp, &source_ip, &destination) != icmp.get_checksum() {
        return Err(invalid);
    }
    let target = Ipv6Addr::from(
        <[u8; 16]>::try_from(&icmp_bytes[8..NDP_BODY]).map_err(|_| Dropped::Malformed)?,
    );
    if target.is_multicast() {
        return Err(invalid);
    }
    let (source_link_address, target_link_address) =
        link_options(&icmp_bytes[NDP_BODY..]).ok_or(invalid)?;
    if kind == Icmpv6Types::NeighborAdvert {
        if destination.is_multicast() && icmp_bytes[4] & NA_FLAG_SOLICITED != 0 {
            return Err(invalid);
        }
        return Ok(Heard {
            question: None,
            claim: Some(Claim {
                mac: target_link_address.unwrap_or(frame_source),
                ip: target.into(),
                kind: ClaimKind::NeighborAdvertisement,
            }),
        });
    }
    if source_ip.is_unspecified() {
        // Duplicate address detection: sent to the solicited-node group, never with a
        // source link-layer address (RFC 4861 §7.1.1).
        if destination != solicited_node(target) || source_link_address.is_some() {
            return Err(Dropped::InvalidSolicitation);
        }
    }
    Ok(Heard {
        question: Some(Question::Neighbor {
            reply_mac: source_link_address.unwrap_or(frame_source),
            source_ip,
            target,
        }),
        claim: source_link_address
            .filter(|_| !source_ip.is_unspecified())
            .map(|mac| Claim {
                mac,
                ip: source_ip.into(),
                kind: ClaimKind::SolicitationSource,
            }),
    })
}

/// The solicited-node multicast group of an address (ff02::1:ffXX:XXXX).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet group a multicast IPv6 address maps to (33:33 + its last four octets).
pub fn multicast_mac(ip: Ipv6Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr::new(0x33, 0x33, o[12], o[13], o[14], o[15])
}

fn arp_frame(
    operation: ArpOperation,
    ethernet_destination: MacAddr,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut frame = vec![0u8; ETHERNET_HEADER + ARP_BODY];
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(ethernet_destination);
        ethernet.set_source(sender.0);
        ethernet.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = MutableArpPacket::new(&mut frame[ETHERNET_HEADER..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(operation);
        arp.set_sender_hw_addr(sender.0);
        arp.set_sender_proto_addr(sender.1);
        arp.set_target_hw_addr(target.0);
        arp.set_target_proto_addr(target.1);
    }
    frame
}

/// "`ip` is at `our_mac`", to the one who asked.
pub fn arp_reply(
    our_mac: MacAddr,
    ip: Ipv4Addr,
    asker_mac: MacAddr,
    asker_ip: Ipv4Addr,
) -> Vec<u8> {
    arp_frame(
        ArpOperations::Reply,
        asker_mac,
        (our_mac, ip),
        (asker_mac, asker_ip),
    )
}

/// Gratuitous ARP announcing `ip` at `our_mac` to the whole segment, in the request form
/// (which every host processes) and the reply form (which some older stacks need).
pub fn gratuitous_arp(our_mac: MacAddr, ip: Ipv4Addr) -> [Vec<u8>; 2] {
    let request = arp_frame(
        ArpOperations::Request,
        MacAddr::broadcast(),
        (our_mac, ip),
        (MacAddr::zero(), ip),
    );
    let reply = arp_frame(
        ArpOperations::Reply,
        MacAddr::broadcast(),
        (our_mac, ip),
        (MacAddr::broadcast(), ip),
    );
    [request, reply]
}

/// An NDP message in Ethernet and IPv6 (hop limit 255, as RFC 4861 requires): `kind`,
/// `flags` (the first byte after the checksum), `target`, then one link-layer address
/// option of type `option` carrying `mac`, when given. The ICMPv6 checksum is filled in.
fn ndp_frame(
    ethernet: (MacAddr, MacAddr),
    ip: (Ipv6Addr, Ipv6Addr),
    kind: u8,
    flags: u8,
    target: Ipv6Addr,
    option: Option<(u8, MacAddr)>,
) -> Vec<u8> {
    let (source, destination) = ip;
    let icmp_length = NDP_BODY + if option.is_some() { 8 } else { 0 };
    let mut frame = vec![0u8; ETHERNET_HEADER + IPV6_HEADER + icmp_length];
    if let Some(mut header) = MutableEthernetPacket::new(&mut frame) {
        header.set_source(ethernet.0);
        header.set_destination(ethernet.1);
        header.set_ethertype(EtherTypes::Ipv6);
    }
    if let Some(mut header) = MutableIpv6Packet::new(&mut frame[ETHERNET_HEADER..]) {
        header.set_version(6);
        header.set_payload_length(icmp_length as u16);
        header.set_next_header(IpNextHeaderProtocols::Icmpv6);
        header.set_hop_limit(255);
        header.set_source(source);
        header.set_destination(destination);
    }
    let icmp = &mut frame[ETHERNET_HEADER + IPV6_HEADER..];
    icmp[0] = kind;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&target.octets());
    if let Some((option, mac)) = option {
        icmp[24] = option;
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(&mac.octets());
    }
    let checksum = Icmpv6Packet::new(icmp)
        .map(|p| pnet_packet::icmpv6::checksum(&p, &source, &destination))
        .unwrap_or(0);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// A Neighbor Advertisement for `target` at `our_mac`, always with the override flag (the
/// address moves between nodes, so caches must take the new MAC at once). Its source is the
/// target itself, as Linux sends for its own addresses: some hosts' tools (ndisc6) accept an
/// answer only from the address they asked about.
pub fn neighbor_advertisement(
    our_mac: MacAddr,
    target: Ipv6Addr,
    to: (MacAddr, Ipv6Addr),
    solicited: bool,
) -> Vec<u8> {
    ndp_frame(
        (our_mac, to.0),
        (target, to.1),
        Icmpv6Types::NeighborAdvert.0,
        NA_FLAG_OVERRIDE | if solicited { NA_FLAG_SOLICITED } else { 0 },
        target,
        Some((NDP_OPTION_TARGET_LINK_ADDRESS, our_mac)),
    )
}

/// The answer to a solicitation for an address this node announces: unicast, solicited, to
/// the asker; or, for duplicate address detection, to all nodes (RFC 4861 §7.2.4).
pub fn answer_solicitation(
    our_mac: MacAddr,
    reply_mac: MacAddr,
    source_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    if source_ip.is_unspecified() {
        unsolicited_advertisement(our_mac, target)
    } else {
        neighbor_advertisement(our_mac, target, (reply_mac, source_ip), true)
    }
}

/// The unsolicited advertisement sent on taking an address over, to all nodes.
pub fn unsolicited_advertisement(our_mac: MacAddr, target: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    neighbor_advertisement(
        our_mac,
        target,
        (multicast_mac(all_nodes), all_nodes),
        false,
    )
}

/// A Neighbor Solicitation, as a host sends it: what tests and the lab ask with. During
/// duplicate address detection (`asker_ip` unspecified) it carries no source link-layer
/// address.
pub fn neighbor_solicitation(asker_mac: MacAddr, asker_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    ndp_frame(
        (asker_mac, multicast_mac(group)),
        (asker_ip, group),
        Icmpv6Types::NeighborSolicit.0,
        0,
        target,
        (!asker_ip.is_unspecified()).then_some((NDP_OPTION_SOURCE_LINK_ADDRESS, asker_mac)),
    )
}

/// An ARP request, as a host sends it.
pub fn arp_request(asker_mac: MacAddr, asker_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        ArpOperations::Request,
        MacAddr::broadcast(),
        (asker_mac, asker_ip),
        (MacAddr::zero(), target),
    )
}

/// What an answer frame says: (sender MAC, address it claims, whether it is an unsolicited
/// announcement). For tests and the lab, which check what the speakers sent.
pub fn read_announcement(frame: &[u8]) -> Option<(MacAddr, std::net::IpAddr, bool)> {
    let ethernet = EthernetPacket::new(frame)?;
    match ethernet.get_ethertype() {
        EtherTypes::Arp => {
            let arp = ArpPacket::new(ethernet.payload())?;
            let gratuitous = arp.get_sender_proto_addr() == arp.get_target_proto_addr();
            Some((
                arp.get_sender_hw_addr(),
                arp.get_sender_proto_addr().into(),
                gratuitous,
            ))
        }
        EtherTypes::Ipv6 => {
            let ip = Ipv6Packet::new(ethernet.payload())?;
            let icmp = ip.payload();
            if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6
                || icmp.first() != Some(&Icmpv6Types::NeighborAdvert.0)
                || icmp.len() < NDP_BODY
            {
                return None;
            }
            let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
            let solicited = icmp[4] & NA_FLAG_SOLICITED != 0;
            Some((ethernet.get_source(), target.into(), !solicited))
        }
        _ => None,
    }
}
