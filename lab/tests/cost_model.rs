//! The real-API-server cost model over real HTTP: with it on, writes of one kind are served at
//! that kind's rate however many requests arrive at once.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ferrolb_lab::apiserver::ApiServer;
use ferrolb_lab::apiserver::cost_model::WriteRates;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::json;

#[tokio::test]
async fn status_patches_are_served_at_the_modelled_rate() {
    let server = ApiServer::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let services: Api<Service> = Api::namespaced(client, "default");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "paced"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    // 20 status patches/s: 21 patches sent together take their slots 50 ms apart, the last
    // one a full second after the first.
    server.server().cost_model().set(Some(WriteRates {
        status_patches: 20.0,
        object_patches: 1e9,
        event_writes: 1e9,
    }));
    let start = Instant::now();
    let patches = (0..21).map(|i| {
        let services = services.clone();
        async move {
            let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("192.0.2.{}", i + 1)}]}}});
            services
                .patch_status("paced", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    });
    futures::future::join_all(patches).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000),
        "21 status patches at 20/s were all served within {elapsed:?}"
    );
}
