//! Benchmark (not a test): how fast the controller gives addresses, and how much memory it
//! takes, against the emulated API server under config/'s RBAC.
//!
//!   cargo bench -p ferrolb-controller --bench allocation [-- SERVICES]
//!
//! FERROLB_BENCH_POOL sets the pool's addresses (comma-separated, default `2001:db8:1::/112`);
//! the Services ask for the family of its first entry. Huge pools measure that the
//! controller's memory does not grow with the pool: `2001:db8::/32`, `198.18.0.0/15`.
//!
//! 1. SERVICES (default 10,000) LoadBalancer Services exist; the controller starts; time until
//!    every one has an address in its status (the EXTERNAL-IP), and until every one also
//!    carries the pool annotation.
//! 2. With the controller running, single Services are created one at a time; time from the
//!    create call returning to the address being in status (20 samples).
//! 3. The controller's peak RSS (VmHWM).
//!
//! Each is measured twice: on the emulated API server as fast as it goes, and with its model
//! of a real kube-apiserver's write throughput (`lab::apiserver::cost_model`, the rates
//! measured on a real one). FERROLB_BENCH_MODEL=unmodelled or =real runs only one.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use ferrolb_e2e::create_all;
use ferrolb_lab::apiserver::cost_model::WriteRates;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::Event;
use serde_json::json;

fn service(name: &str, family: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        // 10,000 node ports do not exist (30000-32767), in a real cluster either.
        "spec": {"type": "LoadBalancer", "ipFamilies": [family], "selector": {"app": name},
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn has_pool_annotation(service: &Service) -> bool {
    service
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("metallb.io/ip-allocated-from-pool"))
}

fn has_address(service: &Service) -> bool {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let pool: Vec<String> = std::env::var("FERROLB_BENCH_POOL")
        .unwrap_or_else(|_| "2001:db8:1::/112".into())
        .split(',')
        .map(|a| a.trim().to_string())
        .collect();
    let models: Vec<Option<WriteRates>> = match std::env::var("FERROLB_BENCH_MODEL").as_deref() {
        Ok("unmodelled") => vec![None],
        Ok("real") => vec![Some(WriteRates::RECORDED)],
        _ => vec![None, Some(WriteRates::RECORDED)],
    };
    println!("services: {count}, pool: {}", pool.join(","));
    for model in models {
        run(count, &pool, model).await;
    }
}

/// One measurement, on a new emulated cluster with the model of a real API server or without.
async fn run(count: usize, pool: &[String], model: Option<WriteRates>) {
    let family = if pool[0].contains(':') {
        "IPv6"
    } else {
        "IPv4"
    };
    // The same emulated cluster as the end-to-end tests: HTTPS, RBAC, config/ installed.
    let cluster = common::Cluster::new().await;
    let emulator = cluster
        .emulator()
        .expect("the bench runs on the emulated API server");
    let admin = cluster.admin.clone();
    create_all(
        &admin,
        vec![
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "bench", "namespace": "metallb-system"},
        "spec": {"addresses": pool}}),
        ],
    )
    .await
    .unwrap();
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let created = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let services = services.clone();
            async move {
                services
                    .create(
                        &PostParams::default(),
                        &service(&format!("svc-{i:05}"), family),
                    )
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!(
        "created {count} Services in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    // FERROLB_BENCH_WRAPPER runs the controller under a profiler, e.g. "heaptrack -o /tmp/ht"
    // (the RSS figure is then the wrapper's).
    let wrapper: Vec<String> = std::env::var("FERROLB_BENCH_WRAPPER")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let binary = env!("CARGO_BIN_EXE_ferrolb-controller").to_string();
    let (program, wrapper_args) = match wrapper.split_first() {
        Some((program, args)) => (program.clone(), [args.to_vec(), vec![binary]].concat()),
        None => (binary, Vec::new()),
    };
    let mut controller = Command::new(program)
        .args(wrapper_args)
        .env("KUBECONFIG", cluster.path("controller"))
        .env("RUST_LOG", "warn")
        .args(["--health-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = controller.id();
    // The model starts with the controller: the bench's own setup is not what is measured.
    emulator.server().cost_model().set(model);
    let started = Instant::now();
    // Watched, not polled: listing 10,000 Services every few milliseconds would load the API
    // server, which shares the two cores with the controller being measured.
    let mut addressed = std::collections::HashSet::new();
    let mut annotated = std::collections::HashSet::new();
    let mut all_addressed = None;
    let mut first_addressed = None;
    let mut watch = std::pin::pin!(kube::runtime::watcher(
        services.clone(),
        kube::runtime::watcher::Config::default()
    ));
    while addressed.len() < count || annotated.len() < count {
        let next =
            tokio::time::timeout_at((started + Duration::from_secs(600)).into(), watch.next())
                .await
                .expect("not done after 10 minutes")
                .expect("the watch ended");
        match next.unwrap() {
            Event::Apply(s) | Event::InitApply(s) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                if has_address(&s) {
                    addressed.insert(name.clone());
                }
                if has_pool_annotation(&s) {
                    annotated.insert(name);
                }
            }
            _ => {}
        }
        if !addressed.is_empty() && first_addressed.is_none() {
            first_addressed = Some(started.elapsed());
        }
        if addressed.len() == count && all_addressed.is_none() {
            all_addressed = Some(started.elapsed());
        }
    }
    let bulk = all_addressed.unwrap_or_default();
    let annotations = started.elapsed();

    let mut latencies = Vec::new();
    for i in 0..20 {
        let name = format!("single-{i}");
        services
            .create(&PostParams::default(), &service(&name, family))
            .await
            .unwrap();
        let created = Instant::now();
        loop {
            if has_address(&services.get(&name).await.unwrap()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(created.elapsed());
    }
    if std::env::var_os("FERROLB_BENCH_VERBOSE").is_some() {
        println!("single Service latencies in order: {latencies:?}");
    }
    latencies.sort();
    let rss = peak_rss_kib(pid);
    let _ = controller.kill();
    let _ = controller.wait();
    match model {
        None => println!("-- emulated API server, unmodelled"),
        Some(r) => println!(
            "-- emulated API server with a real one's write rates ({} status patches/s, {} object patches/s, {} Event writes/s)",
            r.status_patches, r.object_patches, r.event_writes
        ),
    }
    println!(
        "first addressed after controller start: {:.2} s",
        first_addressed.unwrap_or_default().as_secs_f64()
    );
    println!(
        "all addressed (status) after controller start: {:.2} s",
        bulk.as_secs_f64()
    );
    println!(
        "all also annotated with their pool: {:.2} s",
        annotations.as_secs_f64()
    );
    println!(
        "single Service, create to address in status: median {:.1} ms, worst {:.1} ms (20 samples)",
        latencies[latencies.len() / 2].as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    );
    match rss {
        Some(kib) => println!("controller peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("controller peak RSS: unavailable"),
    }
}
