//! Serving over TLS, as kube-apiserver does: kubectl sends a kubeconfig's credentials only to
//! TLS servers, so an emulator that authenticates must speak HTTPS. A CA and a serving
//! certificate are generated at start; kubeconfigs carry the CA.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and the serving certificate it signed.
pub struct ServingCertificate {
    /// The CA certificate in PEM, for kubeconfigs.
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// A certificate for a server listening on `addr`: valid for that address, 127.0.0.1 (where a
/// forwarder may expose it) and `localhost`.
pub fn for_address(addr: std::net::SocketAddr) -> anyhow::Result<ServingCertificate> {
    let mut addresses = vec![addr.ip(), IpAddr::from([127, 0, 0, 1])];
    addresses.dedup();
    generate(&addresses)
}

/// A certificate for `localhost` and `addresses`, signed by a new CA.
pub fn generate(addresses: &[IpAddr]) -> anyhow::Result<ServingCertificate> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferrolb-lab-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "kubernetes".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    for address in addresses {
        params.subject_alt_names.push(SanType::IpAddress(*address));
    }
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &ca)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    Ok(ServingCertificate {
        ca_pem: ca.pem(),
        server_config: Arc::new(server_config),
    })
}
