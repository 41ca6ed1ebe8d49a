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

/// Pages follow etcd's key order ("namespace/name"): with namespaces `a` and `a-b`, `a-b/y`
/// comes before `a/x` ('-' sorts before '/'), and paging one object at a time across them
/// loses and repeats nothing. With a selector the remaining count is not given, as
/// kube-apiserver does not know it without reading on.
#[tokio::test]
async fn pages_across_namespaces_follow_key_order() {
    let (_server, client) = start().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in ["a", "a-b"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    for (ns, name) in [("a", "x"), ("a-b", "y"), ("a", "z")] {
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &configmap(name, json!({"t": "1"})))
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(client);
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(1);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = all.list(&params).await.unwrap();
        if page.metadata.continue_.is_some() {
            assert_eq!(
                page.metadata.remaining_item_count,
                Some(2 - seen.len() as i64)
            );
        }
        for c in &page.items {
            seen.push(format!(
                "{}/{}",
                c.metadata.namespace.clone().unwrap(),
                c.metadata.name.clone().unwrap()
            ));
        }
        token = page.metadata.continue_.clone();
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["a-b/y", "a/x", "a/z"]);
    let selected = all
        .list(&ListParams::default().limit(1).labels("t=1"))
        .await
        .unwrap();
    assert!(selected.metadata.continue_.is_some());
    assert_eq!(selected.metadata.remaining_item_count, None);
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

fn data_of(cm: &ConfigMap) -> String {
    cm.data
        .clone()
        .unwrap_or_default()
        .get("k")
        .cloned()
        .unwrap_or_default()
}

/// A reflector's store ends up equal to the server's objects, across a dropped watch, a 410 Gone
/// (re-list) and a deletion made while no watch was open.
#[tokio::test]
async fn reflector_store_converges_after_drops_and_gone() {
    use kube::runtime::reflector;
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default()),
    );
    let pump = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(item) = stream.next().await {
            let _ = item;
        }
    });
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &configmap(name, json!({})))
            .await
            .unwrap();
    }
    let snapshot = |reader: &reflector::Store<ConfigMap>| -> Vec<(String, String)> {
        let mut items: Vec<(String, String)> = reader
            .state()
            .iter()
            .map(|cm| (cm.metadata.name.clone().unwrap(), data_of(cm)))
            .collect();
        items.sort();
        items
    };
    let expected = |api: Api<ConfigMap>| async move {
        let mut items: Vec<(String, String)> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|cm| (cm.metadata.name.clone().unwrap(), data_of(cm)))
            .collect();
        items.sort();
        items
    };
    eventually_equal(&reader, &api, &snapshot, &expected).await;
    server.server().faults().drop_watches();
    let patch = json!({"data": {"k": "after-drop"}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually_equal(&reader, &api, &snapshot, &expected).await;
    // A compaction plus a dropped watch: the watcher gets 410 and must re-list, which is the only
    // way it can learn that b was deleted.
    api.delete("b", &DeleteParams::default()).await.unwrap();
    server.server().store().compact();
    server.server().faults().drop_watches();
    api.create(&PostParams::default(), &configmap("d", json!({})))
        .await
        .unwrap();
    eventually_equal(&reader, &api, &snapshot, &expected).await;
    assert!(snapshot(&reader).iter().all(|(name, _)| name != "b"));
    pump.abort();
}

async fn eventually_equal<S, E, Fut>(
    reader: &kube::runtime::reflector::Store<ConfigMap>,
    api: &Api<ConfigMap>,
    snapshot: &S,
    expected: &E,
) where
    S: Fn(&kube::runtime::reflector::Store<ConfigMap>) -> Vec<(String, String)>,
    E: Fn(Api<ConfigMap>) -> Fut,
    Fut: std::future::Future<Output = Vec<(String, String)>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let want = expected(api.clone()).await;
        if snapshot(reader) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector never converged: {:?} vs {want:?}",
            snapshot(reader)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A kube-runtime Controller reconciles every object, and keeps reconciling changes after
/// injected watch drops, 410 Gone and failing requests.
#[tokio::test]
async fn controller_keeps_reconciling_through_faults() {
    use kube::runtime::controller::{Action, Controller};
    use std::sync::Arc;
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    struct Context {
        seen: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    }
    async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
        let _ = ctx
            .seen
            .send((cm.metadata.name.clone().unwrap_or_default(), data_of(&cm)));
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Context>) -> Action {
        Action::requeue(Duration::from_millis(50))
    }
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Context { seen: seen_tx }))
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    api.create(&PostParams::default(), &configmap("one", json!({})))
        .await
        .unwrap();
    reconciled(&mut seen_rx, "one", "v").await;
    server.server().faults().drop_watches();
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"k": "after-drop"}})),
    )
    .await
    .unwrap();
    reconciled(&mut seen_rx, "one", "after-drop").await;
    server.server().store().compact();
    server.server().faults().drop_watches();
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"k": "after-gone"}})),
    )
    .await
    .unwrap();
    reconciled(&mut seen_rx, "one", "after-gone").await;
    // The next five requests fail (the watcher's re-list among them); the controller retries.
    server.server().faults().fail_next(5, 500);
    server.server().faults().drop_watches();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let direct = Api::<ConfigMap>::namespaced(client, "default");
    loop {
        // Our own writes may hit the injected failures too; retry them.
        match direct
            .patch(
                "one",
                &PatchParams::default(),
                &Patch::Merge(&json!({"data": {"k": "after-errors"}})),
            )
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(status)) if status.code == 500 => continue,
            Err(e) => panic!("{e}"),
        }
    }
    reconciled(&mut seen_rx, "one", "after-errors").await;
    task.abort();
}

