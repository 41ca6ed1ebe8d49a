//! ferrolb-controller: allocates external IPs from IPAddressPools to LoadBalancer Services.

use clap::Parser;
use std::sync::Arc;

use ferrolb_controller::health::{self, Health};
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let health = Arc::new(Health::new());
    let health_addr = health::parse_listen(&args.health_addr)?;
    let server = tokio::spawn(health::serve(health_addr, health.clone()));
    let client = kube::Client::try_default().await?;
    let config = Config {
        namespace: args.namespace,
        lb_class: args.lb_class,
        field_manager: "ferrolb-controller".into(),
    };
    tracing::info!(namespace = %config.namespace, lb_class = ?config.lb_class, "ferrolb-controller starting");
    tokio::select! {
        result = run(client, config, health) => result,
        served = server => match served {
            Ok(Ok(())) => anyhow::bail!("the health server stopped"),
            Ok(Err(e)) => Err(e.context(format!("serving health and metrics on {health_addr}"))),
            Err(e) => Err(e.into()),
        },
    }
}
