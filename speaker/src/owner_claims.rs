//! Who the ServiceL2Status objects say owns each address, kept up to date object by object.
//!
//! `l2_status::current_owners` is the definition: per address, the claim of the newest object
//! wins, then the lower node name, among the claims that count. Reading it again from every
//! object on every pass cost a walk over 10,000 objects per change; here a watch event updates
//! the claims of the one object it names, and a property test holds the result to the
//! definition.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_crds::ServiceL2Status;
use kube::ResourceExt;

use crate::l2_status::{ADDRESSES_ANNOTATION, NODE_LABEL};

/// A claim's rank: the newer object first, then the lower node name (the greatest wins).
type Rank = (Option<String>, Reverse<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Claimed {
    rank: Rank,
    addresses: Vec<IpAddr>,
}

#[derive(Debug, Default)]
pub struct OwnerClaims {
    objects: HashMap<String, Claimed>,
    /// Per address, every claim on it with the object making it.
    by_address: BTreeMap<IpAddr, BTreeSet<(Rank, String)>>,
}

fn claimed(object: &ServiceL2Status) -> Option<Claimed> {
    let node = object.labels().get(NODE_LABEL)?;
    let addresses = object.annotations().get(ADDRESSES_ANNOTATION)?;
    let created = object
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string());
    Some(Claimed {
        rank: (created, Reverse(node.clone())),
        addresses: addresses
            .split(',')
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect(),
    })
}

impl OwnerClaims {
    /// The claims of exactly these objects.
    pub fn rebuild<'a>(&mut self, objects: impl IntoIterator<Item = &'a ServiceL2Status>) {
        *self = OwnerClaims::default();
        for object in objects {
            self.apply(&object.name_any(), Some(object));
        }
    }

    /// Replaces what the object `name` claims (`None`: it is gone); returns the addresses
    /// whose claims changed.
    pub fn apply(&mut self, name: &str, object: Option<&ServiceL2Status>) -> Vec<IpAddr> {
        let new = object.and_then(claimed);
        let old = match &new {
            Some(new) => self.objects.insert(name.to_string(), new.clone()),
            None => self.objects.remove(name),
        };
        if old == new {
            return Vec::new();
        }
        let mut touched = Vec::new();
        if let Some(old) = old {
            for ip in &old.addresses {
                if let Some(claims) = self.by_address.get_mut(ip) {
                    claims.remove(&(old.rank.clone(), name.to_string()));
                    if claims.is_empty() {
                        self.by_address.remove(ip);
                    }
                }
                touched.push(*ip);
            }
        }
        if let Some(new) = new {
            for ip in &new.addresses {
                self.by_address
                    .entry(*ip)
                    .or_default()
                    .insert((new.rank.clone(), name.to_string()));
                touched.push(*ip);
            }
        }
        touched
    }

    /// The owner of `ip`: the best claim whose node `counts`.
    pub fn owner(&self, ip: &IpAddr, counts: impl Fn(&str) -> bool) -> Option<&str> {
        self.by_address
            .get(ip)?
            .iter()
            .rev()
            .map(|((_, Reverse(node)), _)| node.as_str())
            .find(|node| counts(node))
    }

    /// Every address with a counting claim, and its owner (for tests and full passes).
    pub fn owners(&self, counts: impl Fn(&IpAddr, &str) -> bool) -> BTreeMap<IpAddr, String> {
        self.by_address
            .keys()
            .filter_map(|ip| Some((*ip, self.owner(ip, |n| counts(ip, n))?.to_string())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2_status::current_owners;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Arc;

    fn object(name: usize, node: usize, created: u8, addresses: &[u8]) -> ServiceL2Status {
        let list: Vec<String> = addresses.iter().map(|a| format!("192.0.2.{a}")).collect();
        serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
            "metadata": {"name": format!("o-{name}"), "namespace": "metallb-system",
                "creationTimestamp": format!("2026-12-04T10:00:0{created}Z"),
                "labels": {NODE_LABEL: format!("node-{node}")},
                "annotations": {ADDRESSES_ANNOTATION: list.join(",")}},
            "spec": {},
        }))
        .unwrap_or_else(|_| ServiceL2Status::new("broken", Default::default()))
    }

    proptest! {
        #[test]
        fn object_by_object_claims_agree_with_a_full_read(
            steps in proptest::collection::vec(
                (0..5usize, proptest::option::of((0..3usize, 0..3u8, proptest::collection::vec(0..4u8, 0..3)))),
                1..30),
            me in 0..3usize,
        ) {
            let mut claims = OwnerClaims::default();
            let mut objects: BTreeMap<String, Arc<ServiceL2Status>> = BTreeMap::new();
            let me = format!("node-{me}");
            let counts = |ip: &IpAddr, node: &str| node != me || ip.to_string().ends_with(".1");
            for (name, change) in steps {
                let name_text = format!("o-{name}");
                match change {
                    Some((node, created, addresses)) => {
                        let o = object(name, node, created, &addresses);
                        claims.apply(&name_text, Some(&o));
                        objects.insert(name_text, Arc::new(o));
                    }
                    None => {
                        claims.apply(&name_text, None);
                        objects.remove(&name_text);
                    }
                }
                let all: Vec<Arc<ServiceL2Status>> = objects.values().cloned().collect();
                prop_assert_eq!(claims.owners(counts), current_owners(&all, counts));
            }
        }
    }

    #[test]
    fn a_change_names_the_addresses_it_touched() {
        let mut claims = OwnerClaims::default();
        let touched = claims.apply("o-1", Some(&object(1, 0, 1, &[1, 2])));
        assert_eq!(touched.len(), 2);
        assert!(
            claims
                .apply("o-1", Some(&object(1, 0, 1, &[1, 2])))
                .is_empty()
        );
        let touched = claims.apply("o-1", Some(&object(1, 0, 1, &[2])));
        assert_eq!(
            touched.len(),
            3,
            "the old claims on .1 and .2, the new on .2"
        );
        assert_eq!(
            claims.owner(&"192.0.2.2".parse().unwrap_or(IpAddr::from([0; 4])), |_| {
                true
            }),
            Some("node-0")
        );
        claims.apply("o-1", None);
        assert!(claims.owners(|_, _| true).is_empty());
    }
}
