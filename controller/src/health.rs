//! `/healthz`, `/readyz` and Prometheus `/metrics` for the controller.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use ferrolb_ops::metallb_metrics::{ConfigMetrics, PoolLabels as MetalLbPoolLabels};

use crate::allocator::PoolStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The controller's metrics.
pub struct Metrics {
    pub addresses_total: Family<PoolLabels, Gauge>,
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    pub allocations: Counter,
    pub allocation_failures: Family<ReasonLabels, Counter>,
    pub reconcile_seconds: Histogram,
    pub is_leader: Gauge,
    pub events_dropped: Counter,
    /// MetalLB's names: addresses held and usable per pool, both families together.
    pub metallb_addresses_in_use: Family<MetalLbPoolLabels, Gauge>,
    pub metallb_addresses_total: Family<MetalLbPoolLabels, Gauge>,
    /// MetalLB's configuration gauges: loaded, and stale while a pool is invalid.
    pub config: ConfigMetrics,
}

/// Health and metrics, shared between the controller and its HTTP server.
pub struct Health {
    ready: AtomicBool,
    registry: Registry,
    pub metrics: Metrics,
    /// The pools `report_pool` gave series to, so that those of deleted pools can go.
    reported_pools: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        let metrics = Metrics {
            addresses_total: Family::default(),
            addresses_in_use: Family::default(),
            allocations: Counter::default(),
            allocation_failures: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            is_leader: Gauge::default(),
            events_dropped: Counter::default(),
            metallb_addresses_in_use: Family::default(),
            metallb_addresses_total: Family::default(),
            config: ConfigMetrics::default(),
        };
        let mut root = Registry::default();
        metrics.config.register(&mut root);
        root.register(
            "metallb_allocator_addresses_in_use_total",
            "Number of IP addresses in use, per pool (MetalLB's name; both families)",
            metrics.metallb_addresses_in_use.clone(),
        );
        root.register(
            "metallb_allocator_addresses_total",
            "Number of usable IP addresses, per pool (MetalLB's name; both families, saturating)",
            metrics.metallb_addresses_total.clone(),
        );
        let registry = root.sub_registry_with_prefix("ferrolb_controller");
        registry.register(
            "pool_addresses",
            "Addresses of a pool that can be handed out, by pool and family",
            metrics.addresses_total.clone(),
        );
        registry.register(
            "pool_addresses_in_use",
            "Addresses of a pool held by Services, by pool and family",
            metrics.addresses_in_use.clone(),
        );
        registry.register(
            "allocations",
            "Addresses given to Services (new assignments)",
            metrics.allocations.clone(),
        );
        registry.register(
            "allocation_failures",
            "Services refused or left without an address, by reason",
            metrics.allocation_failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one Service, API writes included",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "is_leader",
            "1 while this replica holds the leader Lease and acts",
            metrics.is_leader.clone(),
        );
        registry.register(
            "events_dropped",
            "Events not recorded: the queue was full or the API server refused them",
            metrics.events_dropped.clone(),
        );
        Health {
            ready: AtomicBool::new(false),
            registry: root,
            metrics,
            reported_pools: Default::default(),
        }
    }

    /// A pool's addresses in use and usable, per family under ferrolb's names and for both
    /// families together under MetalLB's.
    pub fn report_pool(&self, pool: &str, stats: &PoolStats) {
        self.reported_pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pool.to_string());
        for (family, assigned, available) in [
            ("IPv4", stats.assigned_ipv4, stats.available_ipv4),
            ("IPv6", stats.assigned_ipv6, stats.available_ipv6),
        ] {
            let labels = PoolLabels {
                pool: pool.to_string(),
                family: family.into(),
            };
            self.metrics
                .addresses_in_use
                .get_or_create(&labels)
                .set(assigned);
            self.metrics
                .addresses_total
                .get_or_create(&labels)
                .set(assigned.saturating_add(available));
        }
        let labels = MetalLbPoolLabels {
            pool: pool.to_string(),
        };
        self.metrics
            .metallb_addresses_in_use
            .get_or_create(&labels)
            .set(stats.assigned_ipv4.saturating_add(stats.assigned_ipv6));
        let usable = [
            stats.assigned_ipv4,
            stats.available_ipv4,
            stats.assigned_ipv6,
            stats.available_ipv6,
        ]
        .into_iter()
        .fold(0i64, i64::saturating_add);
        self.metrics
            .metallb_addresses_total
            .get_or_create(&labels)
            .set(usable);
    }

    /// Drops the series of every reported pool not in `pools` (deleted since), so that
    /// dashboards and alerts stop showing them.
    pub fn keep_pools(&self, pools: &std::collections::BTreeSet<String>) {
        let gone: Vec<String> = {
            let mut reported = self
                .reported_pools
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let gone = reported.difference(pools).cloned().collect();
            reported.retain(|pool| pools.contains(pool));
            gone
        };
        for pool in gone {
            self.forget_pool(&pool);
        }
    }

    fn forget_pool(&self, pool: &str) {
        for family in ["IPv4", "IPv6"] {
            let labels = PoolLabels {
                pool: pool.to_string(),
                family: family.to_string(),
            };
            self.metrics.addresses_in_use.remove(&labels);
            self.metrics.addresses_total.remove(&labels);
        }
        let labels = MetalLbPoolLabels {
            pool: pool.to_string(),
        };
        self.metrics.metallb_addresses_in_use.remove(&labels);
        self.metrics.metallb_addresses_total.remove(&labels);
    }

    /// Ready once the watches listed and held addresses were restored.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl ferrolb_ops::Probe for Health {
    fn is_ready(&self) -> bool {
        Health::is_ready(self)
    }

    fn metrics_text(&self) -> String {
        self.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_in_prometheus_text() {
        let health = Health::new();
        let labels = PoolLabels {
            pool: "first-pool".into(),
            family: "IPv4".into(),
        };
        health
            .metrics
            .addresses_in_use
            .get_or_create(&labels)
            .set(1);
        health.metrics.allocations.inc();
        let text = health.encode();
        assert!(
            text.contains(
                "ferrolb_controller_pool_addresses_in_use{pool=\"first-pool\",family=\"IPv4\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ferrolb_controller_allocations_total 1"),
            "{text}"
        );
        assert!(text.contains("# EOF"));
    }
}
