//! Opaque cluster resources: objects the IPAM does not interpret, stored beside its own
//! so that the agent keeps its BGP configuration (BGPConfiguration, BGPPeer, …) in the
//! same datastore, with the same compare-and-swap writes and the same watch.
//!
//! A [`Resource`] is a kind (a Kubernetes kind name such as `BGPPeer`), a name (a DNS
//! subdomain), labels and a JSON spec. The IPAM never looks inside the spec: the code
//! that owns the kind parses it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::model::{name_type, NodeName};

/// Longest kind name: a Kubernetes kind becomes a DNS label in its plural.
const MAX_KIND_LEN: usize = 63;

/// A resource kind such as `BGPPeer`: a letter followed by letters and digits, at most 63
/// characters. It appears in file lines, etcd keys and API paths, so a kind that exists
/// is safe in all of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourceKind(Cow<'static, str>);

const fn is_kind(kind: &str) -> bool {
    let b = kind.as_bytes();
    if b.is_empty() || b.len() > MAX_KIND_LEN || !b[0].is_ascii_alphabetic() {
        return false;
    }
    let mut i = 1;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            return false;
        }
        i += 1;
    }
    true
}

impl ResourceKind {
    /// Validates `kind`.
    pub fn new(kind: impl Into<String>) -> Result<Self, ModelError> {
        let kind = kind.into();
        if is_kind(&kind) {
            Ok(ResourceKind(Cow::Owned(kind)))
        } else {
            Err(ModelError::InvalidName {
                what: "resource kind",
                value: kind,
            })
        }
    }

    /// A kind the program names itself; an invalid one is a programming error, caught at
    /// compile time where the kind is a constant.
    pub const fn from_static(kind: &'static str) -> Self {
        assert!(is_kind(kind), "not a resource kind");
        ResourceKind(Cow::Borrowed(kind))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ResourceKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for ResourceKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl PartialEq<&str> for ResourceKind {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

name_type!(
    /// A resource's name (`metadata.name`): a DNS subdomain, as Kubernetes object names
    /// are, and the same rule as node and pool names.
    ResourceName,
    "resource name"
);

impl From<NodeName> for ResourceName {
    /// A node's own resource (its `ServalNode`) is named after it: the same rule.
    fn from(node: NodeName) -> Self {
        ResourceName(node.as_str().to_owned())
    }
}

impl PartialEq<&str> for ResourceName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// One stored resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The kind, e.g. `BGPPeer`.
    pub kind: ResourceKind,
    /// The object's name.
    pub name: ResourceName,
    /// `metadata.labels` of the object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The object's `spec`, as JSON; its owner gives it meaning.
    pub spec: serde_json::Value,
}

impl Resource {
    /// A resource, with its kind and name checked (see [`ResourceKind`], [`ResourceName`]).
    pub fn new(
        kind: impl Into<String>,
        name: impl Into<String>,
        labels: BTreeMap<String, String>,
        spec: serde_json::Value,
    ) -> Result<Self, ModelError> {
        Ok(Resource {
            kind: ResourceKind::new(kind)?,
            name: ResourceName::new(name)?,
            labels,
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names_are_checked() {
        let spec = serde_json::json!({"a": 1});
        assert!(Resource::new("BGPPeer", "tor-1", BTreeMap::new(), spec.clone()).is_ok());
        for (kind, name) in [
            ("", "x"),
            ("1Peer", "x"),
            ("BGP/Peer", "x"),
            ("BGP Peer", "x"),
            ("BGPPeer", ""),
            ("BGPPeer", "Tor"),
            ("BGPPeer", "a/b"),
            ("BGPPeer", "a\tb"),
        ] {
            assert!(
                Resource::new(kind, name, BTreeMap::new(), spec.clone()).is_err(),
                "{kind:?} {name:?}"
            );
        }
        let bad: Result<Resource, _> =
            serde_json::from_value(serde_json::json!({"kind": "X/", "name": "a", "spec": {}}));
        assert!(bad.is_err());
    }

    #[test]
    fn a_bad_name_or_kind_is_named_with_its_field_and_value() {
        let err = ResourceName::new("Tor").unwrap_err().to_string();
        assert!(err.starts_with("invalid resource name \"Tor\""), "{err}");
        let err = ResourceKind::new("BGP/Peer").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid resource kind \"BGP/Peer\""),
            "{err}"
        );
        let err = serde_json::from_value::<Resource>(
            serde_json::json!({"kind": "BGPPeer", "name": "a/b", "spec": {}}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid resource name \"a/b\""), "{err}");
    }

    #[test]
    fn kinds_and_names_compare_with_text() {
        const PEER: ResourceKind = ResourceKind::from_static("BGPPeer");
        assert_eq!(PEER, "BGPPeer");
        assert_eq!(PEER, ResourceKind::new("BGPPeer").unwrap());
        assert_eq!(
            ResourceName::from(NodeName::new("node-1").unwrap()),
            "node-1"
        );
        assert!(std::panic::catch_unwind(|| ResourceKind::from_static("BGP Peer")).is_err());
    }
}
