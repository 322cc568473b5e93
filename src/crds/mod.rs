//! The CustomResourceDefinitions of every serval resource, generated from the Rust types
//! (`kube::CustomResourceExt::crd()`), strengthened with the validations of `rules.rs`,
//! and written one YAML file per CRD into `crds/` and the Helm chart's `crds/`.
//!
//! API group `serval.dev`, version `v1`, every kind cluster-scoped:
//!
//! | kind               | Rust type                                    | written by        |
//! |--------------------|----------------------------------------------|-------------------|
//! | `BGPConfiguration` | `resources::bgp_configuration`               | people            |
//! | `BGPPeer`          | `resources::bgp_peer`                        | people            |
//! | `BGPFilter`        | `resources::bgp_filter`                      | people            |
//! | `ServalNode`       | `resources::serval_node`                     | each node's agent |
//! | `ServalNodeStatus` | `resources::node_status`                     | people (spec), agent (status) |
//! | `IPReservation`    | `resources::ip_reservation`                  | people            |
//! | `BFDProfile`       | `resources::bfd_profile`                     | people            |
//! | `IPPool`           | `ipam::crd`                                  | people            |
//! | `IPAMBlock`, `BlockAffinity`, `IPAMHandle`, `IPAMConfig` | `ipam::crd` | the IPAM       |
//!
//! The output is deterministic (same types, same bytes), so CI regenerates and compares:
//! `serval crds --check` and `tests/crds.rs` fail when a file is stale.

mod rules;
pub mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::resources::{
    bfd_profile, bgp_configuration, bgp_filter, bgp_peer, ip_reservation, node_status, serval_node,
};

/// The directories the generator keeps, relative to the repository root: the plain
/// manifests and the Helm chart's copy (Helm installs what is in a chart's `crds/`).
pub const OUT_DIRS: [&str; 2] = ["crds", "charts/serval/crds"];

/// What went wrong building the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error(transparent)]
    NoSuchPath(#[from] schema::NoSuchPath),
    #[error("{kind}: the strengthened CRD is not a valid CustomResourceDefinition: {source}")]
    Shape {
        kind: String,
        source: serde_json::Error,
    },
    #[error("{kind}: YAML: {source}")]
    Yaml {
        kind: String,
        source: serde_yaml::Error,
    },
}

/// One generated file.
#[derive(Clone, Debug)]
pub struct CrdFile {
    /// `serval.dev_<plural>.yaml`, as controller-gen names them.
    pub file_name: String,
    /// The file's text, header included.
    pub text: String,
    /// The CRD as JSON (what the text holds).
    pub crd: Value,
    pub kind: String,
}

/// The CRDs exactly as derived from the types, before strengthening.
pub fn derived() -> Vec<CustomResourceDefinition> {
    vec![
        bgp_configuration::BGPConfiguration::crd(),
        bgp_peer::BGPPeer::crd(),
        bgp_filter::BGPFilter::crd(),
        serval_node::ServalNode::crd(),
        node_status::ServalNodeStatus::crd(),
        ip_reservation::IPReservation::crd(),
        bfd_profile::BFDProfile::crd(),
        ipam::crd::IPPool::crd(),
        ipam::crd::IPAMBlock::crd(),
        ipam::crd::BlockAffinity::crd(),
        ipam::crd::IPAMHandle::crd(),
        ipam::crd::IPAMConfig::crd(),
    ]
}

/// Applies the rules of `rules.rs` to one derived CRD; returns the CRD as JSON (integer
/// bounds stay integers, which the typed form would turn into floats) after checking
/// that it still deserializes as a CustomResourceDefinition.
pub fn strengthen(crd: &CustomResourceDefinition) -> Result<Value, CrdError> {
    let kind = crd.spec.names.kind.clone();
    let shape = |source| CrdError::Shape {
        kind: kind.clone(),
        source,
    };
    let mut value = serde_json::to_value(crd).map_err(shape)?;
    let versions = value["spec"]["versions"]
        .as_array_mut()
        .map(|v| v.iter_mut())
        .into_iter()
        .flatten();
    for version in versions {
        let root = &mut version["schema"]["openAPIV3Schema"];
        if let Some(d) = rules::description(&kind) {
            root["description"] = Value::String(d.to_owned());
        }
        schema::drop_rust_formats(root);
        schema::integral_numbers(root);
        for p in rules::patches(&kind) {
            let node = schema::node_mut(root, &p.path).ok_or_else(|| schema::NoSuchPath {
                kind: kind.clone(),
                path: p.path.clone(),
            })?;
            schema::merge(node, p.with);
        }
    }
    serde_json::from_value::<CustomResourceDefinition>(value.clone()).map_err(shape)?;
    Ok(value)
}

/// The YAML form with every mapping's keys sorted, so the bytes depend on nothing but
/// the content (not on whether some dependency turned on serde_json's `preserve_order`).
fn sorted_yaml(v: &Value) -> serde_yaml::Value {
    match v {
        Value::Null => serde_yaml::Value::Null,
        Value::Bool(b) => serde_yaml::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                serde_yaml::Value::Number(u.into())
            } else if let Some(i) = n.as_i64() {
                serde_yaml::Value::Number(i.into())
            } else {
                serde_yaml::Value::Number(n.as_f64().unwrap_or_default().into())
            }
        }
        Value::String(s) => serde_yaml::Value::String(s.clone()),
        Value::Array(a) => serde_yaml::Value::Sequence(a.iter().map(sorted_yaml).collect()),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let mut m = serde_yaml::Mapping::new();
            for k in keys {
                m.insert(serde_yaml::Value::String(k.clone()), sorted_yaml(&o[k]));
            }
            serde_yaml::Value::Mapping(m)
        }
    }
}

