//! The IPAM objects: pools, blocks, block affinities, handles and the IPAM configuration.
//!
//! Field names follow Calico's v3 API (`blockSize`, `ipipMode`, `disableBGPExport`,
//! `strictAffinity`, …) so that Calico users recognise them; the objects serialize to the
//! same JSON in every store (a file, etcd values, Kubernetes CRD specs).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
pub use crate::selector::Selector;

/// Smallest and largest IPv4 block prefix lengths (Calico's range: 4096 down to 1 address).
pub const IPV4_BLOCK_SIZES: std::ops::RangeInclusive<u8> = 20..=32;
/// Smallest and largest IPv6 block prefix lengths (4096 down to 1 address).
pub const IPV6_BLOCK_SIZES: std::ops::RangeInclusive<u8> = 116..=128;
/// Default IPv4 block prefix length: 64 addresses.
pub const DEFAULT_IPV4_BLOCK_SIZE: u8 = 26;
/// Default IPv6 block prefix length: 64 addresses.
pub const DEFAULT_IPV6_BLOCK_SIZE: u8 = 122;

/// Checks that `s` is a DNS subdomain (RFC 1123, as Kubernetes object names): labels of
/// lowercase letters, digits and `-`, each starting and ending with a letter or digit,
/// joined by `.`, at most 253 characters. Node names, pool names and handle ids must be,
/// so that every store can use them in keys and object names unchanged.
pub(crate) fn check_dns_subdomain(what: &'static str, s: &str) -> Result<(), ModelError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            label.chars().all(ok_char)
                && label.chars().next().is_some_and(alnum)
                && label.chars().last().is_some_and(alnum)
        });
    if valid {
        Ok(())
    } else {
        Err(ModelError::InvalidName {
            what,
            value: s.to_owned(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` (a DNS subdomain: lowercase letters, digits, `-`, `.`).
            pub fn new(s: impl Into<String>) -> Result<Self, $crate::error::ModelError> {
                let s = s.into();
                $crate::model::check_dns_subdomain($what, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::ModelError;
            fn from_str(s: &str) -> Result<Self, $crate::error::ModelError> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use name_type;

name_type!(
    /// A Kubernetes node name.
    NodeName,
    "node name"
);
name_type!(
    /// The owner of a set of addresses: the CNI plugin uses `k8s-pod-network.<container id>`,
    /// operators pick their own.
    HandleId,
    "handle id"
);
name_type!(
    /// An IP pool's name (`metadata.name` in Kubernetes).
    PoolName,
    "pool name"
);

/// The two address families; a request can ask for both at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_addr(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// When traffic to pods in a pool is encapsulated (Calico's `ipipMode` / `vxlanMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
pub enum EncapMode {
    /// Always encapsulate between nodes.
    Always,
    /// Encapsulate only to nodes in another subnet.
    CrossSubnet,
    /// Route natively.
    #[default]
    Never,
}

/// The prefix of the handles of Services' LoadBalancer addresses:
/// `serval-lb.<namespace>.<name>.<uid>`. Their allocator releases them itself, as a node does
/// its tunnel addresses.
pub const LOAD_BALANCER_HANDLE_PREFIX: &str = "serval-lb.";

/// What addresses of a pool may be used for (Calico's `allowedUses`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
pub enum AllowedUse {
    /// Pod addresses.
    Workload,
    /// Tunnel endpoint addresses of nodes.
    Tunnel,
    /// Service load-balancer addresses.
    LoadBalancer,
}

/// Whether a pool is chosen without being asked for (Calico's `assignmentMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
pub enum AssignmentMode {
    /// Used by default selection and when asked for by name.
    #[default]
    Automatic,
    /// Used only when asked for by name (CNI configuration, pod or namespace annotation,
    /// `serval ipam assign --pool`), never by default selection.
    Manual,
}

impl AssignmentMode {
    pub fn is_automatic(&self) -> bool {
        *self == AssignmentMode::Automatic
    }
}

#[allow(clippy::borrowed_box)] // serde's skip_serializing_if is given the field
fn every_namespace(s: &Box<Selector>) -> bool {
    s.is_all()
}

fn default_allowed_uses() -> Vec<AllowedUse> {
    vec![AllowedUse::Workload, AllowedUse::Tunnel]
}

/// An IP pool: a CIDR cut into blocks of `block_size` that nodes claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPool {
    pub name: PoolName,
    pub cidr: IpNet,
    /// Prefix length of the pool's blocks.
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    /// A disabled pool hands out no new addresses; existing ones stay.
    #[serde(default)]
    pub disabled: bool,
    /// Keep the pool's blocks out of BGP advertisements.
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    /// Which nodes may claim blocks from this pool.
    #[serde(default)]
    pub node_selector: Selector,
    #[serde(default = "default_allowed_uses")]
    pub allowed_uses: Vec<AllowedUse>,
    /// Which pods may take addresses from this pool, by their namespace's labels (boxed:
    /// rarely set, and a pool travels inside every store object).
    #[serde(default, skip_serializing_if = "every_namespace")]
    pub namespace_selector: Box<Selector>,
    /// `Manual`: only for requests that name the pool.
    #[serde(default, skip_serializing_if = "AssignmentMode::is_automatic")]
    pub assignment_mode: AssignmentMode,
}

impl IpPool {
    /// A pool with Calico's defaults: block size 26 (IPv4) or 122 (IPv6), no encapsulation,
    /// all nodes, workloads and tunnels.
    pub fn new(name: PoolName, cidr: IpNet) -> Self {
        let block_size = match cidr {
            IpNet::V4(_) => DEFAULT_IPV4_BLOCK_SIZE,
            IpNet::V6(_) => DEFAULT_IPV6_BLOCK_SIZE,
        };
        IpPool {
            name,
            cidr,
            block_size,
            ipip_mode: EncapMode::Never,
            vxlan_mode: EncapMode::Never,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: Selector::all(),
            allowed_uses: default_allowed_uses(),
            namespace_selector: Box::default(),
            assignment_mode: AssignmentMode::Automatic,
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Checks the pool on its own: canonical CIDR, block size in range and not larger than
    /// the pool, not both encapsulations.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.cidr.trunc() != self.cidr {
            return Err(ModelError::NonCanonicalCidr {
                cidr: self.cidr,
                canonical: self.cidr.trunc(),
            });
        }
        let range = match self.cidr {
            IpNet::V4(_) => IPV4_BLOCK_SIZES,
            IpNet::V6(_) => IPV6_BLOCK_SIZES,
        };
        if !range.contains(&self.block_size) {
            return Err(ModelError::BlockSizeOutOfRange {
                block_size: self.block_size,
                family: self.family(),
                min: *range.start(),
                max: *range.end(),
            });
        }
        if self.cidr.prefix_len() > self.block_size {
            return Err(ModelError::PoolSmallerThanBlock {
                cidr: self.cidr,
                block_size: self.block_size,
            });
        }
        if self.ipip_mode != EncapMode::Never && self.vxlan_mode != EncapMode::Never {
            return Err(ModelError::BothEncapsulations { cidr: self.cidr });
        }
        if self.allowed_uses.contains(&AllowedUse::LoadBalancer)
            && self
                .allowed_uses
                .iter()
                .any(|u| *u != AllowedUse::LoadBalancer)
        {
            return Err(ModelError::LoadBalancerCombined { cidr: self.cidr });
        }
        Ok(())
    }

    /// The block of this pool that holds `ip` (which must be inside the pool).
    pub fn block_for(&self, ip: IpAddr) -> IpNet {
        // block_size was validated against the family's maximum prefix length.
        IpNet::new(ip, self.block_size)
            .map(|n| n.trunc())
            .unwrap_or(self.cidr)
    }

    /// Number of blocks in the pool.
    pub fn block_count(&self) -> u128 {
        let bits = u32::from(self.block_size - self.cidr.prefix_len());
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The `i`-th block of the pool (`i < block_count()`).
    pub fn nth_block(&self, i: u128) -> IpNet {
        let host_bits = u32::from(self.cidr.max_prefix_len() - self.block_size);
        match self.cidr {
            IpNet::V4(n) => {
                let base = u32::from(n.network()) as u128;
                let addr = base + (i << host_bits);
                IpNet::new(IpAddr::V4(Ipv4Addr::from(addr as u32)), self.block_size)
                    .unwrap_or(self.cidr)
            }
            IpNet::V6(n) => {
                let base = u128::from(n.network());
                let addr = base.wrapping_add(i.checked_shl(host_bits).unwrap_or(0));
                IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), self.block_size).unwrap_or(self.cidr)
            }
        }
    }

    /// Whether a node with `labels` may take addresses from this pool for `use_`.
    /// LoadBalancer addresses belong to Services, not nodes: the node selector does not
    /// apply to them.
    pub fn usable_by(&self, labels: &BTreeMap<String, String>, use_: AllowedUse) -> bool {
        !self.disabled
            && self.allowed_uses.contains(&use_)
            && (use_ == AllowedUse::LoadBalancer || self.node_selector.matches(labels))
    }
}

/// Where a block affinity is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "kubernetes", derive(schemars::JsonSchema))]
pub enum AffinityState {
    /// The node is claiming the block; the block may not exist yet.
    Pending,
    /// The block exists with this node as its affinity.
    Confirmed,
    /// The node is releasing the (empty) block.
    PendingDeletion,
}

/// Node → block affinity: an index of the `affinity` field of blocks, by node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockAffinity {
    pub node: NodeName,
    pub cidr: IpNet,
    pub state: AffinityState,
}

/// Who an address was given to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocationAttribute {
    pub handle_id: HandleId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The node the address was allocated for (differs from the block's affinity when the
    /// address was borrowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
    /// When the address was given, in seconds since the Unix epoch, by the clock of the
    /// host that gave it; `None` for allocations made before serval recorded it. A
    /// consistency repair never takes an address given after its list of live handles
    /// was made (see [`crate::check::LiveHandles`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_at: Option<u64>,
}

impl AllocationAttribute {
    pub fn for_handle(handle_id: HandleId) -> Self {
        AllocationAttribute {
            handle_id,
            namespace: None,
            pod: None,
            node: None,
            allocated_at: None,
        }
    }
}

/// A block of addresses with an optional node affinity and per-address allocations.
///
/// As in Calico: `allocations[i]` is the index into `attributes` of the owner of the `i`-th
/// address, or null when free; `unallocated` is the free list, taken from the front and
/// returned to the back so that a released address is reused as late as possible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Block {
    pub cidr: IpNet,
    #[serde(default)]
    pub affinity: Option<NodeName>,
    pub allocations: Vec<Option<u32>>,
    pub unallocated: Vec<u32>,
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    /// Set before the block is deleted so that no one allocates from it meanwhile.
    #[serde(default)]
    pub deleted: bool,
}

