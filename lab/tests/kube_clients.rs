//! kube-rs clients against the emulated API server: CRUD, conflicts, status separation,
//! finalizers, selectors, pagination, watches and injected faults.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferrolb_lab::apiserver::{ApiServer, RunningApiServer};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config};
use serde_json::json;

async fn start() -> (RunningApiServer, Client) {
    let running = ApiServer::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(running.url().parse().unwrap());
    (running, Client::try_from(config).unwrap())
}

fn configmap(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn create_get_conflict_and_delete() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert!(created.metadata.creation_timestamp.is_some());
    let again = api
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await;
    match again {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "AlreadyExists");
            assert_eq!(status.message, "configmaps \"a\" already exists");
        }
        other => panic!("{other:?}"),
    }
    // A stale resourceVersion is refused, the current one accepted.
    let mut stale = created.clone();
    stale.data = Some([("k".to_string(), "v2".to_string())].into());
    api.replace("a", &PostParams::default(), &stale)
        .await
        .unwrap();
    match api.replace("a", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("{other:?}"),
    }
    let current = api.get("a").await.unwrap();
    assert_eq!(current.metadata.uid.as_deref(), Some(uid.as_str()));
    api.delete("a", &DeleteParams::default()).await.unwrap();
    match api.get("a").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    match api
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.message, "namespaces \"nowhere\" not found");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn status_and_main_resource_are_written_separately() {
    let (_server, client) = start().await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "myapp"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &service).await.unwrap();
    assert!(
        created
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .is_none(),
        "create ignores status"
    );
    let ingress =
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}}});
    api.patch_status("myapp", &PatchParams::default(), &Patch::Merge(&ingress))
        .await
        .unwrap();
    // A write to the main resource does not touch status...
    let labels = json!({"metadata": {"labels": {"a": "b"}}, "status": {"loadBalancer": {}}});
    let patched = api
        .patch("myapp", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    let ip = patched
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap()[0]
        .ip
        .clone();
    assert_eq!(ip.as_deref(), Some("192.0.2.10"));
    // ...and a write to status does not touch the rest.
    let sneaky = json!({"metadata": {"labels": {"a": "c"}}, "status": {"loadBalancer": {}}});
    let patched = api
        .patch_status("myapp", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["a"], "b");
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm = configmap("held", json!({}));
    cm.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &cm).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let terminating = api.get("held").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let release = json!({"metadata": {"finalizers": null}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    assert!(api.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn json_patch_and_selectors_and_pagination() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web"), ("d", "cache")] {
        api.create(
            &PostParams::default(),
            &configmap(name, json!({"tier": tier})),
        )
        .await
        .unwrap();
    }
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}
    ]))
    .unwrap();
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(patched.metadata.annotations.unwrap()["x"], "y");
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let web = api
        .list(&ListParams::default().labels("tier in (web,cache),tier!=cache"))
        .await
        .unwrap();
    assert_eq!(names(web), ["a", "c"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(names(by_name), ["b"]);
    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    assert_eq!(names(first), ["a", "b", "c"]);
    let rest = api
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert!(rest.metadata.continue_.is_none());
    assert_eq!(names(rest), ["d"]);
}

/// A watcher sees every change in order, also across dropped watches and a 410 Gone.
#[tokio::test]
async fn watcher_survives_drops_and_gone() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher::watcher(api.clone(), watcher::Config::default().any_semantic()).boxed();
    let pump = tokio::spawn(async move {
        let mut stream = stream;
        while let Ok(Some(event)) = stream.try_next().await {
            if let Event::Apply(cm) | Event::InitApply(cm) = event {
                let value = cm
                    .data
                    .unwrap_or_default()
                    .get("k")
                    .cloned()
                    .unwrap_or_default();
                let _ = tx.send(value);
            }
        }
    });
    api.create(&PostParams::default(), &configmap("w", json!({})))
        .await
        .unwrap();
    let mut seen = Vec::new();
    expect("v", &mut seen, &mut rx).await;
    for (i, fault) in ["drop", "gone", "drop"].iter().enumerate() {
        match *fault {
            "drop" => server.server().faults().drop_watches(),
            _ => {
                server.server().store().compact();
                server.server().faults().drop_watches();
            }
        }
        let value = format!("v{i}");
        let patch = json!({"data": {"k": value}});
        api.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        expect(&value, &mut seen, &mut rx).await;
    }
    // Values only move forward: nothing seen out of order.
    let order = ["v", "v0", "v1", "v2"];
    let positions: Vec<usize> = seen
        .iter()
        .map(|v| order.iter().position(|o| o == v).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    pump.abort();
}

/// Receives values until `value` arrives, recording every one seen.
async fn expect(
    value: &str,
    seen: &mut Vec<String>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    loop {
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {value} within 20 s; saw {seen:?}"))
            .unwrap();
        seen.push(got.clone());
        if got == value {
            return;
        }
    }
}
