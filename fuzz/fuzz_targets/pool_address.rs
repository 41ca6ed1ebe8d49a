//! Any text as an IPAddressPool `addresses` entry: parsed or refused with an error, never a
//! panic; a parsed range is well formed and reads back the same from its own text (unless an
//! end is IPv4-mapped: fuzz/artifacts found `::f28f/80`, now a unit test in crds).
#![no_main]

use ferrolb_crds::pool_address::parse_pool_address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(range) = parse_pool_address(entry) else {
        return;
    };
    assert!(range.start_value() <= range.end_value(), "{entry:?}");
    assert_eq!(range.start().is_ipv4(), range.end().is_ipv4(), "{entry:?}");
    // Written out, an IPv4-mapped IPv6 address is refused (as Go's parser does): a range
    // ending in that block comes only from a CIDR and does not read back from its text.
    let mapped = |ip: std::net::IpAddr| matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    if mapped(range.start()) || mapped(range.end()) {
        return;
    }
    let again = parse_pool_address(&range.to_string());
    assert_eq!(again.ok(), Some(range), "{entry:?}");
});
