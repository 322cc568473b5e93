//! The node garbage collector: when a Kubernetes Node is deleted, its block affinities,
//! its pods' addresses and its ServalNode go too. Every agent runs it; only the holder
//! of the Lease (see [`super::lease`]) acts, so one node collects and the others wait.
//!
//! The decision is pure ([`stale_nodes`]); [`collect_node`] carries one out through
//! the IPAM's release operations, which retry on conflicts like every IPAM write.

use std::collections::BTreeSet;

use ipam::model::{HandleId, NodeName};
use ipam::store::{Key, Object, Store, StoreExt as _, Write};
use ipam::Ipam;

use crate::node::register::TunnelKind;
use crate::resources::ResourceKind;

/// The nodes to collect: those that still hold block affinities or a ServalNode but
/// have no Kubernetes Node. An empty `live` set collects nothing: a cluster without
/// any Node is far likelier a bad read than the truth, and a wrong answer would take
/// every node's addresses.
pub fn stale_nodes(
    live: &BTreeSet<String>,
    registered: &BTreeSet<String>,
    with_affinities: &BTreeSet<String>,
) -> BTreeSet<String> {
    if live.is_empty() {
        return BTreeSet::new();
    }
    registered
        .union(with_affinities)
        .filter(|n| !live.contains(*n))
        .cloned()
        .collect()
}

/// What collecting one node did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub handles_released: Vec<String>,
    pub blocks_deleted: usize,
    pub blocks_orphaned: usize,
    pub serval_node_deleted: bool,
}

/// The nodes that hold something: (ServalNodes, nodes with block affinities).
pub async fn holders(
    store: &dyn Store,
) -> Result<(BTreeSet<String>, BTreeSet<String>), ipam::StoreError> {
    let registered = store
        .list_resources(ResourceKind::ServalNode.as_str())
        .await?
        .into_iter()
        .map(|r| r.value.name)
        .collect();
    let affine = store
        .list_affinities()
        .await?
        .into_iter()
        .map(|a| a.value.node.to_string())
        .collect();
    Ok((registered, affine))
}

/// Releases what node `name` held: the addresses allocated to it (its pods' and its
/// tunnel addresses), then its block affinities (empty blocks are deleted, the others
/// lose their affinity), then its ServalNode.
pub async fn collect_node(ipam: &Ipam, name: &str) -> anyhow::Result<Collected> {
    let node = NodeName::new(name)?;
    let store = ipam.store();
    let mut out = Collected::default();
    let mut handles: BTreeSet<String> = TunnelKind::ALL.iter().map(|k| k.handle(name)).collect();
    for b in store.list_blocks().await? {
        for (_, attr) in b.value.allocated() {
            if attr.node.as_ref() == Some(&node) {
                handles.insert(attr.handle_id.to_string());
            }
        }
    }
    for h in handles {
        let Ok(id) = HandleId::new(h.clone()) else {
            continue;
        };
        let ips = ipam.release_handle(id).await?;
        if !ips.is_empty() {
            out.handles_released.push(h);
        }
    }
    let released = ipam.release_node(node).await?;
    out.blocks_deleted = released.blocks_deleted.len();
    out.blocks_orphaned = released.blocks_orphaned.len();
    let key = Key::Resource {
        kind: ResourceKind::ServalNode.as_str().to_owned(),
        name: name.to_owned(),
    };
    if let Some(v) = store.get(&key).await? {
        if let Object::Resource(_) = v.value {
            match store.commit(&[Write::delete(key, v.revision)]).await {
                Ok(_) => out.serval_node_deleted = true,
                // Changed or gone meanwhile: the next pass looks again.
                Err(ipam::StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn stale_nodes_table() {
        // (what, live Nodes, ServalNodes, nodes with affinities, to collect)
        let cases = [
            (
                "all alive",
                set(&["a", "b"]),
                set(&["a", "b"]),
                set(&["a"]),
                set(&[]),
            ),
            (
                "deleted node with both",
                set(&["a"]),
                set(&["a", "b"]),
                set(&["b"]),
                set(&["b"]),
            ),
            (
                "only affinities left",
                set(&["a"]),
                set(&["a"]),
                set(&["c"]),
                set(&["c"]),
            ),
            (
                "only a ServalNode left",
                set(&["a"]),
                set(&["a", "d"]),
                set(&[]),
                set(&["d"]),
            ),
            (
                "a new Node not registered yet",
                set(&["a", "e"]),
                set(&["a"]),
                set(&[]),
                set(&[]),
            ),
            (
                "no Node at all: a bad read, nothing",
                set(&[]),
                set(&["a"]),
                set(&["a"]),
                set(&[]),
            ),
        ];
        for (what, live, reg, aff, want) in cases {
            assert_eq!(stale_nodes(&live, &reg, &aff), want, "{what}");
        }
    }
}
