//! Parsing of `IPAddressPool.spec.addresses` entries.
//!
//! An entry is either a CIDR (`192.0.2.0/24`, `2001:db8::/64`) or an inclusive range
//! (`192.0.2.0-192.0.2.255`). Both normalise to an [`AddressRange`], so the allocator
//! and overlap detection only ever deal with inclusive ranges.
//!
//! The accepted syntax follows MetalLB: a CIDR may have host bits set (they are masked, as Go's
//! `net.ParseCIDR` does), the two ends of a range may be surrounded by spaces, and a bare address
//! without a prefix length is not an entry. Unlike MetalLB, a range whose ends are of different
//! families is refused instead of being compared byte-wise. The CEL rules in the generated CRD
//! make the same decisions, which a property test checks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Number of bits in an address of this family.
    pub fn bits(self) -> u32 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }

    /// The name Kubernetes uses in `spec.ipFamilies`.
    pub fn kubernetes_name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kubernetes_name())
    }
}

/// Why a pool address entry was refused. Messages name the entry so that they can be shown
/// to a user as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("invalid CIDR {entry:?}: {reason}")]
    InvalidCidr { entry: String, reason: String },
    #[error("invalid IP range {entry:?}: {reason}")]
    InvalidRange { entry: String, reason: String },
}

/// An inclusive range of addresses of one family. `start <= end` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressRange {
    family: IpFamily,
    start: u128,
    end: u128,
}

impl AddressRange {
    /// A range from `start` to `end` inclusive; `None` if the families differ or start > end.
    pub fn new(start: IpAddr, end: IpAddr) -> Option<Self> {
        let family = IpFamily::of(&start);
        if family != IpFamily::of(&end) {
            return None;
        }
        let (start, end) = (ip_to_u128(start), ip_to_u128(end));
        (start <= end).then_some(AddressRange { family, start, end })
    }

    /// The range covered by `network/prefix_len`; host bits of `network` are ignored.
    pub fn from_cidr(network: IpAddr, prefix_len: u8) -> Option<Self> {
        let family = IpFamily::of(&network);
        let bits = family.bits();
        if u32::from(prefix_len) > bits {
            return None;
        }
        let host_bits = bits - u32::from(prefix_len);
        let host_mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let value = ip_to_u128(network);
        Some(AddressRange {
            family,
            start: value & !host_mask,
            end: value | host_mask,
        })
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }

    pub fn start(&self) -> IpAddr {
        u128_to_ip(self.family, self.start)
    }

    pub fn end(&self) -> IpAddr {
        u128_to_ip(self.family, self.end)
    }

    /// The numeric value of the first address (IPv4 addresses occupy the low 32 bits).
    pub fn start_value(&self) -> u128 {
        self.start
    }

    /// The numeric value of the last address.
    pub fn end_value(&self) -> u128 {
        self.end
    }

    /// Number of addresses, saturating at `u128::MAX` for the whole IPv6 space.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// A range always holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        IpFamily::of(&ip) == self.family && (self.start..=self.end).contains(&ip_to_u128(ip))
    }

    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }

    /// The addresses both ranges hold, if any.
    pub fn intersection(&self, other: &AddressRange) -> Option<AddressRange> {
        self.overlaps(other).then(|| AddressRange {
            family: self.family,
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            address_text(self.start()),
            address_text(self.end())
        )
    }
}

