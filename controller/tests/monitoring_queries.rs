//! The shipped monitoring (config/monitoring: alert rules and the Grafana dashboard) reads only
//! controller metrics that the controller exports.

#![allow(clippy::unwrap_used)]

use ferrolb_controller::health::{Health, PoolLabels, ReasonLabels};
use ferrolb_e2e::monitoring::{Component, unexported_reads};
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
    let missing = unexported_reads(Component::Controller, &health.encode()).unwrap();
    assert!(missing.is_empty(), "{missing:#?}");
}
