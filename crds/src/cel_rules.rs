//! The CEL (`x-kubernetes-validations`) rules of ferrolb's CRDs.
//!
//! kube-apiserver evaluates these on every write, so an invalid object is refused with a clear
//! message instead of reaching the controller. Only functions that kube-apiserver 1.31 provides
//! are used: the standard library, the strings extension (`split`, `trim`) and the Kubernetes
//! IP/CIDR library (`isIP`, `ip`, `family`, `isCIDR`, `cidr`, `containsIP`, `masked`).
//! IP addresses cannot be compared for order in that library, so the start-before-end check
//! looks for the first bit where the two ends differ, using prefix containment.

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

/// The start of a range is not after its end.
///
/// For every prefix length `l` where the two ends share their first `l` bits but not `l + 1`,
/// the start must be in the lower half of the `/l` block, that is have bit `l` clear. When the
/// ends are equal no such `l` exists and the rule holds.
pub fn address_order_rule() -> String {
    let prefix_lengths: Vec<String> = (0..128).map(|l| l.to_string()).collect();
    format!(
        "!({well_formed}) || ip({START}).family() != ip({END}).family() || \
         [{lengths}].all(l, l >= (ip({START}).family() == 4 ? 32 : 128) \
         || !cidr({START} + '/' + string(l)).containsIP({END}) \
         || cidr({START} + '/' + string(l + 1)).containsIP({END}) \
         || cidr(string(cidr({START} + '/' + string(l)).masked().ip()) + '/' + string(l + 1)).containsIP({START}))",
        well_formed = is_well_formed_range(),
        lengths = prefix_lengths.join(", ")
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
                rule(address_order_rule(), ADDRESS_ORDER_MESSAGE),
            ]
        }
    })
}
