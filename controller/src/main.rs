//! ferrolb-controller: allocates external IPs from IPAddressPools to LoadBalancer Services.

use clap::Parser;

/// Allocates external IPs from IPAddressPools to Services of type LoadBalancer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Namespace holding the IPAddressPool and L2Advertisement objects.
    #[arg(long, env = "METALLB_NAMESPACE", default_value = ferrolb_crds::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Address serving /healthz, /readyz and /metrics (":PORT" listens on every address).
    #[arg(long, default_value = ":7472")]
    health_addr: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "ferrolb-controller {} (namespace {}): the allocator is not part of this build yet",
        env!("CARGO_PKG_VERSION"),
        args.namespace
    )
}
