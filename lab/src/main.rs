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
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferrolb_ops::init_logging();
    match Cli::parse().command {
        Command::Apiserver {
            listen,
            kubeconfig,
            token,
            service_accounts,
        } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            // kubectl sends credentials only over TLS, so an authenticating server serves HTTPS.
            let certificate = ferrolb_lab::apiserver::tls::for_address(addr)?;
            let url = format!("https://{addr}");
            let server = ApiServer::new();
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
