//! The shipped monitoring (config/monitoring: alert rules and the Grafana dashboard) reads only
//! speaker metrics that the speaker exports.

#![allow(clippy::unwrap_used)]

use ferrolb_e2e::monitoring::{Component, exported_metric_names, unexported_reads};
use ferrolb_ops::Probe;
use ferrolb_ops::metallb_metrics::{AnnouncedLabels, IpLabels};
use ferrolb_speaker::health::Health;
use ferrolb_speaker::responder::{ConflictLabels, Counters, DropLabels};

/// The speaker's metrics with one series in every labelled family (a family is exposed once
/// it has one).
fn with_a_series_each() -> Health {
    let counters = Counters::default();
    let health = Health::new(&counters);
    let ip = IpLabels {
        ip: "192.0.2.1".into(),
    };
    counters.metallb_requests.get_or_create(&ip).inc();
    counters.metallb_responses.get_or_create(&ip).inc();
    counters.metallb_gratuitous.get_or_create(&ip).inc();
    counters
        .dropped
        .get_or_create(&DropLabels { reason: "r".into() })
        .inc();
    counters
        .conflicts
        .get_or_create(&ConflictLabels { kind: "k".into() })
        .inc();
    health
        .announced_services
        .get_or_create(&AnnouncedLabels {
            service: "default/s".into(),
            protocol: "layer2".into(),
            node: "n".into(),
            ip: "192.0.2.1".into(),
        })
        .set(1);
    health
}

#[test]
fn every_speaker_metric_the_shipped_monitoring_reads_is_exported() {
    let missing =
        unexported_reads(Component::Speaker, &with_a_series_each().metrics_text()).unwrap();
    assert!(missing.is_empty(), "{missing:#?}");
}

/// MetalLB's own alerts and dashboards query these names; the speaker exports each, with
/// MetalLB's labels.
#[test]
fn metallbs_speaker_metric_names_are_exported() {
    let text = with_a_series_each().metrics_text();
    for name in [
        "metallb_layer2_requests_received",
        "metallb_layer2_responses_sent",
        "metallb_layer2_gratuitous_sent",
        "metallb_speaker_announced",
        "metallb_k8s_client_config_loaded_bool",
        "metallb_k8s_client_config_stale_bool",
    ] {
        assert!(
            exported_metric_names(&text).contains(name),
            "{name} missing from:\n{text}"
        );
    }
}
