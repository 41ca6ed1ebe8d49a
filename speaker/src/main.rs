//! ferrolb-speaker: answers ARP/NDP for the LoadBalancer IPs its node is elected to announce.

use clap::Parser;

/// Announces LoadBalancer IPs on the node's layer 2 segment.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Name of the node this speaker runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Namespace holding the IPAddressPool and L2Advertisement objects.
    #[arg(long, env = "METALLB_NAMESPACE", default_value = ferrolb_crds::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Address serving /healthz, /readyz and /metrics (":PORT" listens on every address).
    #[arg(long, default_value = ":7473")]
    health_addr: String,
    /// UDP port the speakers gossip membership on.
    #[arg(long, default_value_t = 7947)]
    gossip_port: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "ferrolb-speaker {} (node {}, namespace {}): announcing is not part of this build yet",
        env!("CARGO_PKG_VERSION"),
        args.node_name,
        args.namespace
    )
}
