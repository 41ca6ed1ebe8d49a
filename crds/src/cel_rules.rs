//! The CEL (`x-kubernetes-validations`) rules of ferrolb's CRDs.
//!
//! kube-apiserver evaluates these on every write, so an invalid object is refused with a clear
//! message instead of reaching the controller. Only functions that kube-apiserver 1.31 provides
//! are used: the standard library, the strings extension (`split`, `trim`) and the Kubernetes
//! IP/CIDR library (`isIP`, `ip`, `family`, `isCIDR`, `cidr`, `containsIP`, `masked`).
//! IP addresses cannot be compared for order in that library, so the start-before-end check
//! looks for the first bit where the two ends differ, using prefix containment.
//!
//! Every rule must also fit kube-apiserver's cost budget (`crate::cel_cost`): a CRD with one
//! rule over budget is refused whole. `crds/tests/crd_cost_budget.rs` holds them to it.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// Longest accepted `addresses` entry: an IPv6 range of two full-length addresses with spaces.
pub const MAX_ADDRESS_ENTRY_LENGTH: u64 = 100;
/// Most entries in one pool. Bounds the cost kube-apiserver estimates for the per-entry rules.
pub const MAX_ADDRESS_ENTRIES: u64 = 1024;

pub const ADDRESS_SYNTAX_MESSAGE: &str = "must be a CIDR (192.0.2.0/24, 2001:db8::/120) or a \
range of two addresses (192.0.2.10-192.0.2.20)";
pub const ADDRESS_FAMILY_MESSAGE: &str = "both ends of a range must be of the same IP family";
pub const ADDRESS_ORDER_MESSAGE: &str = "the start of a range must not be after its end";

const START: &str = "self.split('-')[0].trim()";
const END: &str = "self.split('-')[1].trim()";

/// `spec.addresses[i]` is a CIDR or a range of two addresses.
pub fn address_syntax_rule() -> String {
    format!(
        "self.contains('-') ? (self.split('-').size() == 2 && isIP({START}) && isIP({END})) \
         : (self.contains('/') && isCIDR(self))"
    )
}

/// Holds when the entry is a syntactically valid range (the other rules report the rest).
fn is_well_formed_range() -> String {
    format!("self.contains('-') && self.split('-').size() == 2 && isIP({START}) && isIP({END})")
}

/// Both ends of a range are of the same family.
pub fn address_family_rule() -> String {
    format!(
        "!({}) || ip({START}).family() == ip({END}).family()",
        is_well_formed_range()
    )
}

/// The start of a range of `family` (4 or 6) is not after its end.
///
/// The two ends are equal, or at the first bit where they differ the start has a 0. That bit
/// is found by a binary search for the longest prefix the ends share (`cidr(s/l)` contains
/// `e`), one step per bit of the prefix length: 5 steps for IPv4, 7 for IPv6. CEL has no
/// variables, so each step binds its result with a one-element `all()`; prefix lengths are
/// picked from list literals rather than built with `string(int)`, whose result has no size
/// bound and would make kube-apiserver's cost estimate (and so the CRD) exceed its budget.
pub fn address_order_rule(family: u8) -> String {
    let bits: u32 = if family == 4 { 32 } else { 128 };
    let suffix = |length: u32| format!("'/{length}'");
    let mut width = bits / 2;
    // The innermost check: bit `p` of the start is 0, that is the /p network of the start lies
    // in the lower /(p+1) half.
    let all_lengths: Vec<String> = (0..=bits).map(suffix).collect();
    let all_lengths = format!("[{}]", all_lengths.join(", "));
    let mut steps: Vec<(String, String)> = Vec::new();
    let mut previous = String::from("0");
    let mut index = 0;
    while width >= 1 {
        let name = format!("p{index}");
        // `previous` is a multiple of 2*width, so the tested length is previous + width.
        let candidates: Vec<String> = (0..bits / (2 * width))
            .map(|j| suffix(j * 2 * width + width))
            .collect();
        let tested = if previous == "0" {
            candidates[0].clone()
        } else {
            format!("[{}][{previous} / {}]", candidates.join(", "), 2 * width)
        };
        let value = if previous == "0" {
            format!("cidr(s + {tested}).containsIP(e) ? {width} : 0")
        } else {
            format!("{previous} + (cidr(s + {tested}).containsIP(e) ? {width} : 0)")
        };
        steps.push((name.clone(), value));
        previous = name;
        index += 1;
        width /= 2;
    }
    let mut body = format!(
        "cidr(s + {all_lengths}[{previous} + 1]).containsIP(cidr(s + {all_lengths}[{previous}]).masked().ip())"
    );
    for (name, value) in steps.iter().rev() {
        body = format!("[{value}].all({name}, {body})");
    }
    format!(
        "!({well_formed} && ip({START}).family() == {family} && ip({END}).family() == {family}) || \
         [{START}].all(s, [{END}].all(e, cidr(s + {full}).containsIP(e) || {body}))",
        well_formed = is_well_formed_range(),
        full = suffix(bits),
    )
}

fn rule(rule: String, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// Schema of `IPAddressPool.spec.addresses`, with the per-entry rules on the items so that an
/// error names the entry (`spec.addresses[1]`).
pub fn pool_addresses_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_ADDRESS_ENTRIES,
        "items": {
            "type": "string",
            "maxLength": MAX_ADDRESS_ENTRY_LENGTH,
            "x-kubernetes-validations": [
                rule(address_syntax_rule(), ADDRESS_SYNTAX_MESSAGE),
                rule(address_family_rule(), ADDRESS_FAMILY_MESSAGE),
                rule(address_order_rule(4), ADDRESS_ORDER_MESSAGE),
                rule(address_order_rule(6), ADDRESS_ORDER_MESSAGE),
            ]
        }
    })
}