/// Waits until the controller reconciled `name` holding `value`.
async fn reconciled(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    name: &str,
    value: &str,
) {
    loop {
        let (n, v) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{name}={value} never reconciled"))
            .unwrap();
        if n == name && v == value {
            return;
        }
    }
}

#[tokio::test]
async fn injected_failures_and_pauses() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    // kube-rs retries 429 Too Many Requests by itself: the list succeeds once the two injected
    // answers are spent.
    server.server().faults().fail_next(2, 429);
    api.list(&ListParams::default()).await.unwrap();
    assert_eq!(server.server().faults().pending_failures(), 0);
    server.server().faults().fail_next(1, 500);
    match api.get_opt("x").await {
        Err(kube::Error::Api(status)) => assert_eq!(
            (status.code, status.reason.as_str()),
            (500, "InternalError")
        ),
        other => panic!("{other:?}"),
    }
    // A paused server holds the answer until resumed.
    server.server().faults().pause();
    let pending = tokio::spawn({
        let api = api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .map(|l| l.items.len())
        }
    });
    let held = tokio::time::timeout(Duration::from_millis(200), async {
        while !pending.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(held.is_err(), "the request was answered while paused");
    server.server().faults().resume();
    assert_eq!(pending.await.unwrap().unwrap(), 0);
}

/// Events recorded by kube-rs (events.k8s.io/v1, with series on repeats) are found the way
/// `kubectl describe` looks for them: core/v1 with an involvedObject field selector.
#[tokio::test]
async fn recorded_events_show_in_both_event_apis() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as EventsEvent;
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (_server, client) = start().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service = services.get("kubernetes").await.unwrap();
    let reporter = Reporter {
        controller: "ferrolb-controller".into(),
        instance: Some("test".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "IPAllocated".into(),
        note: Some("Assigned IP [192.168.117.100]".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let reference = service.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let selector = format!(
        "involvedObject.name=kubernetes,involvedObject.namespace=default,involvedObject.kind=Service,involvedObject.uid={}",
        service.metadata.uid.clone().unwrap()
    );
    let found = core
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1, "one event, repeated as a series");
    let seen = &found.items[0];
    assert_eq!(seen.reason.as_deref(), Some("IPAllocated"));
    assert_eq!(
        seen.message.as_deref(),
        Some("Assigned IP [192.168.117.100]")
    );
    assert_eq!(
        seen.reporting_component.as_deref(),
        Some("ferrolb-controller")
    );
    assert_eq!(seen.series.as_ref().and_then(|s| s.count), Some(2));

    let events: Api<EventsEvent> = Api::namespaced(client, "default");
    let same = events
        .get(seen.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(same.note.as_deref(), Some("Assigned IP [192.168.117.100]"));
    assert_eq!(
        same.regarding.and_then(|r| r.name).as_deref(),
        Some("kubernetes")
    );
}

#[tokio::test]
async fn delete_collection_by_selector() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        api.create(
            &PostParams::default(),
            &configmap(name, json!({"tier": tier})),
        )
        .await
        .unwrap();
    }
    let result = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=web"),
        )
        .await
        .unwrap();
    let deleted = result.left().expect("the deleted objects are listed");
    assert_eq!(deleted.items.len(), 2);
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["b"]);
}

