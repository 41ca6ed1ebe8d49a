//! The speaker's `/readyz` state and Prometheus metrics (served by `ferrolb_ops::serve`).

use std::sync::atomic::{AtomicBool, Ordering};

use ferrolb_ops::metallb_metrics::{AnnouncedLabels, ConfigMetrics};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::responder::Counters;

pub struct Health {
    ready: AtomicBool,
    registry: Registry,
    /// Addresses this node answers for (counted once, whatever the number of interfaces).
    pub announced: Gauge,
    /// Live speakers gossip reports, this one included.
    pub peers_alive: Gauge,
    /// 1 while the speaker fences itself (a minority of its peers and no API server).
    pub fenced: Gauge,
    /// 1 while it steps down because it hears only a minority of the speakers the API server
    /// shows running: it is the one cut off from its peers.
    pub isolated: Gauge,
    /// Speakers whose heartbeat Lease is fresh, as this one last saw them.
    pub speakers_running: Gauge,
    /// Addresses the speakers elect an owner for (the same on every speaker once they agree):
    /// more than all nodes answer for together means some address has no answerer.
    pub addresses_to_announce: Gauge,
    /// MetalLB's `metallb_speaker_announced`: 1 per Service and address this node announces.
    pub announced_services: Family<AnnouncedLabels, Gauge>,
    /// MetalLB's configuration gauges: loaded, and stale while a pool or an advertisement is
    /// invalid and ignored.
    pub config: ConfigMetrics,
}

impl Health {
    pub fn new(counters: &Counters) -> Self {
        let mut root = Registry::default();
        let (announced, peers_alive, fenced, isolated, speakers_running) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        let addresses_to_announce = Gauge::default();
        let announced_services = Family::<AnnouncedLabels, Gauge>::default();
        let config = ConfigMetrics::default();
        // MetalLB's names, with MetalLB's labels, for its alert rules and dashboards.
        root.register(
            "metallb_layer2_requests_received",
            "Number of layer2 requests received for owned IPs (MetalLB's name)",
            counters.metallb_requests.clone(),
        );
        root.register(
            "metallb_layer2_responses_sent",
            "Number of layer2 responses sent for owned IPs in response to requests (MetalLB's name)",
            counters.metallb_responses.clone(),
        );
        root.register(
            "metallb_layer2_gratuitous_sent",
            "Number of gratuitous layer2 packets sent for owned IPs (MetalLB's name)",
            counters.metallb_gratuitous.clone(),
        );
        root.register(
            "metallb_speaker_announced",
            "Services being announced from this node (MetalLB's name)",
            announced_services.clone(),
        );
        config.register(&mut root);
        let registry = root.sub_registry_with_prefix("ferrolb_speaker");
        registry.register(
            "arp_requests_received",
            "ARP requests seen on the node's interfaces for addresses this node announces (the kernel filter drops the others)",
            counters.arp_requests.clone(),
        );
        registry.register(
            "ndp_solicitations_received",
            "Neighbor Solicitations seen on the node's interfaces for addresses this node announces (the kernel filter drops the others)",
            counters.ndp_solicitations.clone(),
        );
        registry.register(
            "responses_sent",
            "ARP replies and Neighbor Advertisements sent for owned addresses",
            counters.responses.clone(),
        );
        registry.register(
            "gratuitous_sent",
            "Gratuitous ARP and unsolicited Neighbor Advertisements sent on takeovers",
            counters.gratuitous.clone(),
        );
        registry.register(
            "frames_dropped",
            "ARP/NDP frames dropped as malformed or invalid, by reason",
            counters.dropped.clone(),
        );
        registry.register(
            "address_conflicts",
            "Frames in which another MAC answered or announced an address this node answers for, by kind",
            counters.conflicts.clone(),
        );
        registry.register(
            "announced_addresses",
            "Addresses this node answers for",
            announced.clone(),
        );
        registry.register(
            "peers_alive",
            "Speakers alive according to gossip, this one included",
            peers_alive.clone(),
        );
        registry.register(
            "fenced",
            "1 while announcing is stopped: a minority of the speakers heard and no API server",
            fenced.clone(),
        );
        registry.register(
            "isolated",
            "1 while announcing is stopped: a minority of the speakers heard while the API server shows the others running",
            isolated.clone(),
        );
        registry.register(
            "speakers_running",
            "Speakers whose heartbeat Lease is fresh, as this one last saw them",
            speakers_running.clone(),
        );
        registry.register(
            "addresses_to_announce",
            "Addresses the speakers elect an owner for; beyond what all nodes answer for together, some address has no answerer",
            addresses_to_announce.clone(),
        );
        Health {
            ready: AtomicBool::new(false),
            registry: root,
            announced,
            peers_alive,
            fenced,
            isolated,
            speakers_running,
            addresses_to_announce,
            announced_services,
            config,
        }
    }

    /// Ready once the caches are filled and the first plan is applied.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }
}

impl ferrolb_ops::Probe for Health {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferrolb_ops::Probe;

    #[test]
    fn metrics_are_exposed_in_prometheus_text() {
        let counters = Counters::default();
        let health = Health::new(&counters);
        counters.responses.inc();
        health.announced.set(2);
        let text = health.metrics_text();
        assert!(
            text.contains("ferrolb_speaker_responses_sent_total 1"),
            "{text}"
        );
        assert!(
            text.contains("ferrolb_speaker_announced_addresses 2"),
            "{text}"
        );
        assert!(!health.is_ready());
    }
}