impl Block {
    /// An empty block.
    pub fn new(cidr: IpNet, affinity: Option<NodeName>) -> Self {
        let size = block_len(&cidr);
        Block {
            cidr,
            affinity,
            allocations: vec![None; size as usize],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            deleted: false,
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Number of addresses in the block.
    pub fn len(&self) -> u32 {
        self.allocations.len() as u32
    }

    /// Whether no address is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    pub fn in_use(&self) -> u32 {
        self.allocations.iter().filter(|a| a.is_some()).count() as u32
    }

    pub fn free(&self) -> u32 {
        self.unallocated.len() as u32
    }

    /// The address at offset `ordinal` in the block.
    pub fn ip_at(&self, ordinal: u32) -> IpAddr {
        match self.cidr {
            IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + ordinal)),
            IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + ordinal as u128)),
        }
    }

    /// The offset of `ip` in the block, if it is inside.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        let off = match (self.cidr, ip) {
            (IpNet::V4(n), IpAddr::V4(a)) => (u32::from(a) - u32::from(n.network())) as u128,
            (IpNet::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n.network()),
            _ => return None,
        };
        u32::try_from(off)
            .ok()
            .filter(|o| (*o as usize) < self.allocations.len())
    }

    /// The owner of `ip`, if it is allocated.
    pub fn owner(&self, ip: IpAddr) -> Option<&AllocationAttribute> {
        let ord = self.ordinal_of(ip)?;
        let idx = self.allocations.get(ord as usize).copied().flatten()?;
        self.attributes.get(idx as usize)
    }

    /// The addresses held by `handle`, in block order.
    pub fn ips_of(&self, handle: &HandleId) -> Vec<IpAddr> {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let attr = self.attributes.get((*a)? as usize)?;
                (attr.handle_id == *handle).then(|| self.ip_at(i as u32))
            })
            .collect()
    }

    /// Every allocated address with its owner.
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, &AllocationAttribute)> + '_ {
        self.allocations.iter().enumerate().filter_map(|(i, a)| {
            let attr = self.attributes.get((*a)? as usize)?;
            Some((self.ip_at(i as u32), attr))
        })
    }

    fn attribute_index(&mut self, attr: &AllocationAttribute) -> u32 {
        if let Some(i) = self.attributes.iter().position(|a| a == attr) {
            return i as u32;
        }
        self.attributes.push(attr.clone());
        (self.attributes.len() - 1) as u32
    }

    /// Allocates up to `n` free addresses from the front of the free list.
    ///
    /// The free list is datastore content: an entry that names an address in use, one
    /// outside the block or one already taken is dropped as it is met, never handed out.
    pub fn allocate(&mut self, n: u32, attr: &AllocationAttribute) -> Vec<IpAddr> {
        let mut ords: Vec<u32> = Vec::new();
        let mut i = 0;
        while ords.len() < n as usize && i < self.unallocated.len() {
            let o = self.unallocated[i];
            let free = self
                .allocations
                .get(o as usize)
                .is_some_and(Option::is_none);
            if free && !ords.contains(&o) {
                ords.push(o);
                i += 1;
            } else {
                self.unallocated.remove(i);
            }
        }
        if ords.is_empty() {
            return Vec::new();
        }
        // The entries taken are exactly the first `ords.len()` of the list now.
        self.unallocated.drain(..ords.len());
        let idx = self.attribute_index(attr);
        ords.into_iter()
            .map(|o| {
                self.allocations[o as usize] = Some(idx);
                self.ip_at(o)
            })
            .collect()
    }

    /// Allocates `ip`, which must be inside the block and free.
    pub fn allocate_ip(
        &mut self,
        ip: IpAddr,
        attr: &AllocationAttribute,
    ) -> Result<(), ModelError> {
        let ord = self.ordinal_of(ip).ok_or(ModelError::NotInBlock {
            ip,
            block: self.cidr,
        })?;
        if let Some(owner) = self.owner(ip) {
            return Err(ModelError::AlreadyAllocated {
                ip,
                handle: owner.handle_id.clone(),
            });
        }
        let idx = self.attribute_index(attr);
        self.allocations[ord as usize] = Some(idx);
        self.unallocated.retain(|o| *o != ord);
        Ok(())
    }

    /// Frees `ip`; returns its former owner, or `None` if it was not allocated.
    pub fn release(&mut self, ip: IpAddr) -> Option<HandleId> {
        let ord = self.ordinal_of(ip)?;
        let idx = self.allocations[ord as usize].take()?;
        self.unallocated.push(ord);
        let handle = self
            .attributes
            .get(idx as usize)
            .map(|a| a.handle_id.clone());
        self.compact_attributes();
        handle
    }

    /// Frees every address for which `release` says so; returns them.
    pub fn release_where(
        &mut self,
        mut release: impl FnMut(&AllocationAttribute) -> bool,
    ) -> Vec<IpAddr> {
        let mut freed = Vec::new();
        for ord in 0..self.allocations.len() {
            let Some(idx) = self.allocations[ord] else {
                continue;
            };
            let drop_it = self.attributes.get(idx as usize).is_none_or(&mut release);
            if drop_it {
                self.allocations[ord] = None;
                self.unallocated.push(ord as u32);
                freed.push(self.ip_at(ord as u32));
            }
        }
        if !freed.is_empty() {
            self.compact_attributes();
        }
        freed
    }

    /// Drops attributes that no allocation refers to and renumbers the rest.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for idx in self.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*idx as usize) {
                *u = true;
            }
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut remap = vec![None; self.attributes.len()];
        let mut kept = Vec::new();
        for (i, attr) in std::mem::take(&mut self.attributes).into_iter().enumerate() {
            if used[i] {
                remap[i] = Some(kept.len() as u32);
                kept.push(attr);
            }
        }
        self.attributes = kept;
        for a in self.allocations.iter_mut() {
            if let Some(idx) = *a {
                *a = remap.get(idx as usize).copied().flatten();
            }
        }
    }

    /// Internal consistency: every address is either allocated or on the free list, exactly
    /// once; allocations point at attributes. Returns a description of each problem.
    pub fn integrity_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let n = self.allocations.len();
        if n as u128 != block_len(&self.cidr) as u128 {
            problems.push(format!(
                "block {} has {} allocation slots, expected {}",
                self.cidr,
                n,
                block_len(&self.cidr)
            ));
        }
        let mut free_seen = vec![0u32; n];
        for o in &self.unallocated {
            match free_seen.get_mut(*o as usize) {
                Some(c) => *c += 1,
                None => problems.push(format!(
                    "block {}: free list holds offset {o} outside the block",
                    self.cidr
                )),
            }
        }
        for (i, a) in self.allocations.iter().enumerate() {
            let ip = self.ip_at(i as u32);
            match (a, free_seen[i]) {
                (Some(_), c) if c > 0 => problems.push(format!(
                    "block {}: {ip} is allocated and also on the free list",
                    self.cidr
                )),
                (None, 0) => problems.push(format!(
                    "block {}: {ip} is neither allocated nor free",
                    self.cidr
                )),
                (None, c) if c > 1 => problems.push(format!(
                    "block {}: {ip} is on the free list {c} times",
                    self.cidr
                )),
                _ => {}
            }
            if let Some(idx) = a {
                if *idx as usize >= self.attributes.len() {
                    problems.push(format!(
                        "block {}: {ip} refers to a missing attribute {idx}",
                        self.cidr
                    ));
                }
            }
        }
        problems
    }

    /// Rebuilds the free list from the allocations (repair for `integrity_problems`).
    pub fn rebuild_free_list(&mut self) {
        let n = block_len(&self.cidr) as usize;
        self.allocations.resize(n, None);
        let attrs = self.attributes.len() as u32;
        for a in self.allocations.iter_mut() {
            if a.is_some_and(|i| i >= attrs) {
                *a = None;
            }
        }
        let mut seen = vec![false; n];
        let mut free = Vec::with_capacity(n);
        for o in self
            .unallocated
            .iter()
            .chain((0..n as u32).collect::<Vec<_>>().iter())
        {
            let i = *o as usize;
            if i < n && !seen[i] && self.allocations[i].is_none() {
                seen[i] = true;
                free.push(*o);
            }
        }
        self.unallocated = free;
        self.compact_attributes();
    }
}

