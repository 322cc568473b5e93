//! The six verbs, each tying the pure decisions of [`crate::plugin`] to the IO of
//! [`crate::veth`], [`crate::ipam`] and [`crate::kube`].
//!
//! ADD allocates first and wires second; when wiring fails it deletes what it built
//! (the host veth, which takes the pod side with it) and releases the handle, so a
//! failed ADD leaves nothing. A crash in the middle leaves at most an allocation and a
//! veth, which the next ADD or DEL of the attachment, or GC, removes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipam::allocator::NodeInfo;
use ipam::model::{HandleId, IpPool, NodeName};
use ipam::store::select::Datastore;
use ipam::store::Store;
use serde_json::Value;

use crate::config::{NetConf, NodeSource};
use crate::decide::{self, Annotations};
use crate::env::{DelTarget, Target};
use crate::ipam::NodeIpam;
use crate::netlink::{Netns, Nl};
use crate::spec::{CniError, ErrorCode};
use crate::{kube, veth};

/// Opens the pod's namespace: a path that does not exist is code 3 (the container is
/// gone; nothing to clean up), one that is not a namespace code 4.
fn open_netns(path: &Path) -> Result<Netns, CniError> {
    Netns::open(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::UnknownContainer
        } else {
            ErrorCode::InvalidEnvironment
        };
        CniError::new(
            code,
            format!(
                "CNI_NETNS {} is not a usable network namespace",
                path.display()
            ),
        )
        .details(e.to_string())
    })
}

fn dataplane(e: crate::netlink::NetError) -> CniError {
    CniError::new(ErrorCode::Dataplane, "configuring the pod's network failed")
        .details(e.to_string())
}

/// The node this plugin runs on: the configuration's `nodename`, else the agent's file,
/// else (when allowed) the host name.
pub fn node_name(src: &NodeSource) -> Result<NodeName, CniError> {
    let bad = |n: &str, from: &str, e: ipam::ModelError| {
        CniError::new(
            ErrorCode::InvalidConfig,
            format!("node name {n:?} from {from} is invalid"),
        )
        .details(e.to_string())
    };
    if let Some(n) = &src.explicit {
        return NodeName::new(n.clone()).map_err(|e| bad(n, "nodename", e));
    }
    match std::fs::read_to_string(&src.file) {
        Ok(text) => {
            let n = text.trim();
            return NodeName::new(n).map_err(|e| bad(n, &src.file.display().to_string(), e));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && src.file_optional => {}
        Err(e) => {
            return Err(CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "cannot read the node name from {}: is the serval agent running on this node?",
                    src.file.display()
                ),
            )
            .details(e.to_string()))
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| {
        CniError::new(ErrorCode::InvalidConfig, "cannot read the host name").details(e.to_string())
    })?;
    let n = host.trim().to_ascii_lowercase();
    NodeName::new(n.clone()).map_err(|e| bad(&n, "the host name", e))
}

/// The store, and a Kubernetes client when the store is Kubernetes.
async fn open_store(conf: &NetConf) -> Result<(Arc<dyn Store>, Option<::kube::Client>), CniError> {
    match &conf.datastore {
        Datastore::Kubernetes => {
            let client = kube::client(conf.kubeconfig.as_deref()).await?;
            let store = ipam::store::kube::KubeStore::new(client.clone());
            Ok((Arc::new(store), Some(client)))
        }
        other => {
            let store = ipam::store::select::open(other).await.map_err(|e| {
                crate::ipam::cni_error(&format!("cannot open datastore {other}"), e.into())
            })?;
            Ok((store, None))
        }
    }
}

/// The node with its labels (Kubernetes store: from the Node object; other stores have
/// no labels to give, so pools with a node selector do not match).
async fn node_info(name: NodeName, client: Option<&::kube::Client>) -> Result<NodeInfo, CniError> {
    let mut info = NodeInfo::new(name);
    if let Some(c) = client {
        info.labels = kube::node_labels(c, info.name.as_str()).await?;
    }
    Ok(info)
}

