//! MetalLB's rules for who announces, for real in namespaces: each change to the cluster's
//! objects moves (or silences) the ARP answer the client gets.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrolb_crds::L2Advertisement;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use serde_json::json;

const IP: &str = "192.168.117.100";

fn endpoints(on: &[&str], serving: bool) -> serde_json::Value {
    json!({"endpoints": on.iter().enumerate().map(|(i, n)| json!({
        "addresses": [format!("10.244.{i}.10")], "nodeName": n,
        "conditions": {"ready": serving, "serving": serving}})).collect::<Vec<_>>()})
}

#[test]
fn selectors_labels_conditions_endpoints_and_advertisements_decide_who_answers() {
    let lab = Lab::start();
    let ads: Api<L2Advertisement> = Api::namespaced(lab.admin.clone(), "metallb-system");
    let nodes: Api<Node> = Api::all(lab.admin.clone());
    let services: Api<Service> = Api::namespaced(lab.admin.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(lab.admin.clone(), "default");

    let owner = owner_among(&NODES, IP);
    lab.wait_for_answer(IP, Some(owner), "the elected node answers");
    let chosen = NODES.iter().copied().find(|n| *n != owner).unwrap();
    let others: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != chosen).collect();

    // nodeSelectors: only the selected node may answer.
    lab.patch(
        ads.clone(),
        "example",
        json!({"spec": {"nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": chosen}}]}}),
        false,
    );
    lab.wait_for_answer(
        IP,
        Some(chosen),
        "only the node the advertisement selects answers",
    );

    // The exclude label silences it, even though it is the only one selected.
    lab.patch(nodes.clone(), chosen,
        json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": ""}}}), false);
    lab.wait_for_answer(IP, None, "an excluded node does not answer");
    lab.patch(
        ads.clone(),
        "example",
        json!({"spec": {"nodeSelectors": null}}),
        false,
    );
    lab.wait_for_answer(
        IP,
        Some(owner_among(&others, IP)),
        "the others answer without the excluded node",
    );
    lab.patch(nodes.clone(), chosen,
        json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": null}}}), false);
    lab.wait_for_answer(IP, Some(owner), "back to the first owner");

    // NetworkUnavailable takes the owner out.
    lab.patch(
        nodes.clone(),
        owner,
        json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "True",
            "reason": "NoRouteCreated", "message": "test"}]}}),
        true,
    );
    let without_owner: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != owner).collect();
    lab.wait_for_answer(
        IP,
        Some(owner_among(&without_owner, IP)),
        "a node without network does not answer",
    );
    lab.patch(
        nodes.clone(),
        owner,
        json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False",
            "reason": "RouteCreated", "message": "test"}]}}),
        true,
    );
    // Ownership does not revert: the node that took over keeps the address.
    lab.wait_for_answer(
        IP,
        Some(owner_among(&without_owner, IP)),
        "the address stays with the node that took over",
    );

    // Local traffic policy: only a node with an endpoint answers.
    lab.patch(
        services.clone(),
        "myapp",
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
        false,
    );
    lab.patch(slices.clone(), "myapp-1", endpoints(&[chosen], true), false);
    lab.wait_for_answer(
        IP,
        Some(chosen),
        "with Local policy, the node hosting the endpoint answers",
    );

    // No serving endpoint: nobody answers.
    lab.patch(
        slices.clone(),
        "myapp-1",
        endpoints(&[chosen], false),
        false,
    );
    lab.wait_for_answer(IP, None, "no serving endpoint, no answer");
    poll("no ServiceL2Status claims the address any more", 30, || {
        claimants(&lab, IP).is_empty().then_some(())
    });
    lab.patch(
        services.clone(),
        "myapp",
        json!({"spec": {"externalTrafficPolicy": "Cluster"}}),
        false,
    );
    lab.patch(slices.clone(), "myapp-1", endpoints(&NODES, true), false);
    lab.wait_for_answer(IP, Some(owner), "endpoints everywhere again");

    // interfaces: an interface the nodes lack means no answer; theirs means an answer.
    lab.patch(
        ads.clone(),
        "example",
        json!({"spec": {"interfaces": ["eth9"]}}),
        false,
    );
    lab.wait_for_answer(IP, None, "no answer on an interface the nodes lack");
    poll("no ServiceL2Status claims the address any more", 30, || {
        claimants(&lab, IP).is_empty().then_some(())
    });
    lab.patch(
        ads.clone(),
        "example",
        json!({"spec": {"interfaces": ["eth0"]}}),
        false,
    );
    lab.wait_for_answer(IP, Some(owner), "an answer on the listed interface");

    // Removing the advertisement stops the answering.
    lab.block_on(ads.delete("example", &Default::default()))
        .unwrap();
    lab.wait_for_answer(IP, None, "without an advertisement, nobody answers");
}

/// The nodes whose ServiceL2Status records `ip` among the addresses they answer for.
fn claimants(lab: &Lab, ip: &str) -> Vec<String> {
    let api: Api<ferrolb_crds::ServiceL2Status> =
        Api::namespaced(lab.admin.clone(), "metallb-system");
    lab.block_on(api.list(&Default::default()))
        .unwrap()
        .items
        .into_iter()
        .filter(|o| {
            o.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ferrolb_speaker::l2_status::ADDRESSES_ANNOTATION))
                .is_some_and(|list| list.split(',').any(|a| a == ip))
        })
        .filter_map(|o| o.status?.node)
        .collect()
}
