//! The allocator: which Service holds which addresses of which pool.
//!
//! Rules (MetalLB 0.16, except where marked better):
//! - requested addresses (`loadBalancerIPs`, `spec.loadBalancerIP`) come from the pool that
//!   contains them, which must be the named pool if one is named; autoAssign does not matter;
//! - otherwise the named pool, or else the autoAssign pools reserved for the Service by
//!   `serviceAllocation` (lower priority first, unset last, then by name), then the autoAssign
//!   pools without `serviceAllocation` by name; within a pool the lowest free address, skipping
//!   .0/.255 with avoidBuggyIPs; both families of a dual-stack Service from one pool;
//! - a sharing key first looks for an address already shared under that key;
//! - better than MetalLB: an address a Service holds never changes implicitly. It is kept when
//!   its pool shrinks or disappears (reported as orphaned) and rebuilt from Services' status on
//!   restart ([`Allocator::restore`]); only an explicit change of the Service's requested
//!   addresses, pool, families, or of what makes it share (key, ports, traffic policy) moves it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_crds::IpFamily;
use ferrolb_crds::pool_address::{ip_to_u128, u128_to_ip};

use crate::ip_set::IpSet;
use crate::pool::{Pool, is_buggy};
use crate::service_request::{FamilyPolicy, ServiceKey, ServiceRequest};
use crate::sharing::{Sharer, SharingConflict, can_share};

/// The addresses a Service holds and the pool they came from (`None`: no pool holds them any
/// more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub ips: Vec<IpAddr>,
    pub pool: Option<String>,
    /// When no pool holds the addresses any more: the pool they came from (it shrank or was
    /// deleted). They stay the Service's, and that pool reports them as orphaned.
    pub former_pool: Option<String>,
}

impl Assignment {
    fn from_pool(ips: Vec<IpAddr>, pool: Option<String>) -> Self {
        Self {
            ips,
            pool,
            former_pool: None,
        }
    }

    /// The pool the addresses belong to, or came from.
    pub fn origin_pool(&self) -> Option<&str> {
        self.pool.as_deref().or(self.former_pool.as_deref())
    }
}

/// Why a Service gets no address, or not the one it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error(
        "no IPAddressPool serves this Service (autoAssign pools, or pools whose serviceAllocation selects it)"
    )]
    NoPool,
    #[error("the requested pool {0:?} does not exist or is invalid")]
    PoolNotFound(String),
    #[error("no free address of the {families} family in pools {pools:?}")]
    Exhausted {
        pools: Vec<String>,
        families: String,
    },
    #[error("{ip} is not in the requested pool {pool:?}")]
    NotInRequestedPool { ip: IpAddr, pool: String },
    #[error("{0} is not in any IPAddressPool")]
    NotInAnyPool(IpAddr),
    #[error("{ip} ends in .0 or .255, which pool {pool:?} avoids (avoidBuggyIPs)")]
    Avoided { ip: IpAddr, pool: String },
    #[error("{ip} cannot be shared: {conflict}")]
    Sharing {
        ip: IpAddr,
        conflict: SharingConflict,
    },
    #[error("{ip} is in use by {holder}, a Service this controller does not handle")]
    HeldByForeignService { ip: IpAddr, holder: ServiceKey },
}

impl AllocationError {
    /// A short name for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocationError::NoPool => "NoPool",
            AllocationError::PoolNotFound(_) => "PoolNotFound",
            AllocationError::Exhausted { .. } => "PoolExhausted",
            AllocationError::NotInRequestedPool { .. } => "NotInRequestedPool",
            AllocationError::NotInAnyPool(_) => "NotInAnyPool",
            AllocationError::Avoided { .. } => "AvoidedAddress",
            AllocationError::Sharing { .. } => "SharingConflict",
            AllocationError::HeldByForeignService { .. } => "AddressInUse",
        }
    }
}

/// Counts a pool reports in its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub assigned_ipv4: i64,
    pub assigned_ipv6: i64,
    pub available_ipv4: i64,
    pub available_ipv6: i64,
}