/// Test hook: stop at `point` until killed, after writing our pid to a marker file.
#[cfg(feature = "fault-injection")]
fn fault(point: &str) {
    let Ok(spec) = std::env::var("SERVAL_CNI_FAULT") else {
        return;
    };
    let Some((at, marker)) = spec.split_once(':') else {
        return;
    };
    if at == point {
        let _ = std::fs::write(marker, std::process::id().to_string());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
fn fault(_point: &str) {}

pub async fn add(conf: &NetConf, t: &Target) -> Result<Value, CniError> {
    let netns = open_netns(&t.netns)?;
    let att = &t.attachment;
    let host_name = decide::host_veth_name(att, &t.args);
    let handle = decide::handle_id(&conf.name, att);
    let node = node_name(&conf.node)?;
    let (store, client) = open_store(conf).await?;
    let node = node_info(node, client.as_ref()).await?;
    // The namespace's labels are known on the kubernetes datastore only; elsewhere a
    // pod takes no address from a pool with a namespaceSelector.
    let (pod_ann, ns_ann, ns_labels) = match (&client, t.args.pod()) {
        (Some(c), Some((ns, pod))) => {
            let (p, n) = tokio::join!(
                kube::pod_annotations(c, ns, pod),
                kube::namespace_metadata(c, ns)
            );
            let (n_ann, n_labels) = n?;
            (
                Annotations::parse(&p?, &format!("pod {ns}/{pod}"))?,
                Annotations::parse(&n_ann, &format!("namespace {ns}"))?,
                Some(n_labels),
            )
        }
        _ => (Annotations::default(), Annotations::default(), None),
    };
    let nipam = NodeIpam::new(store, &conf.ipam_lock_file);
    let names_pools = !conf.ipam.ipv4_pools.is_empty()
        || !conf.ipam.ipv6_pools.is_empty()
        || [&pod_ann, &ns_ann]
            .iter()
            .any(|a| a.ipv4_pools.is_some() || a.ipv6_pools.is_some());
    let mut pools: Option<Vec<IpPool>> = None;
    if names_pools {
        pools = Some(nipam.pools().await?);
    }
    let req = decide::address_request(
        &conf.ipam,
        &conf.runtime_ips,
        &t.args,
        &pod_ann,
        &ns_ann,
        pools.as_deref().unwrap_or_default(),
    )?;
    let addresses = nipam
        .assign(&node, &handle, &req, t.args.pod(), ns_labels)
        .await?;
    tracing::info!(%handle, ?addresses, "addresses assigned");
    fault("after-ipam");

    let built = wire(conf, t, &netns, &host_name, &addresses, &nipam, &mut pools).await;
    let (wiring, built) = match built {
        Ok(ok) => ok,
        Err(e) => {
            undo(conf, t, &host_name, &handle, &nipam).await;
            return Err(e);
        }
    };
    fault("after-veth");
    let ours = decide::result(
        &wiring,
        &built.routes,
        &built.pod_mac,
        &t.netns.to_string_lossy(),
    );
    let result = decide::merge(conf.prev_result.as_ref(), ours);
    Ok(result.to_json(conf.version))
}

async fn wire(
    conf: &NetConf,
    t: &Target,
    netns: &Netns,
    host_name: &str,
    addresses: &[IpAddr],
    nipam: &NodeIpam,
    pools: &mut Option<Vec<IpPool>>,
) -> Result<(decide::Wiring, veth::Built), CniError> {
    let agent_mtu = std::fs::read_to_string(&conf.mtu.file).ok();
    let needs_pool = conf.mtu.explicit.is_none()
        && agent_mtu
            .as_deref()
            .and_then(|m| m.trim().parse::<u32>().ok())
            .is_none();
    if needs_pool && pools.is_none() {
        *pools = Some(nipam.pools().await?);
    }
    let pool = pools.as_deref().and_then(|ps| {
        let first = addresses.first()?;
        ps.iter().find(|p| p.cidr.contains(first))
    });
    let mtu = decide::mtu(conf.mtu.explicit, agent_mtu.as_deref(), pool);
    let wiring = decide::wiring(
        &conf.name,
        &t.attachment,
        host_name,
        addresses,
        mtu,
        conf.allow_ip_forwarding,
    );
    let host = Nl::connect(None).map_err(dataplane)?;
    let built = veth::build(&host, netns, &wiring)
        .await
        .map_err(dataplane)?;
    Ok((wiring, built))
}

/// Rolls back a failed ADD: the veth (the pod side goes with it), then the addresses.
async fn undo(conf: &NetConf, t: &Target, host_name: &str, handle: &HandleId, nipam: &NodeIpam) {
    let alias = decide::veth_alias(&conf.name, &t.attachment);
    match Nl::connect(None) {
        Ok(host) => {
            if let Err(e) = veth::delete_host(&host, host_name, &alias).await {
                tracing::error!(error = %e, "rollback: deleting the host veth failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "rollback: no netlink socket"),
    }
    if let Err(e) = nipam.release(handle).await {
        tracing::error!(error = %e, "rollback: releasing the addresses failed");
    }
}

pub async fn del(conf: &NetConf, t: &DelTarget) -> Result<(), CniError> {
    let att = &t.attachment;
    let host_name = decide::host_veth_name(att, &t.args);
    let alias = decide::veth_alias(&conf.name, att);
    let handle = decide::handle_id(&conf.name, att);
    let mut first_error = None;
    if let Some(path) = &t.netns {
        match Netns::open(path) {
            Ok(ns) => match veth::delete_in_pod(&ns, att.ifname.as_str()).await {
                Ok(deleted) => tracing::info!(deleted, "pod interface"),
                Err(e) => first_error = Some(dataplane(e)),
            },
            // The namespace is gone, and with it the veth.
            Err(e) => tracing::info!(netns = %path.display(), error = %e, "no namespace to clean"),
        }
    }
    // A host veth whose pod namespace can no longer be opened (its path was unmounted
    // while something still holds the namespace).
    match Nl::connect(None) {
        Ok(host) => match veth::delete_host(&host, &host_name, &alias).await {
            Ok(deleted) => tracing::info!(deleted, veth = %host_name, "host veth"),
            Err(e) => {
                first_error.get_or_insert(dataplane(e));
            }
        },
        Err(e) => {
            first_error.get_or_insert(dataplane(e));
        }
    }
    let (store, _) = open_store(conf).await?;
    let nipam = NodeIpam::new(store, &conf.ipam_lock_file);
    let released = nipam.release(&handle).await?;
    tracing::info!(%handle, ?released, "addresses released");
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub async fn check(conf: &NetConf, t: &Target) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(ErrorCode::InvalidConfig, "CHECK needs prevResult")
            .details("the runtime passes the result of the ADD it checks")
    })?;
    let netns = open_netns(&t.netns)?;
    let att = &t.attachment;
    let host_name = decide::host_veth_name(att, &t.args);
    let expected = decide::expected(
        prev,
        &conf.name,
        att,
        &host_name,
        &t.netns.to_string_lossy(),
    )?;
    let host = Nl::connect(None).map_err(dataplane)?;
    let mut observed = veth::observe(&host, &netns, att.ifname.as_str(), &host_name)
        .await
        .map_err(dataplane)?;
    let (store, _) = open_store(conf).await?;
    let nipam = NodeIpam::new(store, &conf.ipam_lock_file);
    observed.held = nipam.held(&decide::handle_id(&conf.name, att)).await?;
    let problems = decide::compare(&expected, &observed);
    if problems.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::CheckFailed,
        format!(
            "the pod's network differs from what ADD set up ({} problem{})",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
    )
    .details(problems.join("; ")))
}

pub async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "GC needs cni.dev/valid-attachments",
        )
        .details("without the list every attachment would look stale")
    })?;
    let live: BTreeSet<HandleId> = valid
        .iter()
        .map(|a| decide::handle_id(&conf.name, a))
        .collect();
    let keys: BTreeSet<(String, String)> = valid
        .iter()
        .map(|a| (a.container_id.to_string(), a.ifname.to_string()))
        .collect();
    let node = node_name(&conf.node)?;
    let (store, _) = open_store(conf).await?;
    let nipam = NodeIpam::new(store, &conf.ipam_lock_file);
    let freed = nipam
        .gc(&node, &decide::handle_prefix(&conf.name), live)
        .await?;
    tracing::info!(?freed, "stale allocations released");
    let host = Nl::connect(None).map_err(dataplane)?;
    let deleted = veth::collect(&host, &conf.name, &keys)
        .await
        .map_err(dataplane)?;
    tracing::info!(?deleted, "stale host veths deleted");
    Ok(())
}

pub async fn status(conf: &NetConf) -> Result<(), CniError> {
    let unavailable =
        |msg: String, details: String| CniError::new(ErrorCode::NotAvailable, msg).details(details);
    if !conf.ready_file.exists() {
        return Err(unavailable(
            "the serval agent is not ready on this node".into(),
            format!(
                "{} does not exist; the agent creates it once it routes pods",
                conf.ready_file.display()
            ),
        ));
    }
    let as_unavailable = |e: CniError| unavailable(e.msg, e.details);
    let node = node_name(&conf.node).map_err(as_unavailable)?;
    let (store, client) = open_store(conf).await.map_err(as_unavailable)?;
    let node = node_info(node, client.as_ref())
        .await
        .map_err(as_unavailable)?;
    let nipam = NodeIpam::new(store, &conf.ipam_lock_file);
    match nipam
        .capacity(&node, conf.ipam.assign_ipv4, conf.ipam.assign_ipv6)
        .await
        .map_err(as_unavailable)?
    {
        Ok(()) => Ok(()),
        Err(why) => Err(unavailable("no address is left for new pods".into(), why)),
    }
}
