//! What every long-running ferrolb component shares: its logging setup, the HTTP server
//! of `/healthz`, `/readyz` and Prometheus `/metrics` (with the metrics MetalLB's users query,
//! under MetalLB's names: `metallb_metrics`), and lean watches for its caches.

pub mod configuration_state;
pub mod metallb_metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

/// Structured logs on stderr, filtered by `RUST_LOG` (default `info`); no colours when
/// `NO_COLOR` is set (log collectors, tests).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_requested() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A watch (with kube's default backoff) whose objects come without what no ferrolb component
/// reads: managedFields and kubectl's last-applied copy, which are most of a cached object,
/// and whatever `trim` removes.
pub fn lean_watch<K>(
    api: kube::Api<K>,
    trim: fn(&mut K),
) -> impl futures::Stream<Item = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>>
+ Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
        .default_backoff()
        .modify(move |object| {
            let meta = object.meta_mut();
            meta.managed_fields = None;
            if let Some(annotations) = meta.annotations.as_mut() {
                annotations.remove(LAST_APPLIED);
            }
            trim(object);
        })
}

/// What the health server asks a component.
pub trait Probe: Send + Sync + 'static {
    /// Whether it does its job yet (caches filled, state restored...).
    fn is_ready(&self) -> bool;
    /// Its metrics in the Prometheus/OpenMetrics text format.
    fn metrics_text(&self) -> String;
}

/// Parses `:PORT` (every address) or `ADDR:PORT`.
pub fn parse_listen(addr: &str) -> anyhow::Result<SocketAddr> {
    let full = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    Ok(full.parse()?)
}

/// Serves `/healthz`, `/readyz` and `/metrics` until the process ends; logs the address
/// it listens on ("serving health and metrics addr=...").
pub async fn serve<P: Probe>(addr: SocketAddr, probe: Arc<P>) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(|State(probe): State<Arc<P>>| async move {
                if probe.is_ready() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready yet")
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(|State(probe): State<Arc<P>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    probe.metrics_text(),
                )
                    .into_response()
            }),
        )
        .with_state(probe);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving health and metrics");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen(":7472").unwrap(),
            "0.0.0.0:7472".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert!(parse_listen("nonsense").is_err());
    }
}
