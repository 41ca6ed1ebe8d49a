//! When several Services may hold one address (MetalLB's `allow-shared-ip`): all carry the same
//! sharing key, no two expose the same protocol and port (TCP/53 and UDP/53 may share), and their
//! externalTrafficPolicy is the same, with identical selectors when it is Local (the address
//! must lead to the same nodes for all of them).

use std::collections::BTreeMap;

use crate::service_request::{Port, ServiceKey, ServiceRequest};

/// What sharing needs to know about a Service on an address.
#[derive(Debug, Clone, PartialEq)]
pub struct Sharer {
    pub service: ServiceKey,
    pub sharing_key: Option<String>,
    pub ports: Vec<Port>,
    /// The selector of a Service with externalTrafficPolicy Local; `None` for Cluster.
    pub local_selector: Option<BTreeMap<String, String>>,
}

impl Sharer {
    pub fn of(request: &ServiceRequest) -> Self {
        Sharer {
            service: request.key.clone(),
            sharing_key: request.sharing_key.clone(),
            ports: request.ports.clone(),
            local_selector: request.local_traffic.then(|| request.selector.clone()),
        }
    }
}

/// Why a Service cannot share an address with the Services already on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingConflict {
    #[error("it is held by {holder}, and the two do not share the allow-shared-ip key")]
    NotShared { holder: ServiceKey },
    #[error("it is held by {holder}, which also exposes {protocol}/{port}")]
    PortInUse {
        holder: ServiceKey,
        protocol: String,
        port: i32,
    },
    #[error("it is held by {holder}, whose externalTrafficPolicy differs")]
    TrafficPolicy { holder: ServiceKey },
    #[error("it is held by {holder}, which has externalTrafficPolicy Local with another selector")]
    Selector { holder: ServiceKey },
}

/// Whether `newcomer` may join `holders` (which never include the newcomer itself).
pub fn can_share(newcomer: &Sharer, holders: &[Sharer]) -> Result<(), SharingConflict> {
    for holder in holders.iter().filter(|h| h.service != newcomer.service) {
        let holder_key = holder.service.clone();
        match (&newcomer.sharing_key, &holder.sharing_key) {
            (Some(a), Some(b)) if a == b => {}
            _ => return Err(SharingConflict::NotShared { holder: holder_key }),
        }
        if let Some(port) = newcomer.ports.iter().find(|p| holder.ports.contains(p)) {
            return Err(SharingConflict::PortInUse {
                holder: holder_key,
                protocol: port.protocol.clone(),
                port: port.port,
            });
        }
        match (&newcomer.local_selector, &holder.local_selector) {
            (None, None) => {}
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => return Err(SharingConflict::Selector { holder: holder_key }),
            _ => return Err(SharingConflict::TrafficPolicy { holder: holder_key }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharer(name: &str, key: Option<&str>, ports: &[(&str, i32)], local: Option<&str>) -> Sharer {
        Sharer {
            service: ServiceKey {
                namespace: "default".into(),
                name: name.into(),
            },
            sharing_key: key.map(Into::into),
            ports: ports
                .iter()
                .map(|(p, n)| Port {
                    protocol: (*p).into(),
                    port: *n,
                })
                .collect(),
            local_selector: local.map(|app| [("app".to_string(), app.to_string())].into()),
        }
    }

    #[test]
    fn dns_over_tcp_and_udp_share() {
        let udp = sharer("dns-udp", Some("k"), &[("UDP", 53)], None);
        let tcp = sharer("dns-tcp", Some("k"), &[("TCP", 53)], None);
        assert_eq!(can_share(&tcp, &[udp]), Ok(()));
    }

    #[test]
    fn every_rule_refuses() {
        let holder = sharer("a", Some("k"), &[("TCP", 80)], None);
        assert!(matches!(
            can_share(
                &sharer("b", None, &[("TCP", 81)], None),
                std::slice::from_ref(&holder)
            ),
            Err(SharingConflict::NotShared { .. })
        ));
        assert!(matches!(
            can_share(
                &sharer("b", Some("other"), &[("TCP", 81)], None),
                std::slice::from_ref(&holder)
            ),
            Err(SharingConflict::NotShared { .. })
        ));
        assert!(matches!(
            can_share(
                &sharer("b", Some("k"), &[("TCP", 80)], None),
                std::slice::from_ref(&holder)
            ),
            Err(SharingConflict::PortInUse { port: 80, .. })
        ));
        assert!(matches!(
            can_share(
                &sharer("b", Some("k"), &[("TCP", 81)], Some("x")),
                &[holder]
            ),
            Err(SharingConflict::TrafficPolicy { .. })
        ));
        let local = sharer("a", Some("k"), &[("TCP", 80)], Some("x"));
        assert!(matches!(
            can_share(
                &sharer("b", Some("k"), &[("TCP", 81)], Some("y")),
                std::slice::from_ref(&local)
            ),
            Err(SharingConflict::Selector { .. })
        ));
        assert_eq!(
            can_share(&sharer("b", Some("k"), &[("TCP", 81)], Some("x")), &[local]),
            Ok(())
        );
    }
}
