//! The Kubernetes API, for the Kubernetes datastore: the client (from the kubeconfig
//! `serval install-cni` wrote, since the plugin runs on the host and not in a pod), pod
//! and namespace annotations that choose pools or fix addresses, and the node's labels
//! that pool node selectors match.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{Api, Client};

use crate::spec::{CniError, ErrorCode};

/// A failed API call as the runtime shows it: what was asked, why the server said no,
/// and for refused credentials where the token comes from.
fn api_error(what: String, e: kube::Error) -> CniError {
    match e {
        kube::Error::Api(s) if s.code == 401 => CniError::new(
            ErrorCode::Kubernetes,
            format!(
                "{what}: the API server refused the kubeconfig's credentials (401 Unauthorized)"
            ),
        )
        .details(format!(
            "the token is expired or revoked: `serval install-cni --watch` rewrites the \
             kubeconfig with the service account's current token ({})",
            s.message
        )),
        kube::Error::Api(s) => CniError::new(ErrorCode::Kubernetes, what)
            .details(format!("{} {}: {}", s.code, s.reason, s.message)),
        other => CniError::new(ErrorCode::Kubernetes, what).details(other.to_string()),
    }
}

/// A client from `kubeconfig`, else the in-cluster configuration or `KUBECONFIG`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, CniError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidConfig,
                    format!("cannot read kubeconfig {}", path.display()),
                )
                .details(e.to_string())
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    CniError::new(
                        ErrorCode::InvalidConfig,
                        format!("kubeconfig {} is not usable", path.display()),
                    )
                    .details(e.to_string())
                })?
        }
        None => kube::Config::infer().await.map_err(|e| {
            CniError::new(
                ErrorCode::InvalidConfig,
                "no Kubernetes configuration: set kubernetes.kubeconfig",
            )
            .details(e.to_string())
        })?,
    };
    Client::try_from(config).map_err(|e| api_error("cannot build a Kubernetes client".into(), e))
}

/// A pod's annotations; a pod that is gone has none.
pub async fn pod_annotations(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<BTreeMap<String, String>, CniError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let got = api
        .get_opt(pod)
        .await
        .map_err(|e| api_error(format!("cannot read pod {namespace}/{pod}"), e))?;
    Ok(got.and_then(|p| p.metadata.annotations).unwrap_or_default())
}

/// A namespace's annotations and labels (what pools' `namespaceSelector` matches).
pub async fn namespace_metadata(
    client: &Client,
    namespace: &str,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), CniError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let got = api
        .get_opt(namespace)
        .await
        .map_err(|e| api_error(format!("cannot read namespace {namespace}"), e))?;
    let meta = got.map(|n| n.metadata).unwrap_or_default();
    Ok((
        meta.annotations.unwrap_or_default(),
        meta.labels.unwrap_or_default(),
    ))
}

/// A node's labels.
pub async fn node_labels(
    client: &Client,
    node: &str,
) -> Result<BTreeMap<String, String>, CniError> {
    let api: Api<Node> = Api::all(client.clone());
    let got = api
        .get_opt(node)
        .await
        .map_err(|e| api_error(format!("cannot read node {node}"), e))?;
    Ok(got.and_then(|n| n.metadata.labels).unwrap_or_default())
}