/// CRDs make their resources served, custom resources get the schema's defaults and rules,
/// generation counts spec changes only, and deleting the CRD stops serving them.
#[tokio::test]
async fn custom_resources_follow_their_crd() {
    use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus};
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let (_server, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ferrolb_crds::crd_manifests::all_crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "metallb-system"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), "metallb-system");
    let mut pool = IPAddressPool::new(
        "first-pool",
        IPAddressPoolSpec {
            addresses: vec!["192.168.117.100-192.168.117.110".into()],
            auto_assign: None,
            avoid_buggy_ips: None,
            service_allocation: None,
        },
    );
    let created = pools.create(&PostParams::default(), &pool).await.unwrap();
    assert_eq!(
        created.spec.auto_assign,
        Some(true),
        "schema default applied"
    );
    assert_eq!(created.spec.avoid_buggy_ips, Some(false));
    assert_eq!(created.metadata.generation, Some(1));

    // Invalid objects get kube-apiserver's 422 from the CEL rules.
    pool.metadata.name = Some("reversed".into());
    pool.spec.addresses = vec!["192.0.2.20-192.0.2.10".into()];
    match pools.create(&PostParams::default(), &pool).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
            assert_eq!(
                status.message,
                "IPAddressPool.metallb.io \"reversed\" is invalid: spec.addresses[0]: Invalid value: \"string\": the start of a range must not be after its end"
            );
        }
        other => panic!("{other:?}"),
    }

    // Status and label writes keep the generation; a spec change bumps it.
    let status = json!({"status": IPAddressPoolStatus { assigned_ipv4: 1, available_ipv4: 10, ..Default::default() }});
    let after_status = pools
        .patch_status(
            "first-pool",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    assert_eq!(after_status.metadata.generation, Some(1));
    assert_eq!(after_status.status.unwrap().assigned_ipv4, 1);
    let labels = json!({"metadata": {"labels": {"a": "b"}}});
    let after_labels = pools
        .patch(
            "first-pool",
            &PatchParams::default(),
            &Patch::Merge(&labels),
        )
        .await
        .unwrap();
    assert_eq!(after_labels.metadata.generation, Some(1));
    let spec = json!({"spec": {"avoidBuggyIPs": true}});
    let after_spec = pools
        .patch("first-pool", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(after_spec.metadata.generation, Some(2));

    crds.delete("ipaddresspools.metallb.io", &DeleteParams::default())
        .await
        .unwrap();
    match pools.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("still served after the CRD was deleted: {other:?}"),
    }
}

/// `dryRun=All` runs every check and answers as if it wrote, but stores nothing and allocates
/// nothing.
#[tokio::test]
async fn dry_run_writes_nothing() {
    let (server, client) = start().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "myapp"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
    }))
    .unwrap();
    let before = server.server().store().resource_version();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = services.create(&dry, &service).await.unwrap();
    assert!(
        answered.spec.unwrap().cluster_ip.is_some(),
        "answered as created"
    );
    assert!(
        services.get_opt("myapp").await.unwrap().is_none(),
        "but not stored"
    );
    assert_eq!(server.server().store().resource_version(), before);
    // Invalid input is still refused.
    let two_unnamed: Service = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 81}]}
    }))
    .unwrap();
    match services.create(&dry, &two_unnamed).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422),
        other => panic!("{other:?}"),
    }
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let patch = json!({"metadata": {"labels": {"dry": "run"}}});
    let patched = services
        .patch(
            "myapp",
            &PatchParams {
                dry_run: true,
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["dry"], "run");
    assert!(
        services
            .get("myapp")
            .await
            .unwrap()
            .metadata
            .labels
            .is_none()
    );
    services
        .delete(
            "myapp",
            &DeleteParams {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(services.get_opt("myapp").await.unwrap().is_some());
}