struct PoolState {
    pool: Pool,
    free_v4: IpSet,
    free_v6: IpSet,
}

impl PoolState {
    fn free(&self, family: IpFamily) -> &IpSet {
        match family {
            IpFamily::V4 => &self.free_v4,
            IpFamily::V6 => &self.free_v6,
        }
    }

    fn free_mut(&mut self, family: IpFamily) -> &mut IpSet {
        match family {
            IpFamily::V4 => &mut self.free_v4,
            IpFamily::V6 => &mut self.free_v6,
        }
    }

    /// The lowest free address of a family this pool may hand out.
    fn lowest_free(&self, family: IpFamily) -> Option<IpAddr> {
        let set = self.free(family);
        let mut from = 0u128;
        loop {
            let value = set.first_from(from)?;
            let ip = u128_to_ip(family, value);
            if !(self.pool.avoid_buggy_ips && is_buggy(ip)) {
                return Some(ip);
            }
            from = value.checked_add(1)?;
        }
    }
}

/// Every pool, address and Service the controller knows about.
#[derive(Default)]
pub struct Allocator {
    pools: BTreeMap<String, PoolState>,
    holders: HashMap<IpAddr, Vec<Sharer>>,
    services: HashMap<ServiceKey, Assignment>,
    /// Addresses in the status of LoadBalancer Services this controller does not handle
    /// (another class): never handed out, so two Services never get one address by accident.
    foreign: HashMap<IpAddr, BTreeSet<ServiceKey>>,
    foreign_by_service: HashMap<ServiceKey, Vec<IpAddr>>,
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set of valid pools. Held addresses stay held, whatever the pools now say.
    pub fn set_pools(&mut self, pools: Vec<Pool>) {
        self.pools = pools
            .into_iter()
            .map(|pool| {
                let mut state = PoolState {
                    free_v4: IpSet::new(),
                    free_v6: IpSet::new(),
                    pool,
                };
                for range in state.pool.ranges.clone() {
                    state
                        .free_mut(range.family())
                        .insert_range(range.start_value(), range.end_value());
                }
                (state.pool.name.clone(), state)
            })
            .collect();
        let held: Vec<IpAddr> = self
            .holders
            .keys()
            .chain(self.foreign.keys())
            .copied()
            .collect();
        for ip in held {
            self.take_from_pools(ip);
        }
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for key in keys {
            let Some(held) = self.services.get(&key) else {
                continue;
            };
            let origin = held.origin_pool().map(str::to_string);
            let pool = self.home_pool(&held.ips, origin.as_deref());
            if let Some(assignment) = self.services.get_mut(&key) {
                assignment.former_pool = if pool.is_none() { origin } else { None };
                assignment.pool = pool;
            }
        }
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name).map(|s| &s.pool)
    }

    /// Every Service holding addresses.
    pub fn services(&self) -> Vec<ServiceKey> {
        self.services.keys().cloned().collect()
    }

    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        self.services.get(key)
    }

    /// The Services holding an address.
    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.holders
            .get(&ip)
            .map(|h| h.iter().map(|s| s.service.clone()).collect())
            .unwrap_or_default()
    }

    /// The pool that contains all of `ips`, preferring `recorded` (pools can overlap).
    fn home_pool(&self, ips: &[IpAddr], recorded: Option<&str>) -> Option<String> {
        let contains_all = |state: &PoolState| ips.iter().all(|ip| state.pool.contains(*ip));
        if let Some(name) = recorded
            && self.pools.get(name).is_some_and(contains_all)
        {
            return Some(name.to_string());
        }
        self.pools
            .values()
            .find(|s| contains_all(s))
            .map(|s| s.pool.name.clone())
    }

    fn take_from_pools(&mut self, ip: IpAddr) {
        let family = IpFamily::of(&ip);
        for state in self.pools.values_mut() {
            state.free_mut(family).remove(ip_to_u128(ip));
        }
    }

    fn give_back_to_pools(&mut self, ip: IpAddr) {
        let family = IpFamily::of(&ip);
        for state in self.pools.values_mut() {
            if state.pool.contains(ip) {
                state.free_mut(family).insert(ip_to_u128(ip));
            }
        }
    }

    fn hold(&mut self, ip: IpAddr, sharer: Sharer) {
        let holders = self.holders.entry(ip).or_default();
        let first = holders.is_empty();
        holders.retain(|h| h.service != sharer.service);
        holders.push(sharer);
        if first {
            self.take_from_pools(ip);
        }
    }

    fn unhold(&mut self, ip: IpAddr, service: &ServiceKey) {
        let Some(holders) = self.holders.get_mut(&ip) else {
            return;
        };
        holders.retain(|h| h.service != *service);
        if holders.is_empty() {
            self.holders.remove(&ip);
            if !self.foreign.contains_key(&ip) {
                self.give_back_to_pools(ip);
            }
        }
    }

    /// Records the addresses a Service this controller does not handle shows in its status,
    /// replacing what was recorded for it before; an empty list forgets it.
    /// Returns whether anything changed.
    pub fn set_foreign(&mut self, key: &ServiceKey, ips: &[IpAddr]) -> bool {
        let before = self.foreign_by_service.remove(key).unwrap_or_default();
        if before == ips {
            if !ips.is_empty() {
                self.foreign_by_service.insert(key.clone(), before);
            }
            return false;
        }
        for ip in before {
            if let Some(keys) = self.foreign.get_mut(&ip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.foreign.remove(&ip);
                    if !self.holders.contains_key(&ip) {
                        self.give_back_to_pools(ip);
                    }
                }
            }
        }
        for ip in ips {
            self.foreign.entry(*ip).or_default().insert(key.clone());
            self.take_from_pools(*ip);
        }
        if !ips.is_empty() {
            self.foreign_by_service.insert(key.clone(), ips.to_vec());
        }
        true
    }

    fn foreign_holder(&self, ip: IpAddr) -> Result<(), AllocationError> {
        match self.foreign.get(&ip).and_then(|keys| keys.first()) {
            Some(holder) => Err(AllocationError::HeldByForeignService {
                ip,
                holder: holder.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Frees what a Service holds (deleted, no longer a LoadBalancer, another class...).
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assignment> {
        let assignment = self.services.remove(key)?;
        for ip in &assignment.ips {
            self.unhold(*ip, key);
        }
        Some(assignment)
    }

    /// Records addresses a Service already holds (from its status), before anything new is
    /// allocated. They are kept even outside every pool.
    pub fn restore(
        &mut self,
        request: &ServiceRequest,
        ips: &[IpAddr],
        recorded_pool: Option<&str>,
    ) -> Result<Assignment, AllocationError> {
        let sharer = Sharer::of(request);
        for ip in ips {
            let others = self.holders.get(ip).cloned().unwrap_or_default();
            can_share(&sharer, &others)
                .map_err(|conflict| AllocationError::Sharing { ip: *ip, conflict })?;
        }
        for ip in ips {
            self.hold(*ip, sharer.clone());
        }
        let pool = self.home_pool(ips, recorded_pool);
        let assignment = Assignment {
            ips: ips.to_vec(),
            former_pool: if pool.is_none() {
                recorded_pool.map(str::to_string)
            } else {
                None
            },
            pool,
        };
        self.services
            .insert(request.key.clone(), assignment.clone());
        Ok(assignment)
    }

    /// The addresses the Service should hold, allocating what it lacks. What it already holds
    /// is kept unless the request explicitly asks for something else.
    pub fn allocate(&mut self, request: &ServiceRequest) -> Result<Assignment, AllocationError> {
        if let Some(existing) = self.services.get(&request.key).cloned() {
            if self.still_wanted(request, &existing) {
                match self.keep(request, existing) {
                    // The Service's own change (sharing key, ports, traffic policy) made it
                    // incompatible with the others on its address: it, not they, moves.
                    Err(AllocationError::Sharing { .. }) => {}
                    kept => return kept,
                }
            }
            self.release(&request.key);
        }
        if request.requested_ips.is_empty() {
            self.allocate_from_pools(request)
        } else {
            self.allocate_requested(request)
        }
    }

    /// Whether what a Service holds still answers its request, possibly after dropping a
    /// family it no longer wants or adding one.
    fn still_wanted(&self, request: &ServiceRequest, existing: &Assignment) -> bool {
        if !request.requested_ips.is_empty() {
            let mut wanted = request.requested_ips.clone();
            let mut held = existing.ips.clone();
            wanted.sort();
            held.sort();
            return wanted == held;
        }
        if let Some(pool) = &request.pool
            && existing.origin_pool() != Some(pool.as_str())
        {
            return false;
        }
        // The primary family must be held; others may be added or dropped around it.
        existing
            .ips
            .iter()
            .any(|ip| IpFamily::of(ip) == request.families[0])
    }

    /// Keeps a Service's addresses, adjusting families and sharing details.
    fn keep(
        &mut self,
        request: &ServiceRequest,
        mut existing: Assignment,
    ) -> Result<Assignment, AllocationError> {
        let sharer = Sharer::of(request);
        for ip in &existing.ips {
            let others = self.holders.get(ip).cloned().unwrap_or_default();
            can_share(&sharer, &others)
                .map_err(|conflict| AllocationError::Sharing { ip: *ip, conflict })?;
        }
        let wanted: Vec<IpFamily> = request.families.clone();
        // Families no longer wanted are let go: an explicit change of ipFamilies/policy.
        let dropped: Vec<IpAddr> = existing
            .ips
            .iter()
            .copied()
            .filter(|ip| !wanted.contains(&IpFamily::of(ip)))
            .collect();
        for ip in &dropped {
            self.unhold(*ip, &request.key);
        }
        existing.ips.retain(|ip| !dropped.contains(ip));
        for ip in &existing.ips {
            self.hold(*ip, sharer.clone());
        }
        // A family newly wanted comes from the same pool, if it can.
        let missing: Vec<IpFamily> = wanted
            .iter()
            .copied()
            .filter(|f| !existing.ips.iter().any(|ip| IpFamily::of(ip) == *f))
            .collect();
        if !missing.is_empty()
            && let Some(pool) = existing.pool.clone()
        {
            for family in missing {
                match self.pick(&pool, family, &sharer) {
                    Some(ip) => {
                        self.hold(ip, sharer.clone());
                        existing.ips.push(ip);
                    }
                    None if request.policy == FamilyPolicy::RequireDualStack => {
                        self.services.insert(request.key.clone(), existing.clone());
                        return Err(AllocationError::Exhausted {
                            pools: vec![pool],
                            families: family.to_string(),
                        });
                    }
                    None => {}
                }
            }
        }
        existing
            .ips
            .sort_by_key(|ip| wanted.iter().position(|f| *f == IpFamily::of(ip)));
        self.services.insert(request.key.clone(), existing.clone());
        Ok(existing)
    }

    fn allocate_requested(
        &mut self,
        request: &ServiceRequest,
    ) -> Result<Assignment, AllocationError> {
        let sharer = Sharer::of(request);
        let mut pool_name = None;
        for ip in &request.requested_ips {
            let pool = match &request.pool {
                Some(name) => {
                    let state = self
                        .pools
                        .get(name)
                        .ok_or_else(|| AllocationError::PoolNotFound(name.clone()))?;
                    if !state.pool.contains(*ip) {
                        return Err(AllocationError::NotInRequestedPool {
                            ip: *ip,
                            pool: name.clone(),
                        });
                    }
                    state
                }
                None => self
                    .pools
                    .values()
                    .find(|s| s.pool.contains(*ip))
                    .ok_or(AllocationError::NotInAnyPool(*ip))?,
            };
            if pool.pool.avoid_buggy_ips && is_buggy(*ip) {
                return Err(AllocationError::Avoided {
                    ip: *ip,
                    pool: pool.pool.name.clone(),
                });
            }
            pool_name.get_or_insert_with(|| pool.pool.name.clone());
            self.foreign_holder(*ip)?;
            let others = self.holders.get(ip).cloned().unwrap_or_default();
            can_share(&sharer, &others)
                .map_err(|conflict| AllocationError::Sharing { ip: *ip, conflict })?;
        }
        for ip in &request.requested_ips {
            self.hold(*ip, sharer.clone());
        }
        let assignment = Assignment::from_pool(request.requested_ips.clone(), pool_name);
        self.services
            .insert(request.key.clone(), assignment.clone());
        Ok(assignment)
    }

    /// The pools to try for a Service without requested addresses, in order.
    fn candidate_pools(&self, request: &ServiceRequest) -> Result<Vec<String>, AllocationError> {
        if let Some(name) = &request.pool {
            return if self.pools.contains_key(name) {
                Ok(vec![name.clone()])
            } else {
                Err(AllocationError::PoolNotFound(name.clone()))
            };
        }
        let mut reserved = Vec::new();
        for state in self.pools.values().filter(|s| s.pool.auto_assign) {
            if state.pool.reserved_for(request) {
                let priority = state.pool.allocation.as_ref().and_then(|a| a.priority);
                reserved.push((
                    priority.is_none(),
                    priority.unwrap_or(0),
                    state.pool.name.clone(),
                ));
            }
        }
        reserved.sort();
        let mut candidates: Vec<String> = reserved.into_iter().map(|(_, _, name)| name).collect();
        candidates.extend(
            self.pools
                .values()
                .filter(|s| s.pool.auto_assign && s.pool.allocation.is_none())
                .map(|s| s.pool.name.clone()),
        );
        if candidates.is_empty() {
            return Err(AllocationError::NoPool);
        }
        Ok(candidates)
    }

    /// An address of `family` from `pool` for `sharer`: one already shared under its key if
    /// possible, else the lowest free one.
    fn pick(&self, pool: &str, family: IpFamily, sharer: &Sharer) -> Option<IpAddr> {
        let state = self.pools.get(pool)?;
        if sharer.sharing_key.is_some() {
            let mut shared: Vec<IpAddr> = self
                .holders
                .iter()
                .filter(|(ip, holders)| {
                    IpFamily::of(ip) == family
                        && state.pool.contains(**ip)
                        && !self.foreign.contains_key(*ip)
                        && can_share(sharer, holders).is_ok()
                })
                .map(|(ip, _)| *ip)
                .collect();
            shared.sort();
            if let Some(ip) = shared.first() {
                return Some(*ip);
            }
        }
        state.lowest_free(family)
    }

    fn allocate_from_pools(
        &mut self,
        request: &ServiceRequest,
    ) -> Result<Assignment, AllocationError> {
        let candidates = self.candidate_pools(request)?;
        let sharer = Sharer::of(request);
        let all: Vec<IpFamily> = request.families.clone();
        let primary = vec![all[0]];
        let attempts: Vec<&Vec<IpFamily>> = match request.policy {
            FamilyPolicy::SingleStack => vec![&primary],
            FamilyPolicy::RequireDualStack => vec![&all],
            // Both families from one pool if any pool can, else the primary one.
            FamilyPolicy::PreferDualStack => vec![&all, &primary],
        };
        for families in attempts {
            for pool in &candidates {
                let picked: Option<Vec<IpAddr>> = families
                    .iter()
                    .map(|f| self.pick(pool, *f, &sharer))
                    .collect();
                if let Some(ips) = picked {
                    for ip in &ips {
                        self.hold(*ip, sharer.clone());
                    }
                    let assignment = Assignment::from_pool(ips, Some(pool.clone()));
                    self.services
                        .insert(request.key.clone(), assignment.clone());
                    return Ok(assignment);
                }
            }
        }
        let wanted = match request.policy {
            FamilyPolicy::SingleStack => primary,
            _ => all,
        };
        Err(AllocationError::Exhausted {
            pools: candidates,
            families: wanted
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("+"),
        })
    }

    /// How many intervals hold a pool's free addresses, both families: the allocator's memory
    /// per pool grows with this (with the Services, never with the pool's size).
    pub fn free_interval_count(&self, pool: &str) -> usize {
        self.pools.get(pool).map_or(0, |s| {
            s.free_v4.interval_count() + s.free_v6.interval_count()
        })
    }

    /// The counts a pool reports: addresses held by Services that got them from it, and
    /// addresses still free to hand out.
    pub fn stats(&self, pool: &str) -> PoolStats {
        let mut stats = PoolStats::default();
        let Some(state) = self.pools.get(pool) else {
            return stats;
        };
        let mut counted = std::collections::HashSet::new();
        for assignment in self
            .services
            .values()
            .filter(|a| a.pool.as_deref() == Some(pool))
        {
            for ip in &assignment.ips {
                if counted.insert(*ip) {
                    match IpFamily::of(ip) {
                        IpFamily::V4 => stats.assigned_ipv4 += 1,
                        IpFamily::V6 => stats.assigned_ipv6 += 1,
                    }
                }
            }
        }
        (stats.available_ipv4, stats.available_ipv6) = Self::available(state);
        stats
    }

    /// Free addresses a pool may hand out, IPv4 and IPv6.
    fn available(state: &PoolState) -> (i64, i64) {
        let clamp = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        let mut free_v4 = state.free_v4.len();
        if state.pool.avoid_buggy_ips {
            free_v4 -= state.free_v4.count_with_residue(256, 0)
                + state.free_v4.count_with_residue(256, 255);
        }
        (clamp(free_v4), clamp(state.free_v6.len()))
    }

    /// [`Self::stats`] of every pool, counting assignments in one pass.
    pub fn all_stats(&self) -> HashMap<String, PoolStats> {
        let mut all: HashMap<String, PoolStats> = self
            .pools
            .keys()
            .map(|name| (name.clone(), PoolStats::default()))
            .collect();
        let mut counted = std::collections::HashSet::new();
        for assignment in self.services.values() {
            let Some(stats) = assignment.pool.as_ref().and_then(|p| all.get_mut(p)) else {
                continue;
            };
            for ip in &assignment.ips {
                if counted.insert(*ip) {
                    match IpFamily::of(ip) {
                        IpFamily::V4 => stats.assigned_ipv4 += 1,
                        IpFamily::V6 => stats.assigned_ipv6 += 1,
                    }
                }
            }
        }
        for (name, stats) in &mut all {
            if let Some(state) = self.pools.get(name) {
                (stats.available_ipv4, stats.available_ipv6) = Self::available(state);
            }
        }
        all
    }

    /// Addresses held by Services outside the pool they came from, by that pool.
    pub fn orphaned_by_pool(&self) -> BTreeMap<String, Vec<(IpAddr, ServiceKey)>> {
        let mut orphans: BTreeMap<String, Vec<(IpAddr, ServiceKey)>> = BTreeMap::new();
        for (key, assignment) in &self.services {
            if let Some(pool) = &assignment.former_pool {
                let entry = orphans.entry(pool.clone()).or_default();
                entry.extend(assignment.ips.iter().map(|ip| (*ip, key.clone())));
            }
        }
        for entry in orphans.values_mut() {
            entry.sort();
        }
        orphans
    }

    /// Addresses held by Services but in no pool (the pool shrank or was deleted).
    pub fn orphaned(&self) -> Vec<(IpAddr, Vec<ServiceKey>)> {
        let mut orphans: Vec<(IpAddr, Vec<ServiceKey>)> = self
            .holders
            .iter()
            .filter(|(ip, _)| !self.pools.values().any(|s| s.pool.contains(**ip)))
            .map(|(ip, h)| (*ip, h.iter().map(|s| s.service.clone()).collect()))
            .collect();
        orphans.sort();
        orphans
    }
}
