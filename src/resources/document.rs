//! Resource documents as people write them: multi-document YAML (or JSON) in the CRD
//! shape,
//!
//! ```yaml
//! apiVersion: serval.dev/v1
//! kind: BGPPeer
//! metadata:
//!   name: tor-1
//! spec:
//!   peerIP: 192.0.2.254
//!   asNumber: 65000
//! ```
//!
//! parsed into typed resources before anything is written: [`parse`] returns every
//! resource or every error, each naming the document, the field path and the value.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::{ClusterResource, FieldError, ResourceKind, API_VERSION};

/// What is wrong with one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentError {
    /// 1-based position of the document in the file.
    pub document: usize,
    /// `KIND NAME` when they could be read.
    pub label: Option<String>,
    pub error: FieldError,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(l) => write!(f, "document {} ({l}): {}", self.document, self.error),
            None => write!(f, "document {}: {}", self.document, self.error),
        }
    }
}

/// Every error of a file; nothing in it may be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DocumentErrors(pub Vec<DocumentError>);

impl fmt::Display for DocumentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Parses every document of `text`; empty documents are skipped.
pub fn parse(text: &str) -> Result<Vec<ClusterResource>, DocumentErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                errors.push(DocumentError {
                    document: n,
                    label: None,
                    error: FieldError::new("(document)", format!("not valid YAML: {e}")),
                });
                // After a syntax error the parser cannot find the next document.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match one(value) {
            Ok(r) => out.push(r),
            Err((label, errs)) => errors.extend(errs.into_iter().map(|error| DocumentError {
                document: n,
                label: label.clone(),
                error,
            })),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(DocumentErrors(errors))
    }
}

type OneError = (Option<String>, Vec<FieldError>);