/// Number of addresses in a block CIDR.
pub fn block_len(cidr: &IpNet) -> u32 {
    let bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    1u32.checked_shl(bits).unwrap_or(0)
}

/// The addresses a handle owns, as a count per block (Calico's IPAMHandle).
///
/// The record may over-count (it is written before the block during an allocation) but
/// never under-counts a block that holds addresses of the handle: releasing by handle reads
/// the blocks named here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Handle {
    pub handle_id: HandleId,
    /// Block CIDR → number of addresses of this handle in it.
    #[serde(default)]
    pub block: BTreeMap<IpNet, u32>,
}

/// Cluster-wide IPAM settings (Calico's IPAMConfiguration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfig {
    /// Never borrow addresses from another node's block.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Most blocks one node may claim; 0 means no limit.
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Claim new blocks when the node's blocks are full.
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
}

fn default_true() -> bool {
    true
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            max_blocks_per_host: 0,
            auto_allocate_blocks: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn pool(cidr: &str, bs: u8) -> IpPool {
        let mut p = IpPool::new(PoolName::new("p").unwrap(), net(cidr));
        p.block_size = bs;
        p
    }

    #[test]
    fn a_corrupt_free_list_never_hands_out_an_address_twice() {
        let mut b = Block::new(net("10.0.0.0/30"), None);
        let first = b.allocate(
            1,
            &AllocationAttribute::for_handle(HandleId::new("a").unwrap()),
        );
        assert_eq!(first, vec!["10.0.0.0".parse::<IpAddr>().unwrap()]);
        // Written by hand or by a broken writer: the address in use, one outside the
        // block and a duplicate, ahead of the free ones.
        b.unallocated = vec![0, 9, 1, 1, 2];
        let got = b.allocate(
            3,
            &AllocationAttribute::for_handle(HandleId::new("b").unwrap()),
        );
        let want: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        assert!(b.unallocated.is_empty(), "{:?}", b.unallocated);
        assert_eq!(
            b.owner("10.0.0.0".parse().unwrap())
                .unwrap()
                .handle_id
                .as_str(),
            "a"
        );
        assert!(b
            .allocate(
                1,
                &AllocationAttribute::for_handle(HandleId::new("c").unwrap())
            )
            .is_empty());
    }

    #[test]
    fn names_are_dns_subdomains() {
        for ok in ["node-1", "a", "k8s-pod-network.0123abc", "n.example.com"] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
        // Each dot-separated label too: the API server refuses `a..b` or `a.-b` (422).
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a/b",
            "a..b",
            "a.-b",
            "a-.b",
            ".a",
            "a.",
            &"a".repeat(254),
        ] {
            assert!(HandleId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pool_validation_table() {
        let cases: &[(&str, u8, bool)] = &[
            ("10.0.0.0/16", 26, true),
            ("10.0.0.0/26", 26, true),
            ("10.0.0.0/27", 26, false),
            ("10.0.0.1/16", 26, false),
            ("10.0.0.0/16", 19, false),
            ("10.0.0.0/16", 33, false),
            ("10.0.0.0/16", 32, true),
            ("fd00::/64", 122, true),
            ("fd00::/64", 115, false),
            ("fd00::/123", 122, false),
        ];
        for (cidr, bs, ok) in cases {
            assert_eq!(pool(cidr, *bs).validate().is_ok(), *ok, "{cidr} /{bs}");
        }
    }

    #[test]
    fn load_balancer_pools_serve_nothing_else() {
        use AllowedUse::*;
        let cases: &[(&[AllowedUse], bool)] = &[
            (&[LoadBalancer], true),
            (&[Workload, Tunnel], true),
            (&[Workload], true),
            (&[LoadBalancer, Workload], false),
            (&[Tunnel, LoadBalancer], false),
            (&[Workload, Tunnel, LoadBalancer], false),
        ];
        for (uses, ok) in cases {
            let mut p = pool("10.9.0.0/24", 28);
            p.allowed_uses = uses.to_vec();
            let got = p.validate();
            assert_eq!(got.is_ok(), *ok, "{uses:?}");
            if !ok {
                assert!(format!("{}", got.unwrap_err()).contains("allowedUses"));
            }
        }
        // The node selector is about nodes; a LoadBalancer pool hands out to Services.
        let mut p = pool("10.9.0.0/24", 28);
        p.allowed_uses = vec![LoadBalancer];
        p.node_selector = Selector::parse("rack == 'a'").unwrap();
        assert!(p.usable_by(&BTreeMap::new(), LoadBalancer));
        assert!(!p.usable_by(&BTreeMap::new(), Workload));
    }

    #[test]
    fn blocks_of_a_pool() {
        let p = pool("10.1.0.0/24", 26);
        assert_eq!(p.block_count(), 4);
        assert_eq!(p.nth_block(3), net("10.1.0.192/26"));
        assert_eq!(
            p.block_for("10.1.0.77".parse().unwrap()),
            net("10.1.0.64/26")
        );
        let p6 = pool("fd00::/120", 122);
        assert_eq!(p6.block_count(), 4);
        assert_eq!(p6.nth_block(1), net("fd00::40/122"));
    }

    #[test]
    fn block_allocate_release_round_trip() {
        let mut b = Block::new(net("10.0.0.0/30"), None);
        let h = AllocationAttribute::for_handle(HandleId::new("h").unwrap());
        let got = b.allocate(3, &h);
        assert_eq!(got.len(), 3);
        assert_eq!(b.free(), 1);
        assert_eq!(b.allocate(5, &h).len(), 1);
        assert_eq!(b.allocate(1, &h).len(), 0);
        assert_eq!(b.release(got[0]), Some(h.handle_id.clone()));
        assert_eq!(b.release(got[0]), None);
        // Released addresses go to the back of the free list.
        assert_eq!(b.unallocated, vec![0]);
        assert!(b.integrity_problems().is_empty());
        let freed = b.release_where(|a| a.handle_id.as_str() == "h");
        assert_eq!(freed.len(), 3);
        assert!(b.is_empty());
        assert!(b.attributes.is_empty());
        assert!(b.integrity_problems().is_empty());
    }

    #[test]
    fn attributes_are_compacted() {
        let mut b = Block::new(net("fd00::/126"), None);
        let a = AllocationAttribute::for_handle(HandleId::new("a").unwrap());
        let c = AllocationAttribute::for_handle(HandleId::new("c").unwrap());
        let ia = b.allocate(1, &a);
        let ic = b.allocate(1, &c);
        b.release(ia[0]);
        assert_eq!(b.attributes, vec![c.clone()]);
        assert_eq!(b.owner(ic[0]), Some(&c));
    }

    #[test]
    fn integrity_detects_double_listing() {
        let mut b = Block::new(net("10.0.0.0/30"), None);
        let h = AllocationAttribute::for_handle(HandleId::new("h").unwrap());
        b.allocate(1, &h);
        b.unallocated.push(0);
        assert_eq!(b.integrity_problems().len(), 1);
        b.rebuild_free_list();
        assert!(b.integrity_problems().is_empty());
        assert_eq!(b.in_use(), 1);
    }

    #[test]
    fn json_uses_calico_names() {
        let p = IpPool::new(PoolName::new("default").unwrap(), net("10.0.0.0/16"));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["blockSize"], 26);
        assert_eq!(v["disableBGPExport"], false);
        assert_eq!(v["ipipMode"], "Never");
        let h = Handle {
            handle_id: HandleId::new("h").unwrap(),
            block: [(net("10.0.0.0/26"), 2)].into(),
        };
        let s = serde_json::to_string(&h).unwrap();
        assert_eq!(s, r#"{"handleId":"h","block":{"10.0.0.0/26":2}}"#);
        assert_eq!(serde_json::from_str::<Handle>(&s).unwrap(), h);
        assert!(serde_json::from_str::<IpamConfig>(r#"{"bogus":1}"#).is_err());
    }
}
