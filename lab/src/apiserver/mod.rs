//! An emulated kube-apiserver: the Kubernetes REST API over HTTP, objects in memory.
//!
//! It exists so that ferrolb's components, kube-rs and the stock kubectl can be tested without a
//! cluster. Where it differs from kube-apiserver in a way a client could notice, that is a bug
//! (the golden-exchange tests replay recordings of the real one).

pub mod auth;
pub mod builtin_fields;
pub mod conversion;
pub mod cost_model;
pub mod custom_resources;
pub mod discovery;
pub mod faults;
pub mod field_sets;
pub mod handler;
pub mod kubeconfig;
mod lifecycle;
pub mod managed_fields;
pub mod openapi;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod service;
pub mod status;
pub mod store;
pub mod strategic_merge;
pub mod tables;
pub mod tls;
pub mod watch;
pub mod zero_values;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use faults::Faults;
use resources::Registry;
use store::{Store, Write};

/// The namespaces every cluster starts with.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-node-lease", "kube-public", "kube-system"];

/// The strings of a JSON array (none if it is not one).
pub(crate) fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The emulated API server's state; cheap to clone, every clone is the same server.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registry: RwLock<Registry>,
    faults: Faults,
    cost_model: cost_model::CostModel,
    services: service::ServiceAllocations,
    identities: auth::Identities,
    controllers_started: std::sync::atomic::AtomicBool,
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiServer {
    /// A server holding the initial namespaces, like a new cluster.
    pub fn new() -> Self {
        let server = ApiServer {
            inner: Arc::new(Inner {
                store: Store::new(),
                registry: RwLock::new(Registry::new()),
                faults: Faults::default(),
                cost_model: cost_model::CostModel::default(),
                services: service::ServiceAllocations::default(),
                identities: auth::Identities::default(),
                controllers_started: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        for name in INITIAL_NAMESPACES {
            server.seed_namespace(name);
        }
        server.seed_kubernetes_service();
        server
    }

    fn seed_kubernetes_service(&self) {
        let Some(services) = self.registry().find("", "v1", "services") else {
            return;
        };
        let mut object = handler::new_object_metadata(service::kubernetes_service(), &services);
        // kube-apiserver owns what it sets on its own Service (clusterIPs and ipFamilies are
        // allocated, so nobody's).
        let mut owned = object.clone();
        if let Some(spec) = owned["spec"].as_object_mut() {
            spec.remove("clusterIPs");
            spec.remove("ipFamilies");
        }
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default();
        managed_fields::record_update(
            &field_sets::Shapes::Builtin("Service"),
            &managed_fields::Writer {
                manager: "kube-apiserver",
                api_version: "v1".into(),
                scope: field_sets::Scope::Main,
                has_status: true,
                now: &now,
            },
            None,
            &mut owned,
        );
        object["metadata"]["managedFields"] = owned["metadata"]["managedFields"].clone();
        self.service_allocations().reserve(&object);
        let _ = self
            .store()
            .modify::<()>(&services.storage_key(), "default", "kubernetes", |_| {
                Ok(Write::Put(object))
            });
    }

    pub(crate) fn service_allocations(&self) -> &service::ServiceAllocations {
        &self.inner.services
    }

    fn seed_namespace(&self, name: &str) {
        let Some(namespaces) = self.registry().find("", "v1", "namespaces") else {
            return;
        };
        let object = handler::new_object_metadata(
            json!({
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            }),
            &namespaces,
        );
        let _ = self
            .store()
            .modify::<()>(&namespaces.storage_key(), "", name, |_| {
                Ok(Write::Put(object))
            });
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bearer tokens the server knows. Once one is added, every request is authenticated and
    /// authorized by RBAC.
    pub fn identities(&self) -> &auth::Identities {
        &self.inner.identities
    }

    /// Fault injection for tests: dropping watches, failing or pausing requests.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The model of a real API server's write throughput (off unless set).
    pub fn cost_model(&self) -> &cost_model::CostModel {
        &self.inner.cost_model
    }

    /// Starts the namespace controller and garbage collector, once; they stop with the server.
    fn start_controllers(&self) {
        use std::sync::atomic::Ordering;
        if !self.inner.controllers_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(lifecycle::run(Arc::downgrade(&self.inner)));
        }
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.start_controllers();
        let app = axum::Router::new()
            .fallback(handler::handle)
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves HTTPS on `listener` with a certificate's `tls` configuration until `shutdown`
    /// resolves.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.start_controllers();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let app = axum::Router::new()
            .fallback(handler::handle)
            .with_state(self);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = listener.accept() => accepted?,
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }

    /// Starts serving on `addr` (port 0 picks a free one) in the background.
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<RunningApiServer> {
        let listener = TcpListener::bind(addr).await?;
        self.spawn(listener, None)
    }

    /// Starts serving HTTPS on `addr` in the background, with a new CA that the kubeconfigs it
    /// hands out trust. Needed for kubectl to send credentials.
    pub async fn start_tls(self, addr: SocketAddr) -> anyhow::Result<RunningApiServer> {
        let listener = TcpListener::bind(addr).await?;
        let certificate = tls::for_address(listener.local_addr()?)?;
        Ok(self.spawn(listener, Some(certificate))?)
    }

    /// Serves `listener` in the background, over TLS with `certificate` if given.
    fn spawn(
        self,
        listener: TcpListener,
        certificate: Option<tls::ServingCertificate>,
    ) -> std::io::Result<RunningApiServer> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = self.clone();
        let tls = certificate.as_ref().map(|c| c.server_config.clone());
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let served = match tls {
                Some(tls) => server.serve_tls(listener, tls, shutdown).await,
                None => server.serve(listener, shutdown).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "emulated API server stopped");
            }
        });
        Ok(RunningApiServer {
            addr,
            server: self,
            stop: Some(stop),
            task,
            ca_pem: certificate.map(|c| c.ca_pem),
        })
    }
}

/// A server running in the background; stops when dropped.
pub struct RunningApiServer {
    pub addr: SocketAddr,
    server: ApiServer,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// The CA of an HTTPS server.
    ca_pem: Option<String>,
}

impl RunningApiServer {
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn server(&self) -> &ApiServer {
        &self.server
    }

    /// A kubeconfig for this server, authenticated as `token`'s identity.
    pub fn kubeconfig(&self, token: &str) -> kubeconfig::Kubeconfig {
        let config = kubeconfig::Kubeconfig::new(&self.url(), token);
        match &self.ca_pem {
            Some(ca) => config.with_ca(ca),
            None => config,
        }
    }

    /// A kubeconfig with a new token for a service account, as a Pod running under it has.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> kubeconfig::Kubeconfig {
        let token = self
            .server
            .identities()
            .issue_service_account_token(namespace, name);
        self.kubeconfig(&token)
    }
}

impl Drop for RunningApiServer {
    fn drop(&mut self) {
        // Open watches keep graceful shutdown waiting; end them too.
        self.server.faults().drop_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
