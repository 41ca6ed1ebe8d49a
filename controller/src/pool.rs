//! A pool as the allocator sees it: parsed address ranges and the rules for which Services it
//! serves.

use std::collections::BTreeMap;

use ferrolb_crds::label_selector::{matches_any, validate};
use ferrolb_crds::pool_address::{AddressError, Overlap, parse_pool_address};
use ferrolb_crds::{AddressRange, IPAddressPool, IpFamily};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::service_request::ServiceRequest;

/// `serviceAllocation`: which Services a pool is reserved for, and its priority among them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllocationRule {
    /// Lower wins; `None` (or MetalLB's 0, which means unset) comes after every priority.
    pub priority: Option<i32>,
    pub namespaces: Vec<String>,
    pub namespace_selectors: Vec<LabelSelector>,
    pub service_selectors: Vec<LabelSelector>,
}

/// A pool: the ranges of its usable entries and the rules for which Services it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub ranges: Vec<AddressRange>,
    pub auto_assign: bool,
    pub avoid_buggy_ips: bool,
    pub allocation: Option<AllocationRule>,
    /// The pool's labels, for L2Advertisement pool selectors.
    pub labels: BTreeMap<String, String>,
    /// Entries that do not parse, each left out on its own: the others stay in use.
    pub rejected: Vec<RejectedEntry>,
    /// `serviceAllocation` selectors that cannot be evaluated, as `field: error`. While there
    /// is one the pool selects no Service (it still serves those that name it or its
    /// addresses), so that it cannot take Services from other pools or refuse them.
    pub invalid_selectors: Vec<String>,
}

/// An `addresses` entry the controller cannot use. The CRD's rules refuse such entries at
/// admission; one can still arrive through a CRD installed without them (or an older one).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedEntry {
    /// Its index in `spec.addresses`.
    pub index: usize,
    pub error: AddressError,
}

impl std::fmt::Display for RejectedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spec.addresses[{}]: {}", self.index, self.error)
    }
}

/// A pool's `Valid` condition, as the controller writes it into the pool's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCondition {
    pub valid: bool,
    /// InvalidAddresses, InvalidSelector, Overlapping or Valid.
    pub reason: &'static str,
    pub message: String,
}

impl Pool {
    /// The pool's `Valid` condition, given every overlap between all pools.
    pub fn condition(&self, overlaps: &[Overlap]) -> PoolCondition {
        if !self.rejected.is_empty() {
            let entries: Vec<String> = self.rejected.iter().map(ToString::to_string).collect();
            let rest = if self.ranges.is_empty() {
                "the pool has no usable address"
            } else {
                "the pool's other entries are in use"
            };
            let selectors: String = self
                .invalid_selectors
                .iter()
                .map(|s| format!("; {s}"))
                .collect();
            return PoolCondition {
                valid: false,
                reason: "InvalidAddresses",
                message: format!("{}{selectors}; {rest}", entries.join("; ")),
            };
        }
        if !self.invalid_selectors.is_empty() {
            return PoolCondition {
                valid: false,
                reason: "InvalidSelector",
                message: format!(
                    "{}; the pool selects no Service until it is fixed (Services that name it \
                     or ask for its addresses still get them)",
                    self.invalid_selectors.join("; ")
                ),
            };
        }
        let mine: Vec<String> = overlaps
            .iter()
            .filter(|o| o.first_pool == self.name || o.second_pool == self.name)
            .map(|o| {
                format!(
                    "{} overlaps {} on {}",
                    o.first_pool, o.second_pool, o.shared
                )
            })
            .collect();
        if mine.is_empty() {
            PoolCondition {
                valid: true,
                reason: "Valid",
                message: "addresses parse and overlap no other pool".into(),
            }
        } else {
            PoolCondition {
                valid: true,
                reason: "Overlapping",
                message: mine.join("; "),
            }
        }
    }

    /// The pool an IPAddressPool describes; entries that do not parse are set aside in
    /// `rejected`, so that one bad entry never takes the pool's other addresses away.
    pub fn from_resource(resource: &IPAddressPool) -> Pool {
        let mut ranges = Vec::new();
        let mut rejected = Vec::new();
        for (index, entry) in resource.spec.addresses.iter().enumerate() {
            match parse_pool_address(entry) {
                Ok(range) => ranges.push(range),
                Err(error) => rejected.push(RejectedEntry { index, error }),
            }
        }
        let allocation = resource
            .spec
            .service_allocation
            .as_ref()
            .map(|a| AllocationRule {
                priority: a.priority.filter(|p| *p != 0),
                namespaces: a.namespaces.clone().unwrap_or_default(),
                namespace_selectors: a.namespace_selectors.clone().unwrap_or_default(),
                service_selectors: a.service_selectors.clone().unwrap_or_default(),
            });
        let mut invalid_selectors = Vec::new();
        if let Some(rule) = &allocation {
            for (field, selectors) in [
                ("namespaceSelectors", &rule.namespace_selectors),
                ("serviceSelectors", &rule.service_selectors),
            ] {
                for (index, selector) in selectors.iter().enumerate() {
                    if let Err(e) = validate(selector) {
                        invalid_selectors
                            .push(format!("spec.serviceAllocation.{field}[{index}]: {e}"));
                    }
                }
            }
        }
        Pool {
            name: resource.metadata.name.clone().unwrap_or_default(),
            ranges,
            auto_assign: resource.spec.auto_assign(),
            avoid_buggy_ips: resource.spec.avoid_buggy_ips(),
            allocation,
            labels: resource.metadata.labels.clone().unwrap_or_default(),
            rejected,
            invalid_selectors,
        }
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    pub fn has_family(&self, family: IpFamily) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// Whether the pool's `serviceAllocation` selects the Service: every criterion it sets
    /// must hold (one of its namespaces, one of its namespace selectors, one of its Service
    /// selectors). A pool without `serviceAllocation` selects nobody here; it serves through
    /// autoAssign instead. A pool with an invalid selector selects nobody.
    pub fn reserved_for(&self, service: &ServiceRequest) -> bool {
        let Some(rule) = &self.allocation else {
            return false;
        };
        if !self.invalid_selectors.is_empty() {
            return false;
        }
        if !rule.namespaces.is_empty() && !rule.namespaces.contains(&service.key.namespace) {
            return false;
        }
        let selects = |selectors: &[LabelSelector], labels| {
            selectors.is_empty() || matches_any(selectors, labels).unwrap_or(false)
        };
        selects(&rule.namespace_selectors, &service.namespace_labels)
            && selects(&rule.service_selectors, &service.labels)
    }
}

/// MetalLB's "buggy" addresses: IPv4 addresses ending in .0 or .255.
pub fn is_buggy(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        std::net::IpAddr::V6(_) => false,
    }
}