fn header() -> String {
    format!(
        "# Generated by `serval crds` from the Rust types ({}): do not edit.\n\
         # Change the types or src/crds/rules.rs, then run `cargo run -- crds`.\n",
        crate::resources::API_VERSION
    )
}

/// Every CRD file, in a fixed order.
pub fn files() -> Result<Vec<CrdFile>, CrdError> {
    derived()
        .into_iter()
        .map(|derived| {
            let kind = derived.spec.names.kind.clone();
            let crd = strengthen(&derived)?;
            let yaml =
                serde_yaml::to_string(&sorted_yaml(&crd)).map_err(|source| CrdError::Yaml {
                    kind: kind.clone(),
                    source,
                })?;
            Ok(CrdFile {
                file_name: format!("{}_{}.yaml", derived.spec.group, derived.spec.names.plural),
                text: format!("{}---\n{yaml}", header()),
                crd,
                kind,
            })
        })
        .collect()
}

/// How a directory differs from the generated files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    Missing(PathBuf),
    /// A `serval.dev_*.yaml` file the generator does not make (a removed kind).
    Stale(PathBuf),
    /// The first line that differs, 1-based, with both versions of it.
    Changed {
        path: PathBuf,
        line: usize,
        on_disk: String,
        generated: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing(p) => write!(f, "{}: missing", p.display()),
            Difference::Stale(p) => write!(f, "{}: not generated any more", p.display()),
            Difference::Changed {
                path,
                line,
                on_disk,
                generated,
            } => write!(
                f,
                "{}:{line}: differs\n  on disk:   {on_disk}\n  generated: {generated}",
                path.display()
            ),
        }
    }
}

fn ours(name: &str) -> bool {
    name.starts_with("serval.dev_") && name.ends_with(".yaml")
}

/// Compares `dir` with the generated files.
pub fn compare(dir: &Path, files: &[CrdFile]) -> std::io::Result<Vec<Difference>> {
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(&f.file_name);
        let on_disk = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.push(Difference::Missing(path));
                continue;
            }
            Err(e) => return Err(e),
        };
        if on_disk != f.text {
            let mut a = on_disk.lines();
            let mut b = f.text.lines();
            let mut line = 1;
            loop {
                match (a.next(), b.next()) {
                    (x, y) if x == y && x.is_some() => line += 1,
                    (x, y) => {
                        out.push(Difference::Changed {
                            path: path.clone(),
                            line,
                            on_disk: x.unwrap_or("(end of file)").to_owned(),
                            generated: y.unwrap_or("(end of file)").to_owned(),
                        });
                        break;
                    }
                }
            }
        }
    }
    if dir.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| ours(n) && !files.iter().any(|f| f.file_name == *n))
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|n| Difference::Stale(dir.join(n))));
    }
    Ok(out)
}

/// Writes the files into `dir` (created if needed) and removes stale ones; returns the
/// paths written or removed.
pub fn write(dir: &Path, files: &[CrdFile]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut touched = Vec::new();
    for d in compare(dir, files)? {
        match d {
            Difference::Stale(p) => {
                std::fs::remove_file(&p)?;
                touched.push(p);
            }
            Difference::Missing(p) | Difference::Changed { path: p, .. } => {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if let Some(f) = files.iter().find(|f| f.file_name == name) {
                    std::fs::write(&p, &f.text)?;
                    touched.push(p);
                }
            }
        }
    }
    Ok(touched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_strengthens_and_has_a_description() {
        let files = files().unwrap();
        assert_eq!(files.len(), 12);
        for f in &files {
            let kind = &f.kind;
            assert!(rules::description(kind).is_some(), "{kind}");
            assert!(f.text.starts_with("# Generated by `serval crds`"));
            assert!(!f.text.contains("Auto-generated derived type"), "{kind}");
            assert!(!f.text.contains(".0\n"), "{kind}: float bounds left");
        }
    }

    #[test]
    fn a_rule_for_a_missing_field_is_an_error() {
        let mut crd = bgp_peer::BGPPeer::crd();
        crd.spec.names.kind = "IPPool".into();
        let e = strengthen(&crd).unwrap_err();
        assert!(e.to_string().contains("IPPool"), "{e}");
    }

    #[test]
    fn compare_finds_missing_changed_and_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = files().unwrap();
        assert_eq!(compare(dir.path(), &files).unwrap().len(), files.len());
        write(dir.path(), &files).unwrap();
        assert_eq!(compare(dir.path(), &files).unwrap(), vec![]);
        let first = dir.path().join(&files[0].file_name);
        let edited = files[0].text.replacen("served: true", "served: false", 1);
        std::fs::write(&first, edited).unwrap();
        std::fs::write(dir.path().join("serval.dev_widgets.yaml"), "").unwrap();
        std::fs::write(dir.path().join("README.md"), "").unwrap();
        let diffs = compare(dir.path(), &files).unwrap();
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(
            matches!(&diffs[0], Difference::Changed { on_disk, .. } if on_disk.contains("served: false"))
        );
        assert!(
            matches!(&diffs[1], Difference::Stale(p) if p.ends_with("serval.dev_widgets.yaml"))
        );
        let touched = write(dir.path(), &files).unwrap();
        assert_eq!(touched.len(), 2);
        assert_eq!(compare(dir.path(), &files).unwrap(), vec![]);
        assert!(dir.path().join("README.md").exists());
    }
}
