//! The agent's view of the datastore: an in-memory index that the store's watch feeds
//! (a `Resync` replaces it, `Put` and `Deleted` update it), and from which each
//! reconcile builds a [`Snapshot`] for the pure decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipam::model::{Block, IpPool, NodeName, PoolName};
use ipam::store::{Key, Object, Resource, ResourceKind, ResourceName, Versioned, WatchEvent};
use ipnet::IpNet;

use crate::node::desired::{NodeInfo, Snapshot};
use crate::resources::bgp_configuration::DEFAULT_NAME;
use crate::resources::{ClusterResource, Spec};

/// What the store holds that the agent needs.
#[derive(Clone, Debug, Default)]
pub struct Index {
    pools: BTreeMap<PoolName, IpPool>,
    blocks: BTreeMap<IpNet, Block>,
    resources: BTreeMap<(ResourceKind, ResourceName), Versioned<Resource>>,
}

/// IPAM usage of one pool, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub blocks: u64,
    pub addresses_used: u64,
}

impl Index {
    /// Applies one watch event.
    pub fn apply(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Resync(objs) => {
                *self = Index::default();
                for o in objs {
                    self.put(o);
                }
            }
            WatchEvent::Put(o) => self.put(o),
            WatchEvent::Deleted(k) => match k {
                Key::Pool(n) => {
                    self.pools.remove(&n);
                }
                Key::Block(c) => {
                    self.blocks.remove(&c);
                }
                Key::Resource { kind, name } => {
                    self.resources.remove(&(kind, name));
                }
                _ => {}
            },
        }
    }

    fn put(&mut self, o: Versioned<Object>) {
        let rev = o.revision;
        match o.value {
            Object::Pool(p) => {
                self.pools.insert(p.name.clone(), p);
            }
            Object::Block(b) => {
                self.blocks.insert(b.cidr, b);
            }
            Object::Resource(r) => {
                self.resources
                    .insert((r.kind.clone(), r.name.clone()), Versioned::new(r, rev));
            }
            _ => {}
        }
    }

    /// This node's ServalNode as stored, with its revision.
    pub fn node_resource(&self, node: &str) -> Option<&Versioned<Resource>> {
        let name = ResourceName::new(node).ok()?;
        self.resources
            .get(&(crate::resources::ResourceKind::ServalNode.stored(), name))
    }

    /// The snapshot for node `node`; stored resources that do not decode are skipped
    /// and reported.
    pub fn snapshot(
        &self,
        node: &NodeName,
        router_id: Option<Ipv4Addr>,
        local_subnets: Vec<IpNet>,
        password_files: BTreeMap<PathBuf, String>,
    ) -> (Snapshot, Vec<String>) {
        let mut problems = Vec::new();
        let mut s = Snapshot {
            node: node.to_string(),
            router_id,
            local_subnets,
            pools: self.pools.values().cloned().collect(),
            password_files,
            ..Snapshot::default()
        };
        for v in self.resources.values() {
            let r = match ClusterResource::from_stored(&v.value) {
                None => continue,
                Some(Err(e)) => {
                    problems.push(e.to_string());
                    continue;
                }
                Some(Ok(r)) => r,
            };
            match r.spec {
                Spec::ServalNode(spec) => {
                    s.nodes.insert(
                        r.name.to_string(),
                        NodeInfo {
                            labels: r.labels,
                            spec,
                        },
                    );
                }
                Spec::BgpConfiguration(c) if r.name == DEFAULT_NAME => s.config = c,
                Spec::BgpConfiguration(_) => {}
                Spec::BgpPeer(p) => {
                    s.peers.insert(r.name.to_string(), p);
                }
                Spec::BgpFilter(f) => {
                    s.filters.insert(r.name.to_string(), f);
                }
                // The IPAM reads reservations itself when it allocates.
                Spec::IpReservation(_) => {}
                Spec::BfdProfile(b) => {
                    s.bfd_profiles.insert(r.name.to_string(), b);
                }
            }
        }
        for b in self.blocks.values() {
            if b.deleted {
                continue;
            }
            if b.affinity.as_ref() == Some(node) {
                s.own_blocks.insert(b.cidr);
            } else {
                for (ip, attr) in b.allocated() {
                    if attr.node.as_ref() == Some(node) {
                        s.borrowed.insert(ip);
                    }
                }
            }
        }
        (s, problems)
    }

    /// Password files the resources refer to.
    pub fn password_files(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        for v in self.resources.values() {
            if let Some(file) = v
                .value
                .spec
                .get("password")
                .or_else(|| v.value.spec.get("nodeMeshPassword"))
                .and_then(|p| p.get("file"))
                .and_then(|f| f.as_str())
            {
                out.insert(PathBuf::from(file));
            }
        }
        out
    }

    /// Blocks and used addresses per pool.
    pub fn usage(&self) -> BTreeMap<String, PoolUsage> {
        let mut out: BTreeMap<String, PoolUsage> = self
            .pools
            .keys()
            .map(|n| (n.to_string(), PoolUsage::default()))
            .collect();
        for b in self.blocks.values() {
            if let Some(p) = self.pools.values().find(|p| p.cidr.contains(&b.cidr)) {
                let u = out.entry(p.name.to_string()).or_default();
                u.blocks += 1;
                u.addresses_used += u64::from(b.in_use());
            }
        }
        out
    }

    pub fn pools(&self) -> impl Iterator<Item = &IpPool> {
        self.pools.values()
    }

    /// Addresses this node holds from blocks affine to it (for tests and status).
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks.values()
    }

    /// Whether `ip` is allocated in a block.
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.blocks
            .values()
            .any(|b| b.cidr.contains(&ip) && b.owner(ip).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::model::{AllocationAttribute, HandleId};
    use ipam::store::Revision;

    fn v<T>(t: T) -> Versioned<T> {
        Versioned::new(t, Revision("1".into()))
    }

    #[test]
    fn snapshot_from_events() {
        let me = NodeName::new("n1").unwrap();
        let other = NodeName::new("n2").unwrap();
        let mut own = Block::new("10.65.0.0/26".parse().unwrap(), Some(me.clone()));
        own.allocate(
            1,
            &AllocationAttribute::for_handle(HandleId::new("h").unwrap()),
        );
        let mut theirs = Block::new("10.65.0.64/26".parse().unwrap(), Some(other));
        let mut attr = AllocationAttribute::for_handle(HandleId::new("h2").unwrap());
        attr.node = Some(me.clone());
        theirs.allocate(1, &attr);
        let node = ClusterResource::from_parts(
            crate::resources::ResourceKind::ServalNode,
            "n1",
            [("rack".to_owned(), "a".to_owned())].into(),
            serde_json::json!({"bgp": {"ipv4Address": "192.0.2.1/24"}}),
        )
        .unwrap();
        let cfg = ClusterResource::from_parts(
            crate::resources::ResourceKind::BgpConfiguration,
            "default",
            BTreeMap::new(),
            serde_json::json!({"nodeToNodeMeshEnabled": false}),
        )
        .unwrap();
        let broken = Resource::new(
            "BGPPeer",
            "broken",
            BTreeMap::new(),
            serde_json::json!({"bogus": 1}),
        )
        .unwrap();
        let mut idx = Index::default();
        idx.apply(WatchEvent::Resync(vec![
            v(Object::Block(own)),
            v(Object::Block(theirs)),
            v(Object::Resource(node.to_stored())),
            v(Object::Resource(cfg.to_stored())),
            v(Object::Resource(broken)),
        ]));
        let (s, problems) = idx.snapshot(&me, None, vec![], BTreeMap::new());
        assert_eq!(s.own_blocks, ["10.65.0.0/26".parse().unwrap()].into());
        assert_eq!(s.borrowed, ["10.65.0.64".parse().unwrap()].into());
        assert_eq!(s.nodes["n1"].labels["rack"], "a");
        assert_eq!(s.config.node_to_node_mesh_enabled, Some(false));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("broken") && problems[0].contains("bogus"),
            "{problems:?}"
        );

        idx.apply(WatchEvent::Deleted(Key::Block(
            "10.65.0.0/26".parse().unwrap(),
        )));
        let (s, _) = idx.snapshot(&me, None, vec![], BTreeMap::new());
        assert!(s.own_blocks.is_empty());
    }

    #[test]
    fn bfd_profiles_follow_the_watch() {
        let me = NodeName::new("n1").unwrap();
        let profile = ClusterResource::from_parts(
            crate::resources::ResourceKind::BfdProfile,
            "fast",
            BTreeMap::new(),
            serde_json::json!({"receiveInterval": 100, "transmitInterval": 100}),
        )
        .unwrap();
        let echo = Resource::new(
            "BFDProfile",
            "echo",
            BTreeMap::new(),
            serde_json::json!({"echoMode": true}),
        )
        .unwrap();
        let mut idx = Index::default();
        idx.apply(WatchEvent::Put(v(Object::Resource(profile.to_stored()))));
        idx.apply(WatchEvent::Put(v(Object::Resource(echo))));
        let (s, problems) = idx.snapshot(&me, None, vec![], BTreeMap::new());
        assert_eq!(s.bfd_profiles["fast"].receive_interval, Some(100));
        assert!(!s.bfd_profiles.contains_key("echo"), "refused, not used");
        assert!(
            problems.len() == 1 && problems[0].contains("echoMode"),
            "{problems:?}"
        );
        idx.apply(WatchEvent::Deleted(Key::Resource {
            kind: crate::resources::ResourceKind::BfdProfile.stored(),
            name: ResourceName::new("fast").unwrap(),
        }));
        let (s, _) = idx.snapshot(&me, None, vec![], BTreeMap::new());
        assert!(s.bfd_profiles.is_empty());
    }
}
