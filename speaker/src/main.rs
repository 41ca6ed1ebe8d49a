//! ferrolb-speaker: answers ARP/NDP for the LoadBalancer IPs its node is elected to announce.

use std::net::{IpAddr, SocketAddr};

use std::sync::Arc;

use clap::Parser;
use ferrolb_speaker::health::Health;
use ferrolb_speaker::interface_exclusion::{self, InterfaceExclusion};
use ferrolb_speaker::membership::{Membership, Timing};
use ferrolb_speaker::responder::{Responder, candidate_interfaces};
use ferrolb_speaker::runtime::{Config, run};
use k8s_openapi::api::core::v1::Node;
use kube::Api;

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
    /// Announce Services of this loadBalancerClass; without it, only Services with no class.
    #[arg(long)]
    lb_class: Option<String>,
    /// Address serving /healthz, /readyz and /metrics (":PORT" listens on every address).
    #[arg(long, default_value = ":7473")]
    health_addr: String,
    /// UDP port the speakers gossip membership on.
    #[arg(long, default_value_t = 7947)]
    gossip_port: u16,
    /// On SIGTERM while its node stays (a rolling update, a restart), the peers hold this
    /// node's addresses this many seconds for its next speaker instead of moving them; 0
    /// hands them over at once. A cordoned or departing node always hands over at once.
    #[arg(long, env = "FERROLB_RESTART_GRACE_SECONDS", default_value_t = 10)]
    restart_grace_seconds: u64,
    /// Failure detection: every this many milliseconds each speaker probes one peer. Shorter
    /// notices a dead node sooner, at the cost of more gossip and of false suspicions on a
    /// loaded node. Every speaker must use the same three values.
    #[arg(long, env = "FERROLB_PROBE_PERIOD_MS", default_value_t = Timing::default().probe_period.as_millis() as u64)]
    probe_period_ms: u64,
    /// How long a probe waits for its answer before other peers are asked to try (shorter
    /// than the probe period).
    #[arg(long, env = "FERROLB_PROBE_TIMEOUT_MS", default_value_t = Timing::default().probe_rtt.as_millis() as u64)]
    probe_timeout_ms: u64,
    /// How long a suspected peer has to refute before it is declared down and its addresses
    /// move.
    #[arg(long, env = "FERROLB_SUSPECT_TIMEOUT_MS", default_value_t = Timing::default().suspect_to_down.as_millis() as u64)]
    suspect_timeout_ms: u64,
    /// MetalLB's `metallb-excludel2` ConfigMap key, mounted as a file: interfaces whose name
    /// matches one of its `announcedInterfacesToExclude` expressions are never announced on.
    /// A missing file excludes nothing; it is read at start, as MetalLB does.
    #[arg(long, env = "FERROLB_EXCLUDE_L2_CONFIG", default_value = interface_exclusion::DEFAULT_PATH)]
    exclude_l2_config: std::path::PathBuf,
    /// Besides the announcements on every takeover, announce every owned address again this
    /// often (gratuitous ARP / unsolicited NA), for switches whose forwarding entries age out
    /// before the clients' neighbour entries: "30s", "5m", or plain seconds. 0 (the default)
    /// sends none.
    #[arg(long, env = "FERROLB_GRATUITOUS_ARP_INTERVAL", default_value = "0", value_parser = parse_interval)]
    gratuitous_arp_interval: std::time::Duration,
}

/// "30s", "500ms", "5m", "1h" or a plain number of seconds.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 30s, 5m or 60)"))?;
    let millis = match unit {
        "" | "s" => number.checked_mul(1000),
        "ms" => Some(number),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not a duration (like 30s, 5m or 60)"))?;
    let interval = std::time::Duration::from_millis(millis);
    if !interval.is_zero() && interval < std::time::Duration::from_secs(1) {
        return Err(format!(
            "{text:?}: the interval must be 0 (off) or at least 1s"
        ));
    }
    Ok(interval)
}

/// Taints that say a node is going away: its addresses move at once on SIGTERM.
const DEPARTING_TAINTS: [&str; 3] = [
    "node.kubernetes.io/out-of-service",
    "ToBeDeletedByClusterAutoscaler",
    "node.kubernetes.io/unschedulable",
];

