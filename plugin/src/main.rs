//! kubectl-ferrolb: run as `kubectl ferrolb ...` once it is on PATH.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kubectl_ferrolb::cluster_view::ClusterView;
use kubectl_ferrolb::explain::explain_service;
use kubectl_ferrolb::migrate::migrate;
use kubectl_ferrolb::status_report::status_report;
use kubectl_ferrolb::validate::{Severity, documents, validate};

/// Explains ferrolb's decisions, reports its health, validates manifests and migrates
/// MetalLB's legacy configuration.
#[derive(Parser, Debug)]
#[command(name = "kubectl ferrolb", version, about)]
struct Args {
    /// The kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace of the pools, advertisements and speakers' objects.
    #[arg(long, global = true, default_value = ferrolb_crds::DEFAULT_NAMESPACE)]
    metallb_namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Explains a Service: its addresses and pools or why it has none, who answers for each
    /// address, the candidates in election order, why other nodes are not candidates, and
    /// the next owner.
    Explain {
        /// Only `service` (or `svc`) can be explained.
        #[arg(value_parser = ["service", "services", "svc"])]
        kind: String,
        /// NAMESPACE/NAME, or NAME with --namespace.
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Pools, speakers, configuration verdicts, conflicts and waiting Services; exits 1 when
    /// something needs attention.
    Status {
        /// How old an AddressConflict Event may be to count, in minutes.
        #[arg(long, default_value_t = 10)]
        conflict_window_minutes: u64,
    },
    /// Checks pools, advertisements and Services offline; exits 1 on any error.
    Validate {
        /// Files to check (YAML, several documents each; "-" reads stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Prints MetalLB's legacy ConfigMap configuration as IPAddressPool and L2Advertisement
    /// manifests; warnings go to stderr.
    Migrate {
        /// The ConfigMap manifest (or its config key's content); "-" reads stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn read(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{file}: {e}"))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Command::Explain {
            name, namespace, ..
        } => {
            let (namespace, name) = match name.split_once('/') {
                Some((ns, n)) => (ns.to_string(), n.to_string()),
                None => (namespace.clone(), name.clone()),
            };
            let client = client(&args).await?;
            let view = ClusterView::read(&client, &args.metallb_namespace).await?;
            let Some(service) = view.find_service(&namespace, &name) else {
                anyhow::bail!(
                    "no Service {namespace}/{name} of type LoadBalancer (kubectl get service -n {namespace} {name})"
                );
            };
            let slices = ClusterView::slices_of(&client, &namespace, &name).await?;
            print!("{}", explain_service(&view, service, &slices));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            conflict_window_minutes,
        } => {
            let client = client(&args).await?;
            let view = ClusterView::read(&client, &args.metallb_namespace).await?;
            let report = status_report(
                &view,
                Duration::from_secs(conflict_window_minutes.saturating_mul(60)),
            );
            print!("{report}");
            Ok(if report.needs_attention() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Validate { files } => {
            let mut all = Vec::new();
            for file in files {
                all.extend(documents(file, &read(file)?).map_err(anyhow::Error::msg)?);
            }
            let findings = validate(&all);
            for finding in &findings {
                println!("{finding}");
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            if errors > 0 {
                eprintln!("{errors} error(s)");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { file } => {
            let migration = migrate(&read(file)?).map_err(anyhow::Error::msg)?;
            for warning in &migration.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", migration.to_yaml().map_err(anyhow::Error::msg)?);
            Ok(if migration.objects.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
