//! What a node that leaves for good held in the datastore, released: its pods' and
//! tunnel addresses, its block affinities and its ServalNode. The node collector on
//! Kubernetes runs it for each deleted Node; `serval delete servalnode` runs it on the
//! other datastores. Every step goes through the IPAM's release operations, which retry
//! on conflicts like every IPAM write.

use std::collections::BTreeSet;

use ipam::model::{HandleId, NodeName};
use ipam::store::{Key, Object, ResourceName, StoreExt as _, Write};
use ipam::Ipam;

use crate::node::register::TunnelKind;
use crate::resources::ResourceKind;

/// What collecting one node did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub handles_released: Vec<String>,
    pub blocks_deleted: usize,
    pub blocks_orphaned: usize,
    pub serval_node_deleted: bool,
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
    let resource_name = ResourceName::from(node.clone());
    let released = ipam.release_node(node).await?;
    out.blocks_deleted = released.blocks_deleted.len();
    out.blocks_orphaned = released.blocks_orphaned.len();
    let key = Key::Resource {
        kind: ResourceKind::ServalNode.stored(),
        name: resource_name,
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
