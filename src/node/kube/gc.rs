//! The node garbage collector: when a Kubernetes Node is deleted, its block affinities,
//! its pods' addresses and its ServalNode go too. Every agent runs it; only the holder
//! of the Lease (see [`super::lease`]) acts, so one node collects and the others wait.
//!
//! The decision is pure ([`stale_nodes`]); [`collect_node`] (shared with
//! `serval delete servalnode`) carries one out.

use std::collections::BTreeSet;

use ipam::store::{Store, StoreExt as _};

pub use crate::node::gc::{collect_node, Collected};
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

/// The nodes that hold something: (ServalNodes, nodes with block affinities).
pub async fn holders(
    store: &dyn Store,
) -> Result<(BTreeSet<String>, BTreeSet<String>), ipam::StoreError> {
    let registered = store
        .list_resources(ResourceKind::ServalNode.as_str())
        .await?
        .into_iter()
        .map(|r| r.value.name.to_string())
        .collect();
    let affine = store
        .list_affinities()
        .await?
        .into_iter()
        .map(|a| a.value.node.to_string())
        .collect();
    Ok((registered, affine))
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