/// Whether this node is going away (cordoned for a drain, tainted as departing, deleted), as
/// far as the API server says within a second; unknown counts as going.
async fn node_departing(client: &kube::Client, node: &str) -> bool {
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        Api::<Node>::all(client.clone()).get(node),
    )
    .await;
    let Ok(Ok(node)) = read else {
        return true;
    };
    let spec = node.spec.as_ref();
    node.metadata.deletion_timestamp.is_some()
        || spec.and_then(|s| s.unschedulable).unwrap_or(false)
        || spec.and_then(|s| s.taints.as_ref()).is_some_and(|taints| {
            taints
                .iter()
                .any(|t| DEPARTING_TAINTS.contains(&t.key.as_str()))
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferrolb_ops::init_logging();
    let health_addr = ferrolb_ops::parse_listen(&args.health_addr)?;
    tracing::info!(node = %args.node_name, namespace = %args.namespace, "ferrolb-speaker starting");

    let client = kube::Client::try_default().await?;
    // The others reach this speaker at its Node's InternalIP.
    // The API server may be out of reach for a while (a cut link, a restart of its own): the
    // speaker waits for it rather than exiting into a crash loop.
    let node = {
        let mut wait = std::time::Duration::from_millis(200);
        loop {
            match Api::<Node>::all(client.clone()).get(&args.node_name).await {
                Ok(node) => break node,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    anyhow::bail!("Node {} does not exist", args.node_name)
                }
                Err(e) => {
                    tracing::warn!(node = %args.node_name, error = %e, retry_in = ?wait, "cannot read this node's Node object yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    };
    let internal_ip: Option<IpAddr> = node
        .status
        .and_then(|s| s.addresses)
        .and_then(|a| a.into_iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse().ok());
    let Some(internal_ip) = internal_ip else {
        anyhow::bail!(
            "Node {} has no InternalIP address to gossip from",
            args.node_name
        );
    };
    let advertise = SocketAddr::new(internal_ip, args.gossip_port);
    let bind = SocketAddr::new(
        match internal_ip {
            IpAddr::V4(_) => IpAddr::from([0u8; 4]),
            IpAddr::V6(_) => IpAddr::from([0u16; 8]),
        },
        args.gossip_port,
    );
    let timing = Timing::with_detection(
        std::time::Duration::from_millis(args.probe_period_ms),
        std::time::Duration::from_millis(args.probe_timeout_ms),
        std::time::Duration::from_millis(args.suspect_timeout_ms),
    )
    .map_err(|e| anyhow::anyhow!("invalid failure-detection timing: {e}"))?;
    tracing::info!(
        probe_period_ms = args.probe_period_ms,
        probe_timeout_ms = args.probe_timeout_ms,
        suspect_timeout_ms = args.suspect_timeout_ms,
        "failure detection"
    );
    let membership = Membership::start(&args.node_name, bind, Some(advertise), timing, 3).await?;
    let exclusion = InterfaceExclusion::read(&args.exclude_l2_config)
        .map_err(|e| anyhow::anyhow!("the interface exclusions (metallb-excludel2): {e}"))?;
    // A node whose links are all down for a moment (the speaker restarted during a cut)
    // waits for one to come up rather than exiting into a crash loop; a node left with no
    // candidate at all (none exists, or metallb-excludel2 excludes them all) is misconfigured.
    let interfaces = {
        let mut wait = std::time::Duration::from_millis(200);
        let mut reported_exclusion = false;
        loop {
            let (candidates, excluded): (Vec<_>, Vec<_>) = candidate_interfaces()
                .into_iter()
                .partition(|(i, _)| !exclusion.excludes(&i.name));
            if !excluded.is_empty() && !reported_exclusion {
                tracing::info!(
                    excluded = ?excluded.iter().map(|(i, _)| i.name.as_str()).collect::<Vec<_>>(),
                    patterns = ?exclusion.patterns(),
                    "interfaces excluded from announcements (metallb-excludel2)"
                );
                reported_exclusion = true;
            }
            if candidates.is_empty() {
                anyhow::bail!(
                    "no interface can carry ARP on this node (broadcast-capable, not loopback, not enslaved, not excluded by metallb-excludel2)"
                );
            }
            let up: Vec<_> = candidates
                .iter()
                .filter(|(_, up)| *up)
                .map(|(i, _)| i.clone())
                .collect();
            if !up.is_empty() {
                break up;
            }
            tracing::warn!(
                down = ?candidates.iter().map(|(i, _)| i.name.as_str()).collect::<Vec<_>>(),
                retry_in = ?wait,
                "no interface that may carry ARP is up yet; waiting for one"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
        }
    };
    let interface_names: std::collections::BTreeSet<String> =
        interfaces.iter().map(|i| i.name.clone()).collect();
    let responder = Responder::start(interfaces, args.gratuitous_arp_interval)?;
    let health = Arc::new(Health::new(&responder.counters));
    let server = tokio::spawn(ferrolb_ops::serve(health_addr, health.clone()));
    let config = Config {
        node_name: args.node_name,
        namespace: args.namespace,
        lb_class: args.lb_class,
        gossip_port: args.gossip_port,
        restart_grace: std::time::Duration::from_secs(args.restart_grace_seconds),
    };
    let (node_name, namespace) = (config.node_name.clone(), config.namespace.clone());
    let restart_grace = config.restart_grace;
    let leave = membership.leave_handle();
    tokio::select! {
        result = run(client.clone(), config, responder, membership, health) => result,
        served = server => Err(match served {
            Ok(Err(e)) => e.context("the health server stopped"),
            _ => anyhow::anyhow!("the health server stopped"),
        }),
        () = ferrolb_ops::shutdown_requested() => {
            // A restart keeps the addresses where they are: the peers hold them for the next
            // speaker (gossip will report this one gone, the heartbeat says why), and the
            // node's data path keeps serving established connections meanwhile.
            if !restart_grace.is_zero() && !node_departing(&client, &node_name).await {
                match ferrolb_speaker::heartbeat::mark_restarting(client, &namespace, &node_name, &interface_names, restart_grace).await {
                    Ok(()) => {
                        tracing::info!(grace_seconds = restart_grace.as_secs(), "stopping for a restart: the peers hold this node's addresses for its next speaker");
                        return Ok(());
                    }
                    Err(e) => tracing::warn!(error = %e, "could not mark the heartbeat as restarting"),
                }
            }
            tracing::info!("stopping: leaving the gossip cluster so peers take over now");
            leave.leave().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_interval;
    use std::time::Duration;

    #[test]
    fn intervals_read_as_durations_or_seconds() {
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        assert_eq!(parse_interval("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "-5", "1.5s", "10 parsecs", "500ms"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
