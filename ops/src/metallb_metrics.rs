//! Metrics under MetalLB's own names and labels, so that MetalLB's alert rules and dashboards
//! keep working on ferrolb.
//!
//! MetalLB's layer 2 counters are exposed by Go's client without the `_total` suffix that an
//! OpenMetrics counter's sample must carry (`metallb_layer2_requests_received`). ferrolb's
//! exposition is OpenMetrics, so those are exposed untyped ([`UntypedCounter`]): the sample has
//! exactly MetalLB's name, and `rate()` over it works as before. MetalLB's gauges
//! (`metallb_allocator_addresses_total`, ...) are plain gauges under the same names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A monotonic count exposed as an untyped sample of exactly its registered name.
#[derive(Debug, Clone, Default)]
pub struct UntypedCounter(Arc<AtomicU64>);

impl UntypedCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, by: u64) {
        self.0.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for UntypedCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for UntypedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // A gauge's encoding is a bare sample: no suffix is added to the name.
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// MetalLB's per-address label (`metallb_layer2_*`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabels {
    pub ip: String,
}

/// MetalLB's per-pool label (`metallb_allocator_*`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

/// `metallb_speaker_announced`'s labels: the Service as `namespace/name`, the protocol
/// (`layer2`), this node and the address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct AnnouncedLabels {
    pub service: String,
    pub protocol: String,
    pub node: String,
    pub ip: String,
}

/// `metallb_k8s_client_config_loaded_bool` and `metallb_k8s_client_config_stale_bool`, which
/// both components export: loaded once the configuration objects have been read; stale while
/// some of them is invalid and ignored (the component runs on the rest).
#[derive(Debug, Clone, Default)]
pub struct ConfigMetrics {
    pub loaded: Gauge,
    pub stale: Gauge,
}

impl ConfigMetrics {
    /// Registers both under MetalLB's names in a registry without prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "metallb_k8s_client_config_loaded_bool",
            "1 once the configuration (pools, advertisements) has been read",
            self.loaded.clone(),
        );
        registry.register(
            "metallb_k8s_client_config_stale_bool",
            "1 while some configuration object is invalid and ignored: the component runs on the rest",
            self.stale.clone(),
        );
    }

    /// Records whether the configuration just read is whole.
    pub fn set(&self, invalid_objects: usize) {
        self.loaded.set(1);
        self.stale.set(i64::from(invalid_objects > 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;

    #[test]
    fn untyped_counters_keep_metallbs_exact_sample_names() {
        let mut registry = Registry::default();
        let requests: Family<IpLabels, UntypedCounter> = Family::default();
        registry.register(
            "metallb_layer2_requests_received",
            "Requests",
            requests.clone(),
        );
        let config = ConfigMetrics::default();
        config.register(&mut registry);
        requests
            .get_or_create(&IpLabels {
                ip: "192.0.2.1".into(),
            })
            .inc_by(3);
        config.set(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(
            text.contains("metallb_layer2_requests_received{ip=\"192.0.2.1\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("requests_received_total"), "{text}");
        assert!(
            text.contains("metallb_k8s_client_config_loaded_bool 1\n"),
            "{text}"
        );
        assert!(
            text.contains("metallb_k8s_client_config_stale_bool 1\n"),
            "{text}"
        );
    }
}