/// An address as a pool entry writes it: IPv6 always in hexadecimal (RFC 5952), never in the
/// dotted `::ffff:a.b.c.d` form Rust's `Display` uses for IPv4-mapped addresses, which reads as
/// an IPv4 address to people and to MetalLB's parser. (Such an address can end a range only
/// through a CIDR: the parser refuses IPv4-mapped addresses written out, as Go's does.)
pub fn address_text(ip: IpAddr) -> String {
    let IpAddr::V6(v6) = ip else {
        return ip.to_string();
    };
    if v6.to_ipv4_mapped().is_none() {
        return v6.to_string();
    }
    let segments = v6.segments();
    // The longest run of two or more zero segments, the first of equals, becomes "::".
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, segment) in segments.iter().enumerate() {
        if *segment == 0 {
            run = if run.1 == 0 {
                (i, 1)
            } else {
                (run.0, run.1 + 1)
            };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let hex = |part: &[u16]| {
        part.iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best.1 < 2 {
        return hex(&segments);
    }
    format!(
        "{}::{}",
        hex(&segments[..best.0]),
        hex(&segments[best.0 + best.1..])
    )
}

impl FromStr for AddressRange {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_pool_address(s)
    }
}

/// The numeric value of an address; IPv4 addresses occupy the low 32 bits.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of a family with the given numeric value (truncated to the family's width).
pub fn u128_to_ip(family: IpFamily, value: u128) -> IpAddr {
    match family {
        // Truncation is intended: IPv4 values are kept in the low 32 bits.
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Parses an address as Kubernetes' CEL `ip()` does: no zone, no IPv4-mapped IPv6 form.
fn parse_ip(s: &str) -> Result<IpAddr, String> {
    if s.contains('%') {
        return Err(format!("{s:?} has a zone, which is not allowed"));
    }
    let ip = IpAddr::from_str(s).map_err(|_| format!("{s:?} is not an IP address"))?;
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(format!(
            "{s:?} is an IPv4-mapped IPv6 address; write the IPv4 address instead"
        ));
    }
    Ok(ip)
}

/// Parses one `spec.addresses` entry: a CIDR or an inclusive `start-end` range.
pub fn parse_pool_address(entry: &str) -> Result<AddressRange, AddressError> {
    match entry.split_once('-') {
        None => parse_cidr(entry),
        Some((start, end)) => parse_range(entry, start, end),
    }
}

fn parse_cidr(entry: &str) -> Result<AddressRange, AddressError> {
    let invalid = |reason: String| AddressError::InvalidCidr {
        entry: entry.to_string(),
        reason,
    };
    let Some((address, prefix)) = entry.split_once('/') else {
        return Err(invalid(
            "an entry is a CIDR such as 192.0.2.0/24 or a range such as \
             192.0.2.10-192.0.2.20; a single address is written as a /32 or /128"
                .to_string(),
        ));
    };
    let ip = parse_ip(address).map_err(invalid)?;
    // Only plain decimal digits, as Go's netip.ParsePrefix; u8::from_str would accept "+24".
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("{prefix:?} is not a prefix length")));
    }
    if prefix.len() > 1 && prefix.starts_with('0') {
        return Err(invalid(format!(
            "prefix length {prefix:?} has a leading zero"
        )));
    }
    let prefix_len: u8 = prefix
        .parse()
        .map_err(|_| invalid(format!("{prefix:?} is not a prefix length")))?;
    AddressRange::from_cidr(ip, prefix_len).ok_or_else(|| {
        invalid(format!(
            "prefix length {prefix_len} is longer than an {} address ({} bits)",
            IpFamily::of(&ip),
            IpFamily::of(&ip).bits()
        ))
    })
}

fn parse_range(entry: &str, start: &str, end: &str) -> Result<AddressRange, AddressError> {
    let invalid = |reason: String| AddressError::InvalidRange {
        entry: entry.to_string(),
        reason,
    };
    if end.contains('-') {
        return Err(invalid("a range has exactly one '-'".to_string()));
    }
    let start = parse_ip(start.trim()).map_err(|e| invalid(format!("start: {e}")))?;
    let end = parse_ip(end.trim()).map_err(|e| invalid(format!("end: {e}")))?;
    if IpFamily::of(&start) != IpFamily::of(&end) {
        return Err(invalid(format!(
            "start {start} is {} but end {end} is {}; both ends must be of the same family",
            IpFamily::of(&start),
            IpFamily::of(&end)
        )));
    }
    AddressRange::new(start, end)
        .ok_or_else(|| invalid(format!("start {start} is after end {end}")))
}

/// Parses every entry of a pool, collecting all errors rather than stopping at the first.
pub fn parse_pool_addresses<S: AsRef<str>>(
    entries: &[S],
) -> Result<Vec<AddressRange>, Vec<AddressError>> {
    let (ranges, errors): (Vec<_>, Vec<_>) = entries
        .iter()
        .map(|e| parse_pool_address(e.as_ref()))
        .partition(Result::is_ok);
    if errors.is_empty() {
        Ok(ranges.into_iter().flatten().collect())
    } else {
        Err(errors.into_iter().filter_map(Result::err).collect())
    }
}

/// Two pools (or one pool with itself) claiming the same addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Overlap {
    pub first_pool: String,
    pub second_pool: String,
    /// The addresses both claim.
    pub shared: AddressRange,
}

