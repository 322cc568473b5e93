//! Pool and block usage, as `serval ipam show` prints it.

use ipnet::IpNet;
use serde::Serialize;

use crate::allocator::Snapshot;
use crate::model::{block_len, AffinityState, NodeName, PoolName};

/// Usage of every pool, and blocks that lie in no pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
    /// Blocks inside no pool (left behind by a deleted pool; `ipam check` reports them).
    pub orphan_blocks: Vec<BlockUsage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: PoolName,
    pub cidr: IpNet,
    pub block_size: u8,
    pub disabled: bool,
    /// Addresses in the pool.
    pub size: u128,
    /// Addresses allocated.
    pub in_use: u64,
    pub blocks: Vec<BlockUsage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: IpNet,
    /// The node the block is affine to.
    pub node: Option<NodeName>,
    pub state: Option<AffinityState>,
    pub size: u32,
    pub in_use: u32,
    /// Addresses allocated to pods of other nodes.
    pub borrowed: u32,
    pub deleted: bool,
}

impl Usage {
    /// Usage from a snapshot holding every pool, block and affinity.
    pub fn of(snap: &Snapshot) -> Usage {
        let mut usage = Usage::default();
        for p in &snap.pools {
            let p = &p.value;
            let host_bits = u32::from(p.cidr.max_prefix_len() - p.cidr.prefix_len());
            usage.pools.push(PoolUsage {
                name: p.name.clone(),
                cidr: p.cidr,
                block_size: p.block_size,
                disabled: p.disabled,
                size: 1u128.checked_shl(host_bits).unwrap_or(u128::MAX),
                in_use: 0,
                blocks: Vec::new(),
            });
        }
        for b in snap.blocks.values().flatten() {
            let v = &b.value;
            let state = v
                .affinity
                .as_ref()
                .and_then(|n| snap.affinities.get(&(n.clone(), v.cidr)))
                .map(|a| a.value.state);
            let bu = BlockUsage {
                cidr: v.cidr,
                node: v.affinity.clone(),
                state,
                size: block_len(&v.cidr),
                in_use: v.in_use(),
                borrowed: v
                    .allocated()
                    .filter(|(_, a)| a.node.is_some() && a.node != v.affinity)
                    .count() as u32,
                deleted: v.deleted,
            };
            match usage.pools.iter_mut().find(|p| p.cidr.contains(&v.cidr)) {
                Some(p) => {
                    p.in_use += u64::from(bu.in_use);
                    p.blocks.push(bu);
                }
                None => usage.orphan_blocks.push(bu),
            }
        }
        usage
    }
}
