//! `ferrolb-lab`: run ferrolb's emulated Kubernetes API server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferrolb_lab::apiserver::ApiServer;
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
    },
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
    match Cli::parse().command {
        Command::Apiserver {
            listen,
            kubeconfig,
            token,
        } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            Kubeconfig::new(&format!("http://{addr}"), &token).write(&kubeconfig)?;
            println!("serving the Kubernetes API on http://{addr}");
            println!("export KUBECONFIG={}", kubeconfig.display());
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            ApiServer::new().serve(listener, shutdown).await?;
        }
    }
    Ok(())
}
