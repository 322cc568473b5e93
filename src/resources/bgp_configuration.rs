//! `BGPConfiguration`: the cluster's BGP settings, Calico's resource of the same name
//! with its field names. The object named `default` applies to every node; an object
//! named `node.<node name>` overrides `logSeverityScreen` and `listenPort` for one node.
//!
//! `nodeMeshBFDProfile` is serval's addition (in the spelling of Calico's
//! `nodeMeshPassword` and `nodeMeshMaxRestartTime`): the `BFDProfile` of every
//! node-to-node mesh session.

use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BgpPassword, GoDuration};

/// Cluster-wide BGP settings.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "serval.dev",
    version = "v1",
    kind = "BGPConfiguration",
    plural = "bgpconfigurations"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPConfigurationSpec {
    /// Log level of the agent: Debug, Info, Warning, Error or Fatal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
    /// The full node-to-node iBGP mesh; on unless set to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// The AS of nodes that do not set their own (default 64512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// The TCP port the speaker listens on and connects to for the mesh (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Named communities that `prefixAdvertisements` may refer to by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<NamedCommunity>,
    /// Communities attached to advertised prefixes inside these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// Service cluster IP ranges to advertise from every node.
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<CidrBlock>,
    /// Service external IP ranges to advertise from every node.
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<CidrBlock>,
    /// Service load-balancer IP ranges to advertise from every node.
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<CidrBlock>,
    /// `Enabled` (default): LoadBalancer addresses of Services with
    /// `externalTrafficPolicy: Cluster` are advertised as the `serviceLoadBalancerIPs`
    /// ranges; `Disabled`: each address on its own (/32, /128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_aggregation: Option<Aggregation>,
    /// Which Services of type LoadBalancer get an address from the LoadBalancer IPPools:
    /// `AllServices` (default) or `RequestedServicesOnly` (those that ask by annotation
    /// or `loadBalancerIP`); Calico's `KubeControllersConfiguration`
    /// `controllers.loadBalancer.assignIPs`, here as serval's setting. Read from the
    /// `default` object only.
    #[serde(
        default,
        rename = "loadBalancerAssignIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_assign_ips: Option<AssignIps>,
    /// TCP MD5 password of the node-to-node mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    /// Graceful-restart time of the mesh sessions (default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<GoDuration>,
    /// The `BFDProfile` of the node-to-node mesh sessions: BFD on each with its timers
    /// (serval's addition). Unset: the mesh runs no BFD.
    #[serde(
        default,
        rename = "nodeMeshBFDProfile",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_mesh_bfd_profile: Option<String>,
    /// Interface names (or `*` patterns) never used for address autodetection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
}

/// Which Services get a LoadBalancer address (Calico's `assignIPs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AssignIps {
    /// Every Service of type LoadBalancer that serval handles.
    #[default]
    AllServices,
    /// Only those that ask for addresses or pools by annotation or `loadBalancerIP`.
    RequestedServicesOnly,
}

/// Whether addresses inside a configured range are advertised as the range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Aggregation {
    #[default]
    Enabled,
    Disabled,
}

/// Agent log levels, as Calico names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LogSeverity {
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

impl LogSeverity {
    /// The `tracing` filter directive for this level.
    pub fn filter(self) -> &'static str {
        match self {
            LogSeverity::Debug => "debug",
            LogSeverity::Info => "info",
            LogSeverity::Warning => "warn",
            LogSeverity::Error | LogSeverity::Fatal => "error",
        }
    }
}

/// A community with a name to refer to it by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedCommunity {
    /// The name `prefixAdvertisements` use.
    pub name: String,
    /// `AS:VALUE` (standard) or `AS:V1:V2` (large).
    pub value: String,
}

/// Communities for the advertised prefixes inside one CIDR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    /// Advertised prefixes equal to or inside this CIDR get the communities.
    #[schemars(with = "String")]
    pub cidr: IpNet,
    /// Community values (`AS:VALUE`, `AS:V1:V2`) or names from `communities`.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// A CIDR to advertise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrBlock {
    /// The CIDR.
    #[schemars(with = "String")]
    pub cidr: IpNet,
}

/// The name of the object that holds the cluster-wide settings.
pub const DEFAULT_NAME: &str = "default";

/// The AS of nodes when neither the node nor the configuration sets one (Calico's).
pub const DEFAULT_AS: u32 = 64512;

/// A BGPConfiguration is named `default` (every node) or `node.<node name>` (one node),
/// as the CRD's CEL rule says; the error says so with the name.
pub fn check_name(name: &str) -> Result<(), String> {
    match name.strip_prefix("node.") {
        _ if name == DEFAULT_NAME => Ok(()),
        Some(node) if !node.is_empty() => Ok(()),
        _ => Err(format!(
            "{name:?}: a BGPConfiguration is named default (every node) or node.<node name> (one node)"
        )),
    }
}

impl BGPConfigurationSpec {
    /// Checks serde cannot make, each error as (field path under `spec`, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.as_number == Some(0) {
            errors.push(("asNumber".into(), "AS 0 is reserved (RFC 7607)".into()));
        }
        if self.listen_port == Some(0) {
            errors.push(("listenPort".into(), "port 0".into()));
        }
        for (i, c) in self.communities.iter().enumerate() {
            if let Err(e) = super::parse_community(&c.value) {
                errors.push((format!("communities[{i}].value"), e));
            }
        }
        for (i, p) in self.prefix_advertisements.iter().enumerate() {
            if p.cidr != p.cidr.trunc() {
                errors.push((
                    format!("prefixAdvertisements[{i}].cidr"),
                    format!("{} has host bits set", p.cidr),
                ));
            }
            for (j, c) in p.communities.iter().enumerate() {
                let named = self.communities.iter().any(|n| n.name == *c);
                if !named {
                    if let Err(e) = super::parse_community(c) {
                        errors.push((
                            format!("prefixAdvertisements[{i}].communities[{j}]"),
                            format!("{e}, and no community in spec.communities has that name"),
                        ));
                    }
                }
            }
        }
        if let Some(p) = &self.node_mesh_password {
            if let Err(e) = p.check() {
                errors.push(("nodeMeshPassword".into(), e));
            }
        }
        if let Some(Err(e)) = self
            .node_mesh_max_restart_time
            .map(GoDuration::check_restart_time)
        {
            errors.push(("nodeMeshMaxRestartTime".into(), e));
        }
        if let Some(name) = &self.node_mesh_bfd_profile {
            if let Err(e) = ipam::store::ResourceName::new(name.as_str()) {
                errors.push(("nodeMeshBFDProfile".into(), format!("{name:?}: {e}")));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ClusterResource, ResourceKind};

    #[test]
    fn names_are_default_or_node_dot_name() {
        for ok in ["default", "node.worker-1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["global", "node.", "nodes.a", "defaults"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let e = ClusterResource::from_parts(
            ResourceKind::BgpConfiguration,
            "global",
            Default::default(),
            serde_json::json!({}),
        )
        .unwrap_err();
        assert_eq!(e[0].path, "metadata.name", "{e:?}");
        assert!(e[0].message.contains("node.<node name>"), "{e:?}");
    }
}
