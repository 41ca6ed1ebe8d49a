//! `ferrolb-lab`: run ferrolb's emulated Kubernetes API server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferrolb_lab::apiserver::ApiServer;
use ferrolb_lab::apiserver::auth::UserInfo;
use ferrolb_lab::apiserver::kubeconfig::Kubeconfig;

#[derive(Parser)]
#[command(
    version,
    about = "ferrolb's lab: an emulated Kubernetes API server and a local demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which addresses the demo's Service gets (default: IPv4, the seed's 192.168.117.100).
#[derive(clap::Args)]
struct FamilyArgs {
    /// An IPv6 Service (2001:db8::100), answered with Neighbor Advertisements.
    #[arg(long, conflicts_with = "dual_stack")]
    ipv6: bool,
    /// A dual-stack Service (192.168.117.120 and 2001:db8::100).
    #[arg(long)]
    dual_stack: bool,
}

impl FamilyArgs {
    fn family(&self) -> ferrolb_lab::demo::Family {
        use ferrolb_lab::demo::Family;
        match (self.ipv6, self.dual_stack) {
            (true, _) => Family::Ipv6,
            (_, true) => Family::DualStack,
            _ => Family::Ipv4,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the emulated Kubernetes API in the foreground until killed.
    Apiserver {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Where to write a kubeconfig for kubectl and kube-rs.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Bearer token of the administrator identity written into the kubeconfig.
        #[arg(long, default_value = "ferrolb-lab-admin")]
        token: String,
        /// Also write a kubeconfig for a service account, as NAMESPACE/NAME=FILE (repeatable);
        /// requests with its token are authorized by the RBAC objects stored in the server.
        #[arg(
            long = "service-account-kubeconfig",
            value_name = "NAMESPACE/NAME=FILE"
        )]
        service_accounts: Vec<String>,
        /// Pace writes to a real kube-apiserver's measured throughput (855 status patches/s,
        /// 716 object patches/s, 1,383 Event writes/s), shared by all clients.
        #[arg(long)]
        real_write_rates: bool,
    },
    /// Run the whole mission on namespaces: API server, nodes, controller, speakers, a
    /// client; show the EXTERNAL-IP, the ARP answer, the HTTP answer and a failover; clean up.
    Demo {
        /// Leave the lab running afterwards (`ferrolb-lab down` removes it).
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        family: FamilyArgs,
    },
    /// Build the lab and leave it running, for exploring by hand.
    Up {
        #[command(flatten)]
        family: FamilyArgs,
    },
    /// Remove the lab: processes, namespaces, state.
    Down,
    /// Install the Debian packages the lab and ferrolb's tests need (ip, iputils arping,
    /// ndisc6, curl) where missing, and check for kubectl.
    Prepare,
    /// What of the lab is running.
    Status,
    /// (used by the lab) Answer HTTP requests with one line of text.
    #[command(hide = true)]
    ServeText {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        text: String,
    },
    /// (used by the lab) Forward TCP between network namespaces.
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        listen: SocketAddr,
        /// The namespace to listen in (default: this process's).
        #[arg(long)]
        listen_netns: Option<String>,
        /// The namespace to connect from (default: this process's).
        #[arg(long)]
        netns: Option<String>,
        #[arg(long)]
        to: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferrolb_ops::init_logging();
    match Cli::parse().command {
        Command::Demo { keep, family } => return ferrolb_lab::demo::demo(keep, family.family()),
        Command::Up { family } => {
            let total = 7;
            if let Err(e) = ferrolb_lab::demo::up(total, family.family()) {
                println!(
                    "\nThe lab did not come up: {e:#}\nLogs: {}/*.log; `ferrolb-lab down` cleans up.",
                    ferrolb_lab::demo::state_dir().display()
                );
                return Err(e);
            }
            println!("\nThe lab is up. `ferrolb-lab status`, then `ferrolb-lab down` when done.");
            return Ok(());
        }
        Command::Down => return ferrolb_lab::demo::down(),
        Command::Prepare => return ferrolb_lab::machine::prepare(),
        Command::Status => return ferrolb_lab::demo::status(),
        Command::ServeText { listen, text } => {
            return ferrolb_lab::helpers::serve_text(listen, &text);
        }
        Command::Forward {
            listen,
            listen_netns,
            netns,
            to,
        } => {
            return ferrolb_lab::helpers::forward(
                listen,
                listen_netns.as_deref(),
                to,
                netns.as_deref(),
            );
        }
        Command::Apiserver {
            listen,
            kubeconfig,
            token,
            service_accounts,
            real_write_rates,
        } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            // kubectl sends credentials only over TLS, so an authenticating server serves HTTPS.
            let certificate = ferrolb_lab::apiserver::tls::for_address(addr)?;
            let url = format!("https://{addr}");
            let server = ApiServer::new();
            if real_write_rates {
                server.cost_model().set(Some(
                    ferrolb_lab::apiserver::cost_model::WriteRates::RECORDED,
                ));
            }
            server.identities().enable(&token, UserInfo::admin());
            Kubeconfig::new(&url, &token)
                .with_ca(&certificate.ca_pem)
                .write(&kubeconfig)?;
            for entry in &service_accounts {
                let (account, file) = entry.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!(
                        "--service-account-kubeconfig {entry:?}: expected NAMESPACE/NAME=FILE"
                    )
                })?;
                let (namespace, name) = account.split_once('/').ok_or_else(|| {
                    anyhow::anyhow!(
                        "--service-account-kubeconfig {entry:?}: expected NAMESPACE/NAME=FILE"
                    )
                })?;
                let sa_token = server
                    .identities()
                    .issue_service_account_token(namespace, name);
                Kubeconfig::new(&url, &sa_token)
                    .with_ca(&certificate.ca_pem)
                    .write(std::path::Path::new(file))?;
            }
            println!("serving the Kubernetes API on http://{addr}");
            println!("export KUBECONFIG={}", kubeconfig.display());
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            server
                .serve_tls(listener, certificate.server_config.clone(), shutdown)
                .await?;
        }
    }
    Ok(())
}
