//! Opaque cluster resources: objects the IPAM does not interpret, stored beside its own
//! so that the agent keeps its BGP configuration (BGPConfiguration, BGPPeer, …) in the
//! same datastore, with the same compare-and-swap writes and the same watch.
//!
//! A [`Resource`] is a kind (a Kubernetes kind name such as `BGPPeer`), a name (a DNS
//! subdomain), labels and a JSON spec. The IPAM never looks inside the spec: the code
//! that owns the kind parses it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Longest kind name: a Kubernetes kind becomes a DNS label in its plural.
const MAX_KIND_LEN: usize = 63;

/// One stored resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawResource", deny_unknown_fields)]
pub struct Resource {
    /// The kind, e.g. `BGPPeer`: a letter then letters and digits.
    pub kind: String,
    /// The object's name: a DNS subdomain.
    pub name: String,
    /// `metadata.labels` of the object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The object's `spec`, as JSON; its owner gives it meaning.
    pub spec: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    kind: String,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    spec: serde_json::Value,
}

impl TryFrom<RawResource> for Resource {
    type Error = ModelError;
    fn try_from(r: RawResource) -> Result<Self, ModelError> {
        Resource::new(r.kind, r.name, r.labels, r.spec)
    }
}

impl Resource {
    /// A resource, with its kind and name checked (see [`check_kind`], [`check_name`]).
    pub fn new(
        kind: impl Into<String>,
        name: impl Into<String>,
        labels: BTreeMap<String, String>,
        spec: serde_json::Value,
    ) -> Result<Self, ModelError> {
        let (kind, name) = (kind.into(), name.into());
        check_kind(&kind)?;
        check_name(&name)?;
        Ok(Resource {
            kind,
            name,
            labels,
            spec,
        })
    }
}

/// A kind is a letter followed by letters and digits, at most 63 characters
/// (`BGPPeer`, `ServalNode`): it appears in file lines, etcd keys and API paths.
pub fn check_kind(kind: &str) -> Result<(), ModelError> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidName {
            what: "resource kind",
            value: kind.to_owned(),
        })
    }
}

/// A resource name is a DNS subdomain, as Kubernetes object names are.
pub fn check_name(name: &str) -> Result<(), ModelError> {
    // The same rule as node and pool names.
    crate::model::PoolName::new(name)
        .map(drop)
        .map_err(|_| ModelError::InvalidName {
            what: "resource name",
            value: name.to_owned(),
        })
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
}