fn one(value: Value) -> Result<ClusterResource, OneError> {
    let Value::Object(mut top) = value else {
        return Err((
            None,
            vec![FieldError::new(
                "(document)",
                format!(
                    "expected a mapping with apiVersion, kind, metadata and spec, found {value}"
                ),
            )],
        ));
    };
    let mut errors = Vec::new();
    let kind_text = top.get("kind").and_then(Value::as_str).map(str::to_owned);
    let name = top
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let label = match (&kind_text, &name) {
        (Some(k), Some(n)) => Some(format!("{k} {n}")),
        (Some(k), None) => Some(k.clone()),
        _ => None,
    };
    match top.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => errors.push(FieldError::new(
            "apiVersion",
            format!("{other} is not {API_VERSION:?}"),
        )),
        None => errors.push(FieldError::new(
            "apiVersion",
            format!("missing; use {API_VERSION}"),
        )),
    }
    let kind = match top.remove("kind") {
        Some(Value::String(k)) => match ResourceKind::ALL.into_iter().find(|x| x.as_str() == k) {
            Some(kind) => Some(kind),
            None => {
                errors.push(FieldError::new(
                    "kind",
                    format!(
                        "{k:?} is not a serval resource kind ({})",
                        ResourceKind::ALL.map(ResourceKind::as_str).join(", ")
                    ),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new("kind", format!("{other} is not a kind")));
            None
        }
        None => {
            errors.push(FieldError::new("kind", "missing"));
            None
        }
    };
    let labels = match top.remove("metadata") {
        Some(Value::Object(meta)) => metadata(meta, &mut errors),
        Some(other) => {
            errors.push(FieldError::new(
                "metadata",
                format!("{other} is not a mapping"),
            ));
            BTreeMap::new()
        }
        None => {
            errors.push(FieldError::new("metadata.name", "missing"));
            BTreeMap::new()
        }
    };
    let spec = top
        .remove("spec")
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    // `status` is the cluster's to write; anything else is a mistake.
    top.remove("status");
    for key in top.keys() {
        errors.push(FieldError::new(key.clone(), "unknown field"));
    }
    let (Some(kind), Some(name)) = (kind, name.clone()) else {
        if name.is_none() && !errors.iter().any(|e| e.path.starts_with("metadata")) {
            errors.push(FieldError::new("metadata.name", "missing"));
        }
        return Err((label, errors));
    };
    match ClusterResource::from_parts(kind, &name, labels, spec) {
        Ok(r) if errors.is_empty() => Ok(r),
        Ok(_) => Err((label, errors)),
        Err(more) => {
            errors.extend(more);
            Err((label, errors))
        }
    }
}

fn metadata(
    mut meta: serde_json::Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, String> {
    match meta.remove("name") {
        Some(Value::String(_)) => {}
        Some(other) => errors.push(FieldError::new(
            "metadata.name",
            format!("{other} is not a string"),
        )),
        None => errors.push(FieldError::new("metadata.name", "missing")),
    }
    let mut labels = BTreeMap::new();
    match meta.remove("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        labels.insert(k, s);
                    }
                    other => errors.push(FieldError::new(
                        format!("metadata.labels.{k}"),
                        format!("{other} is not a string (quote it)"),
                    )),
                }
            }
        }
        Some(other) => errors.push(FieldError::new(
            "metadata.labels",
            format!("{other} is not a mapping"),
        )),
    }
    // What kubectl and the API server add is tolerated and not stored.
    for ignored in [
        "annotations",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        meta.remove(ignored);
    }
    for key in meta.keys() {
        errors.push(FieldError::new(format!("metadata.{key}"), "unknown field"));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Spec;

    const GOOD: &str = r#"
apiVersion: serval.dev/v1
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64512
  communities:
    - name: pods
      value: "64512:100"
  prefixAdvertisements:
    - cidr: 10.65.0.0/16
      communities: [pods, "64512:1:2"]
  serviceClusterIPs:
    - cidr: 10.96.0.0/12
---
apiVersion: serval.dev/v1
kind: BGPPeer
metadata:
  name: tor
spec:
  peerIP: 192.0.2.254
  asNumber: 65000
  nodeSelector: rack == 'r1'
  filters: [only-pods]
  password:
    value: s3cret
---
# comments and empty documents are fine
---
apiVersion: serval.dev/v1
kind: BGPFilter
metadata:
  name: only-pods
spec:
  exportV4:
    - action: Accept
      matchOperator: In
      cidr: 10.65.0.0/16
      prefixLength: {min: 26, max: 32}
    - action: Reject
---
apiVersion: serval.dev/v1
kind: ServalNode
metadata:
  name: node-1
  labels:
    rack: r1
spec:
  bgp:
    ipv4Address: 192.0.2.10/24
    routeReflectorClusterID: 224.0.0.1
  vxlanTunnelMACAddr: "66:cf:00:0a:bc:01"
"#;

    #[test]
    fn good_documents_parse_into_typed_resources() {
        let rs = parse(GOOD).unwrap();
        let kinds: Vec<_> = rs.iter().map(ClusterResource::kind).collect();
        assert_eq!(
            kinds,
            vec![
                ResourceKind::BgpConfiguration,
                ResourceKind::BgpPeer,
                ResourceKind::BgpFilter,
                ResourceKind::ServalNode
            ]
        );
        let Spec::BgpPeer(p) = &rs[1].spec else {
            panic!()
        };
        assert_eq!(
            p.peer_ip.unwrap().ip,
            "192.0.2.254".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(rs[3].labels["rack"], "r1");
        // The document form parses back to the same resource.
        for r in &rs {
            let text = serde_yaml::to_string(&r.to_document()).unwrap();
            assert_eq!(&parse(&text).unwrap()[0], r, "{text}");
        }
    }

    fn errors_of(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn bad_documents_name_document_field_and_value() {
        let head = "apiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n";
        let cases: &[(&str, &[&str])] = &[
            (
                "  peerIP: 10.0.0.300\n  asNumber: 65000\n",
                &["document 1 (BGPPeer tor): spec.peerIP", "10.0.0.300"],
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 65000\n  keepOriginalNexthop: true\n",
                &["spec.keepOriginalNexthop: unknown field"],
            ),
            ("  peerIP: 10.0.0.1\n", &["spec.asNumber", "required"]),
            (
                "  peerIP: 10.0.0.1\n  asNumber: x\n",
                &["spec.asNumber", "\"x\""],
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  nodeSelector: \"rack in (a\"\n",
                &["spec.nodeSelector", "rack in (a"],
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  keepAliveTime: 10 seconds\n",
                &["spec.keepAliveTime", "10 seconds"],
            ),
            (
                "  peerIP: 10.0.0.1\n  asNumber: 1\n  password: {value: a, file: /x}\n",
                &["spec.password", "exactly one"],
            ),
        ];
        for (spec, wants) in cases {
            let errs = errors_of(&format!("{head}{spec}"));
            let all = errs.join("\n");
            for want in *wants {
                assert!(all.contains(want), "{spec:?}: {all:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn envelope_errors() {
        let cases: &[(&str, &str)] = &[
            ("apiVersion: v1\nkind: BGPPeer\nmetadata: {name: a}\nspec: {}\n", "apiVersion"),
            (
                "apiVersion: serval.dev/v1\nkind: IPPool\nmetadata: {name: a}\n",
                "\"IPPool\" is not a serval resource kind",
            ),
            ("apiVersion: serval.dev/v1\nkind: BGPFilter\nspec: {}\n", "metadata.name: missing"),
            (
                "apiVersion: serval.dev/v1\nkind: BGPFilter\nmetadata: {name: Bad_Name}\n",
                "metadata.name",
            ),
            (
                "apiVersion: serval.dev/v1\nkind: BGPFilter\nmetadata: {name: a, labelz: {}}\n",
                "metadata.labelz: unknown field",
            ),
            (
                "apiVersion: serval.dev/v1\nkind: BGPFilter\nmetadata: {name: a}\nspce: {}\n",
                "spce: unknown field",
            ),
            (
                "apiVersion: serval.dev/v1\nkind: BGPFilter\nmetadata: {name: a}\nspec:\n  exportV4:\n    - action: Accept\n      cidr: 10.0.0.0/8\n",
                "spec.exportV4[0].matchOperator: required with cidr",
            ),
            (
                "apiVersion: serval.dev/v1\nkind: BGPFilter\nmetadata: {name: a}\nspec:\n  exportV6:\n    - action: Accept\n      matchOperator: In\n      cidr: 10.0.0.0/8\n",
                "spec.exportV6[0].cidr",
            ),
            ("- a\n- b\n", "expected a mapping"),
            ("a: [\n", "not valid YAML"),
        ];
        for (text, want) in cases {
            let all = errors_of(text).join("\n");
            assert!(all.contains(want), "{text:?}: {all:?} lacks {want:?}");
        }
    }

    #[test]
    fn one_bad_document_fails_the_file_and_names_it() {
        let text = format!(
            "{GOOD}\n---\napiVersion: serval.dev/v1\nkind: BGPPeer\nmetadata:\n  name: bad\nspec:\n  peerIP: nope\n  asNumber: 1\n"
        );
        let errs = errors_of(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("document 6 (BGPPeer bad): spec.peerIP"),
            "{errs:?}"
        );
    }
}
