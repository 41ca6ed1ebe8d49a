//! The shipped monitoring (config/monitoring: alert rules and the Grafana dashboard) reads only
//! controller metrics that the controller exports.

#![allow(clippy::unwrap_used)]

use ferrolb_controller::health::{Health, PoolLabels, ReasonLabels};
use ferrolb_e2e::monitoring::{Component, exported_metric_names, exporters, queried_metrics};
use ferrolb_ops::metallb_metrics::PoolLabels as MetalLbPoolLabels;

#[test]
fn every_controller_metric_the_shipped_monitoring_reads_is_exported() {
    let health = Health::new();
    // A labelled family is exposed once it has a series: give each one.
    let metrics = &health.metrics;
    let pool = PoolLabels {
        pool: "p".into(),
        family: "IPv4".into(),
    };
    metrics.addresses_total.get_or_create(&pool).set(1);
    metrics.addresses_in_use.get_or_create(&pool).set(1);
    metrics
        .allocation_failures
        .get_or_create(&ReasonLabels { reason: "r".into() })
        .inc();
    let metallb_pool = MetalLbPoolLabels { pool: "p".into() };
    metrics
        .metallb_addresses_total
        .get_or_create(&metallb_pool)
        .set(1);
    metrics
        .metallb_addresses_in_use
        .get_or_create(&metallb_pool)
        .set(1);
    let exported = exported_metric_names(&health.encode());
    let queried = queried_metrics().unwrap();
    let read: Vec<_> = queried
        .iter()
        .filter(|(metric, _)| exporters(metric).contains(&Component::Controller))
        .collect();
    assert!(read.len() >= 5, "{read:?}");
    for (metric, used_by) in read {
        assert!(
            exported.contains(metric),
            "{metric} (read by {used_by:?}) is not exported by the controller, which exports {exported:?}"
        );
    }
}
