//! A real kube-apiserver (the test bed's, see `serval_integration::kube`) with serval's
//! CRDs from `crds/` applied, established and served.

use std::path::Path;
use std::time::{Duration, Instant};

use serval_integration::kube::ApiServer;
use serval_integration::{wait_until, Poll};

/// The IPAM kinds the Kubernetes store reads and writes: (kind, plural).
pub const IPAM_KINDS: [(&str, &str); 5] = [
    ("IPPool", "ippools"),
    ("IPAMBlock", "ipamblocks"),
    ("BlockAffinity", "blockaffinities"),
    ("IPAMHandle", "ipamhandles"),
    ("IPAMConfig", "ipamconfigs"),
];

/// The plural Kubernetes (and kube's dynamic API) forms for a test kind.
pub fn plural(kind: &str) -> String {
    format!("{}s", kind.to_lowercase())
}

/// CRDs for resource kinds of the store's tests (not serval's): `serval.dev/v1`,
/// cluster-scoped like serval's own, with opaque specs.
fn opaque_crds(kinds: &[&str]) -> String {
    kinds
        .iter()
        .map(|kind| {
            let (plural, singular) = (plural(kind), kind.to_lowercase());
            format!(
                "apiVersion: apiextensions.k8s.io/v1\n\
                 kind: CustomResourceDefinition\n\
                 metadata: {{name: {plural}.serval.dev}}\n\
                 spec:\n  group: serval.dev\n  scope: Cluster\n\
                 \x20 names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}\n\
                 \x20 versions:\n  - name: v1\n    served: true\n    storage: true\n\
                 \x20   schema:\n      openAPIV3Schema:\n        type: object\n\
                 \x20       properties:\n          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Starts a server with serval's CRDs and opaque CRDs for `extra_kinds`, and waits until
/// the IPAM kinds and the extra ones are served.
pub fn start(dir: &Path, extra_kinds: &[&str]) -> serval_integration::Result<ApiServer> {
    let t = Instant::now();
    let api = ApiServer::start(dir)?;
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    api.kubectl(&["apply", "--server-side", "-f", &crds.display().to_string()])?;
    if !extra_kinds.is_empty() {
        api.kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            &opaque_crds(extra_kinds),
        )?;
    }
    api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "--all",
    ])?;
    // Established can come a moment before the new endpoints answer.
    let plurals: Vec<String> = IPAM_KINDS
        .iter()
        .map(|(_, p)| (*p).to_owned())
        .chain(extra_kinds.iter().map(|k| plural(k)))
        .collect();
    let plurals = plurals.join(",");
    wait_until(Duration::from_secs(60), "every CRD served", || {
        match api.kubectl(&["get", &plurals, "-o", "name"]) {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(e.to_string()),
        }
    })?;
    eprintln!(
        "kube-apiserver {} with serval's CRDs ready in {:?}",
        api.version()?,
        t.elapsed()
    );
    Ok(api)
}