/// Finds every pair of ranges, across pools or within one pool, that share addresses.
///
/// Sweeps the ranges in address order, so the cost is O(n log n + overlaps) rather than
/// comparing every pair. Pool names in each result are in lexical order, results are sorted.
pub fn find_overlaps<'a, I>(pools: I) -> Vec<Overlap>
where
    I: IntoIterator<Item = (&'a str, &'a [AddressRange])>,
{
    let mut entries: Vec<(AddressRange, &str)> = pools
        .into_iter()
        .flat_map(|(name, ranges)| ranges.iter().map(move |r| (*r, name)))
        .collect();
    entries.sort();
    let mut overlaps = Vec::new();
    // Ranges still open at the current sweep position, for the current family.
    let mut open: Vec<(AddressRange, &str)> = Vec::new();
    for (range, pool) in entries {
        open.retain(|(o, _)| o.family == range.family && o.end >= range.start);
        for (other, other_pool) in &open {
            if let Some(shared) = other.intersection(&range) {
                let (first_pool, second_pool) = if *other_pool <= pool {
                    (other_pool.to_string(), pool.to_string())
                } else {
                    (pool.to_string(), other_pool.to_string())
                };
                overlaps.push(Overlap {
                    first_pool,
                    second_pool,
                    shared,
                });
            }
        }
        open.push((range, pool));
    }
    overlaps.sort();
    overlaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Found by `fuzz/` (pool_address): a CIDR reaching into the IPv4-mapped block was shown
    /// as `::-::ffff:255.255.255.255`, which reads as an IPv4 address.
    #[test]
    fn ranges_show_ipv4_mapped_ends_in_hexadecimal() {
        let r = parse_pool_address("::f28f/80").unwrap();
        assert_eq!(r.to_string(), "::-::ffff:ffff:ffff");
        assert_eq!(address_text(ip("::ffff:192.0.2.1")), "::ffff:c000:201");
        assert_eq!(address_text(ip("2001:db8::1")), "2001:db8::1");
        assert_eq!(address_text(ip("192.0.2.1")), "192.0.2.1");
        // Written out, an IPv4-mapped address is refused (as by Go's parser): such a range
        // only comes from a CIDR.
        assert!(parse_pool_address(&r.to_string()).is_err());
    }

    #[test]
    fn seed_range_parses_to_eleven_addresses() {
        let r = parse_pool_address("192.168.117.100-192.168.117.110").unwrap();
        assert_eq!(r.start(), ip("192.168.117.100"));
        assert_eq!(r.end(), ip("192.168.117.110"));
        assert_eq!(r.len(), 11);
        assert_eq!(r.family(), IpFamily::V4);
    }

    #[test]
    fn cidr_with_host_bits_is_masked_like_go() {
        let r = parse_pool_address("192.0.2.77/24").unwrap();
        assert_eq!(r.start(), ip("192.0.2.0"));
        assert_eq!(r.end(), ip("192.0.2.255"));
    }

    #[test]
    fn ipv6_cidr_and_range() {
        let r = parse_pool_address("2001:db8::/120").unwrap();
        assert_eq!(r.len(), 256);
        assert_eq!(r.family(), IpFamily::V6);
        let r = parse_pool_address("2001:db8::10 - 2001:db8::1f").unwrap();
        assert_eq!(r.len(), 16);
        assert_eq!(r.start(), ip("2001:db8::10"));
    }

    #[test]
    fn whole_spaces() {
        assert_eq!(parse_pool_address("0.0.0.0/0").unwrap().len(), 1 << 32);
        assert_eq!(parse_pool_address("::/0").unwrap().len(), u128::MAX);
        assert_eq!(parse_pool_address("192.0.2.1/32").unwrap().len(), 1);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            ("192.0.2.10-192.0.2.1", "is after end"),
            ("192.0.2.1-2001:db8::1", "same family"),
            ("192.0.2.0/33", "longer than"),
            ("192.0.2.0/", "not a prefix length"),
            ("192.0.2.0/+8", "not a prefix length"),
            ("192.0.2.0/08", "leading zero"),
            ("192.0.2.1", "single address"),
            ("192.0.2.300/24", "not an IP address"),
            ("1-2-3", "exactly one"),
            ("::ffff:192.0.2.1/128", "IPv4-mapped"),
            ("fe80::1%eth0/64", "zone"),
            ("", "single address"),
        ];
        for (entry, expected) in cases {
            let err = parse_pool_address(entry).unwrap_err().to_string();
            assert!(err.contains(expected), "{entry:?}: {err}");
        }
    }

    #[test]
    fn parse_pool_addresses_reports_every_bad_entry() {
        let errors = parse_pool_addresses(&["192.0.2.0/24", "bad", "also-bad"]).unwrap_err();
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn overlaps_across_and_within_pools() {
        let a = parse_pool_addresses(&["192.0.2.0/25", "2001:db8::/64"]).unwrap();
        let b = parse_pool_addresses(&["192.0.2.100-192.0.2.200"]).unwrap();
        let c = parse_pool_addresses(&["198.51.100.0/24", "198.51.100.5/32"]).unwrap();
        let found = find_overlaps([
            ("b", b.as_slice()),
            ("a", a.as_slice()),
            ("c", c.as_slice()),
        ]);
        assert_eq!(
            found,
            vec![
                Overlap {
                    first_pool: "a".into(),
                    second_pool: "b".into(),
                    shared: parse_pool_address("192.0.2.100-192.0.2.127").unwrap(),
                },
                Overlap {
                    first_pool: "c".into(),
                    second_pool: "c".into(),
                    shared: parse_pool_address("198.51.100.5/32").unwrap(),
                },
            ]
        );
    }

    #[test]
    fn same_values_in_different_families_do_not_overlap() {
        let v4 = parse_pool_addresses(&["0.0.0.0/0"]).unwrap();
        let v6 = parse_pool_addresses(&["::/96"]).unwrap();
        assert!(find_overlaps([("v4", v4.as_slice()), ("v6", v6.as_slice())]).is_empty());
    }

    fn arb_range() -> impl Strategy<Value = AddressRange> {
        prop_oneof![
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| {
                AddressRange::new(
                    IpAddr::V4(Ipv4Addr::from(a.min(b))),
                    IpAddr::V4(Ipv4Addr::from(a.max(b))),
                )
                .unwrap()
            }),
            (any::<u128>(), any::<u128>()).prop_map(|(a, b)| {
                AddressRange::new(
                    IpAddr::V6(Ipv6Addr::from(a.min(b))),
                    IpAddr::V6(Ipv6Addr::from(a.max(b))),
                )
                .unwrap()
            }),
        ]
        .prop_filter("IPv4-mapped ends are not entries", |r| {
            ![r.start(), r.end()].iter().any(|ip| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
                IpAddr::V4(_) => false,
            })
        })
    }

    /// Small ranges in a narrow window, so that overlaps actually happen.
    fn arb_small_ranges() -> impl Strategy<Value = Vec<(u8, AddressRange)>> {
        prop::collection::vec(
            (0u8..4, 0u32..64, 0u32..16).prop_map(|(pool, start, len)| {
                let s = 0xC000_0200 + start; // 192.0.2.x
                (
                    pool,
                    AddressRange::new(
                        IpAddr::V4(Ipv4Addr::from(s)),
                        IpAddr::V4(Ipv4Addr::from(s + len)),
                    )
                    .unwrap(),
                )
            }),
            0..12,
        )
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(r in arb_range()) {
            prop_assert_eq!(parse_pool_address(&r.to_string()).unwrap(), r);
        }

        #[test]
        fn cidr_covers_exactly_its_block(raw in any::<u32>(), prefix in 0u8..=32) {
            let r = parse_pool_address(&format!("{}/{}", Ipv4Addr::from(raw), prefix)).unwrap();
            prop_assert_eq!(r.len(), 1u128 << (32 - u32::from(prefix)));
            prop_assert!(r.contains(IpAddr::V4(Ipv4Addr::from(raw))));
            prop_assert_eq!(r.start_value() % r.len(), 0);
        }

        #[test]
        fn reversed_ranges_are_refused(a in any::<u32>(), b in any::<u32>()) {
            prop_assume!(a != b);
            let (lo, hi) = (Ipv4Addr::from(a.min(b)), Ipv4Addr::from(a.max(b)));
            let ordered = format!("{lo}-{hi}");
            let reversed = format!("{hi}-{lo}");
            prop_assert!(parse_pool_address(&ordered).is_ok());
            prop_assert!(parse_pool_address(&reversed).is_err());
        }

        #[test]
        fn parser_never_panics(s in ".{0,60}") {
            let _ = parse_pool_address(&s);
        }

        #[test]
        fn overlap_sweep_matches_pairwise_comparison(ranges in arb_small_ranges()) {
            let names = ["p0", "p1", "p2", "p3"];
            let by_pool: Vec<Vec<AddressRange>> = (0..4u8)
                .map(|p| ranges.iter().filter(|(q, _)| *q == p).map(|(_, r)| *r).collect())
                .collect();
            let found = find_overlaps(
                names.iter().zip(&by_pool).map(|(n, rs)| (*n, rs.as_slice())),
            );
            let mut expected = Vec::new();
            let flat: Vec<(&str, AddressRange)> = names
                .iter()
                .zip(&by_pool)
                .flat_map(|(n, rs)| rs.iter().map(move |r| (*n, *r)))
                .collect();
            for i in 0..flat.len() {
                for j in (i + 1)..flat.len() {
                    if let Some(shared) = flat[i].1.intersection(&flat[j].1) {
                        let (a, b) = if flat[i].0 <= flat[j].0 {
                            (flat[i].0, flat[j].0)
                        } else {
                            (flat[j].0, flat[i].0)
                        };
                        expected.push(Overlap {
                            first_pool: a.into(),
                            second_pool: b.into(),
                            shared,
                        });
                    }
                }
            }
            expected.sort();
            prop_assert_eq!(found, expected);
        }
    }
}
