//! ferrolb-controller: allocates external IPs from IPAddressPools to LoadBalancer Services.

use clap::Parser;
use std::sync::Arc;

use ferrolb_controller::health::Health;
use ferrolb_controller::leader::{Elector, Timing};
use ferrolb_controller::runtime::{Config, run};

/// Allocates external IPs from IPAddressPools to Services of type LoadBalancer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Namespace holding the IPAddressPool and L2Advertisement objects.
    #[arg(long, env = "METALLB_NAMESPACE", default_value = ferrolb_crds::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Handle Services of this loadBalancerClass; without it, only Services with no class.
    #[arg(long)]
    lb_class: Option<String>,
    /// Address serving /healthz, /readyz and /metrics (":PORT" listens on every address).
    #[arg(long, default_value = ":7472")]
    health_addr: String,
    /// Elect one acting replica through a Lease; only turn this off for a single replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader Lease, in the pools' namespace.
    #[arg(long, default_value = "ferrolb-controller")]
    lease_name: String,
    /// This replica's name in the Lease (the Deployment sets POD_NAME).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferrolb_ops::init_logging();
    let args = Args::parse();
    let health = Arc::new(Health::new());
    let health_addr = ferrolb_ops::parse_listen(&args.health_addr)?;
    let server = tokio::spawn(ferrolb_ops::serve(health_addr, health.clone()));
    let client = kube::Client::try_default().await?;
    let config = Config {
        namespace: args.namespace,
        lb_class: args.lb_class,
        field_manager: "ferrolb-controller".into(),
    };
    tracing::info!(namespace = %config.namespace, lb_class = ?config.lb_class, "ferrolb-controller starting");
    let identity = args.identity.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("ferrolb-controller-{}-{nanos}", std::process::id())
    });
    let mut elector = args.leader_elect.then(|| {
        Elector::new(
            kube::Api::namespaced(client.clone(), &config.namespace),
            &args.lease_name,
            &identity,
            Timing::default(),
        )
    });
    let act = async {
        let Some(elector) = elector.as_mut() else {
            health.metrics.is_leader.set(1);
            return run(client, config, health.clone()).await;
        };
        // A standby replica is healthy and ready; it only waits for its turn.
        health.set_ready();
        loop {
            let term = elector.acquire().await;
            health.metrics.is_leader.set(1);
            tokio::select! {
                result = run(client.clone(), config.clone(), health.clone()) => return result,
                lost = elector.keep(term) => {
                    // Another replica acts now, or may: dropping `run` ends every watch and
                    // write of this one before it could act beside it.
                    health.metrics.is_leader.set(0);
                    tracing::warn!(reason = %lost, "stopped leading; standing by");
                }
            }
        }
    };
    let result = tokio::select! {
        result = act => result,
        _ = ferrolb_ops::shutdown_requested() => Ok(()),
        served = server => match served {
            Ok(Ok(())) => Err(anyhow::anyhow!("the health server stopped")),
            Ok(Err(e)) => Err(e.context(format!("serving health and metrics on {health_addr}"))),
            Err(e) => Err(e.into()),
        },
    };
    if let Some(elector) = &elector {
        elector.release().await;
    }
    result
}
