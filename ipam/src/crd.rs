//! The IPAM objects as Kubernetes custom resources: group `serval.dev`, version `v1`,
//! cluster-scoped, with Calico's field names.
//!
//! | kind            | plural           | object name                                  |
//! |-----------------|------------------|----------------------------------------------|
//! | `IPPool`        | `ippools`        | the pool's name                              |
//! | `IPAMBlock`     | `ipamblocks`     | the CIDR with `.`, `:` and `/` as `-`        |
//! | `BlockAffinity` | `blockaffinities`| `<block object name>.<node>`                 |
//! | `IPAMHandle`    | `ipamhandles`    | the handle id                                |
//! | `IPAMConfig`    | `ipamconfigs`    | `default`                                    |
//!
//! The specs carry exactly the JSON of [`crate::model`] (the pool's name lives in
//! `metadata.name`), so a spec converts to the model by deserializing it, which checks
//! every field. A later task generates the CRD YAML from these types with
//! `kube::CustomResourceExt::crd()`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{AffinityState, AllowedUse, AssignmentMode, EncapMode};

/// API group of every serval resource.
pub const GROUP: &str = "serval.dev";
/// Label that carries a block affinity's node, to list one node's affinities.
pub const NODE_LABEL: &str = "serval.dev/node";

/// An IP pool (Calico's IPPool).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "IPPool",
    plural = "ippools"
)]
#[kube(printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    /// The pool's CIDR, e.g. 10.65.0.0/16.
    pub cidr: String,
    /// Prefix length of the pool's blocks (IPv4 20–32, default 26; IPv6 116–128, default 122).
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    /// Kubernetes or Calico selector syntax; empty selects every node.
    #[serde(default)]
    pub node_selector: String,
    #[serde(default = "default_uses")]
    pub allowed_uses: Vec<AllowedUse>,
    /// Kubernetes or Calico selector syntax over the pod's namespace labels; empty:
    /// every namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    /// `Automatic` (default) or `Manual` (only when a pod, namespace or the CNI
    /// configuration names the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

fn default_uses() -> Vec<AllowedUse> {
    vec![AllowedUse::Workload, AllowedUse::Tunnel]
}

/// Who an address in a block was given to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocationAttributeSpec {
    pub handle_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When the address was given (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_at: Option<u64>,
}

/// A block of a pool (Calico's IPAMBlock).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "IPAMBlock",
    plural = "ipamblocks"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMBlockSpec {
    pub cidr: String,
    /// The node the block is affine to.
    #[serde(default)]
    pub affinity: Option<String>,
    /// Per address: index into `attributes`, or null when free.
    pub allocations: Vec<Option<u32>>,
    /// Free addresses (offsets), in the order they are handed out.
    pub unallocated: Vec<u32>,
    #[serde(default)]
    pub attributes: Vec<AllocationAttributeSpec>,
    /// Set while the block is being released.
    #[serde(default)]
    pub deleted: bool,
}

/// A node's claim on a block (Calico's BlockAffinity).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "BlockAffinity",
    plural = "blockaffinities"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockAffinitySpec {
    pub node: String,
    pub cidr: String,
    pub state: AffinityState,
}

/// The addresses of one handle, counted per block (Calico's IPAMHandle).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "IPAMHandle",
    plural = "ipamhandles"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMHandleSpec {
    pub handle_id: String,
    /// Block CIDR → number of the handle's addresses in it.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
}

/// Cluster-wide IPAM settings (Calico's IPAMConfiguration); one object named `default`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "IPAMConfig",
    plural = "ipamconfigs"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigSpec {
    #[serde(default)]
    pub strict_affinity: bool,
    /// 0: no limit.
    #[serde(default)]
    pub max_blocks_per_host: u32,
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crds_are_cluster_scoped_in_our_group() {
        for crd in [
            IPPool::crd(),
            IPAMBlock::crd(),
            BlockAffinity::crd(),
            IPAMHandle::crd(),
            IPAMConfig::crd(),
        ] {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(crd.spec.versions[0].name, "v1");
        }
        let schema = serde_json::to_string(&IPPool::crd()).unwrap();
        assert!(schema.contains("disableBGPExport"), "{schema}");
        assert!(schema.contains("CrossSubnet"));
    }
}
