//! Namespace deletion and ownerReference garbage collection, as a cluster's controllers do
//! them.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferrolb_lab::apiserver::{ApiServer, RunningApiServer};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, Client, Config};
use serde_json::json;

async fn start() -> (RunningApiServer, Client) {
    let running = ApiServer::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::try_from(Config::new(running.url().parse().unwrap())).unwrap();
    (running, client)
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn configmap(name: &str, owner: Option<&ConfigMap>, finalizers: &[&str]) -> ConfigMap {
    let mut object =
        json!({"metadata": {"name": name, "finalizers": finalizers}, "data": {"k": "v"}});
    if let Some(owner) = owner {
        object["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": owner.metadata.name, "uid": owner.metadata.uid,
            "blockOwnerDeletion": true
        }]);
    }
    serde_json::from_value(object).unwrap()
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_content_then_itself() {
    let (_server, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    configmaps
        .create(&PostParams::default(), &configmap("plain", None, &[]))
        .await
        .unwrap();
    configmaps
        .create(
            &PostParams::default(),
            &configmap("held", None, &["example.com/hold"]),
        )
        .await
        .unwrap();

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    // No new content in a terminating namespace.
    match configmaps
        .create(&PostParams::default(), &configmap("late", None, &[]))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert_eq!(
                status.message,
                "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
            );
        }
        other => panic!("{other:?}"),
    }
    until("the plain ConfigMap is gone", || async {
        configmaps.get_opt("plain").await.unwrap().is_none()
    })
    .await;
    // The finalizer holds its object, and the object holds the namespace.
    assert!(
        configmaps
            .get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert!(namespaces.get_opt("doomed").await.unwrap().is_some());
    let release = json!({"metadata": {"finalizers": null}});
    configmaps
        .patch(
            "held",
            &Default::default(),
            &kube::api::Patch::Merge(&release),
        )
        .await
        .unwrap();
    until("the namespace is gone", || async {
        namespaces.get_opt("doomed").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn background_deletion_collects_dependents_after_the_owner() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = api
        .create(&PostParams::default(), &configmap("owner", None, &[]))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &configmap("child", Some(&owner), &[]),
    )
    .await
    .unwrap();
    let unrelated = api
        .create(&PostParams::default(), &configmap("unrelated", None, &[]))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        api.get_opt("owner").await.unwrap().is_none(),
        "the owner goes at once"
    );
    until("the child is collected", || async {
        api.get_opt("child").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        api.get("unrelated").await.unwrap().metadata.uid,
        unrelated.metadata.uid
    );
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = api
        .create(&PostParams::default(), &configmap("owner", None, &[]))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &configmap("child", Some(&owner), &["example.com/hold"]),
    )
    .await
    .unwrap();
    api.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = api.get("owner").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    until("the child is being deleted", || async {
        api.get("child")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    // The child's own finalizer holds it, so the owner still waits.
    assert!(api.get_opt("owner").await.unwrap().is_some());
    api.patch(
        "child",
        &Default::default(),
        &kube::api::Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    until("the owner is gone", || async {
        api.get_opt("owner").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = api
        .create(&PostParams::default(), &configmap("owner", None, &[]))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &configmap("child", Some(&owner), &[]),
    )
    .await
    .unwrap();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete("owner", &params).await.unwrap();
    until("the owner is gone", || async {
        api.get_opt("owner").await.unwrap().is_none()
    })
    .await;
    let child = api.get("child").await.unwrap();
    assert!(
        child.metadata.owner_references.is_none(),
        "{:?}",
        child.metadata.owner_references
    );
    assert!(child.metadata.deletion_timestamp.is_none());
}
