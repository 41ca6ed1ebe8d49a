//! ferrolb-speaker: elects one node per LoadBalancer address and answers ARP/NDP for it.
//!
//! Pure logic (`election`, `packet`) is kept apart from the I/O that feeds it, so that it is
//! tested without a cluster or a network.

pub mod announce_policy;
pub mod cache_trim;
pub mod conflict;
pub mod election;
pub mod frame_filter;
pub mod gratuitous;
pub mod health;
pub mod heartbeat;
pub mod interface_exclusion;
pub mod l2_status;
pub mod membership;
pub mod node_interfaces;
pub mod owner_claims;
pub mod packet;
pub mod packet_socket;
pub mod plan_cache;
pub mod quorum;
pub mod responder;
pub mod runtime;
pub mod two_way_contact;
pub mod watch_changes;
