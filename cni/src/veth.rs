//! Building, tearing down, inspecting and collecting the veth wiring that
//! [`crate::decide::Wiring`] describes.

use std::collections::BTreeSet;

use crate::decide::{self, LinkState, Observed, Wiring};
use crate::netlink::{self, NetError, Netns, Nl};

/// What building the wiring learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub pod_mac: String,
    /// The pod routes this ADD installed (a route another network of the pod already
    /// has, such as the default route, is left to it).
    pub routes: Vec<decide::PodRoute>,
}

/// Builds the wiring. `host` is a socket in the host namespace, the caller's. On error
/// the host veth may exist: the caller deletes it ([`delete_host`]), which removes the
/// pod side with it.
pub async fn build(host: &Nl, pod_ns: &Netns, w: &Wiring) -> Result<Built, NetError> {
    if let Some(old) = host.link_by_name(&w.host.name).await? {
        // The same pod's previous sandbox, or an ADD of this one that crashed: the name
        // is the pod's, so the old veth cannot serve anyone else.
        tracing::info!(
            veth = %w.host.name,
            previous = netlink::link_alias(&old).unwrap_or("(no alias)"),
            "replacing an existing host veth"
        );
        host.del_link(old.header.index, &w.host.name).await?;
    }
    host.add_veth(
        &w.host.name,
        w.host.mac,
        &w.host.alias,
        w.host.mtu,
        w.pod.ifname.as_str(),
        pod_ns,
    )
    .await?;
    let host_index = host
        .link_by_name(&w.host.name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| gone(&w.host.name))?;
    for s in &w.host.sysctls {
        netlink::write_sysctl(&s.path, s.value)?;
    }
    for a in &w.host.addresses {
        host.add_address(host_index, *a, &w.host.name).await?;
    }
    host.set_up(host_index, &w.host.name).await?;

    let pod = Nl::connect(Some(pod_ns))?;
    let ifname = w.pod.ifname.as_str();
    let link = pod
        .link_by_name(ifname)
        .await?
        .ok_or_else(|| gone(ifname))?;
    let pod_index = link.header.index;
    let pod_mac = decide::format_mac(netlink::link_mac(&link).unwrap_or_default());
    if !w.pod.sysctls.is_empty() {
        let _in_pod = pod_ns
            .enter()
            .map_err(|e| NetError::io("entering the pod's network namespace", e))?;
        for s in &w.pod.sysctls {
            netlink::write_sysctl(&s.path, s.value)?;
        }
    }
    for a in &w.pod.addresses {
        pod.add_address(pod_index, *a, ifname).await?;
    }
    pod.set_up(pod_index, ifname).await?;
    for gw in &w.pod.neighbors {
        pod.add_neighbor(pod_index, *gw, w.host.mac, ifname).await?;
    }
    let mut routes = Vec::new();
    for r in &w.pod.routes {
        if pod.add_route(pod_index, r.dst, r.gw, ifname).await? {
            routes.push(r.clone());
        } else {
            tracing::info!(dst = %r.dst, "the pod already has this route through another interface");
        }
    }
    for dst in &w.host.routes {
        if !host.add_route(host_index, *dst, None, &w.host.name).await? {
            // Another link routes this pod address: the new veth must win.
            return Err(NetError::Kernel {
                doing: format!(
                    "adding route {dst} dev {}: another device routes it",
                    w.host.name
                ),
                errno: libc::EEXIST,
            });
        }
    }
    Ok(Built { pod_mac, routes })
}

fn gone(name: &str) -> NetError {
    NetError::Kernel {
        doing: format!("finding {name} right after creating it"),
        errno: libc::ENODEV,
    }
}

/// Deletes the host veth `name` if it is there and belongs to `alias` (a veth of the
/// same name with another alias belongs to a newer sandbox of the same pod). Returns
/// whether it deleted something.
pub async fn delete_host(host: &Nl, name: &str, alias: &str) -> Result<bool, NetError> {
    let Some(link) = host.link_by_name(name).await? else {
        return Ok(false);
    };
    let theirs = netlink::link_alias(&link);
    if theirs.is_some_and(|a| a != alias) {
        tracing::info!(
            veth = name,
            owner = theirs,
            "host veth belongs to another sandbox; left alone"
        );
        return Ok(false);
    }
    host.del_link(link.header.index, name).await?;
    Ok(true)
}

/// Deletes the pod's interface if it is a veth (its host end goes with it). Returns
/// whether it deleted something.
pub async fn delete_in_pod(pod_ns: &Netns, ifname: &str) -> Result<bool, NetError> {
    let pod = Nl::connect(Some(pod_ns))?;
    let Some(link) = pod.link_by_name(ifname).await? else {
        return Ok(false);
    };
    if !netlink::link_is_veth(&link) {
        tracing::warn!(ifname, "the pod's interface is not a veth; left alone");
        return Ok(false);
    }
    pod.del_link(link.header.index, ifname).await?;
    Ok(true)
}

fn state(l: &netlink_packet_route::link::LinkMessage) -> LinkState {
    LinkState {
        up: netlink::link_is_up(l),
        mac: decide::format_mac(netlink::link_mac(l).unwrap_or_default()),
        mtu: netlink::link_mtu(l).unwrap_or_default(),
        alias: netlink::link_alias(l).map(str::to_owned),
        is_veth: netlink::link_is_veth(l),
    }
}

/// Looks at the wiring of one attachment (everything but IPAM).
pub async fn observe(
    host: &Nl,
    pod_ns: &Netns,
    ifname: &str,
    host_name: &str,
) -> Result<Observed, NetError> {
    let mut obs = Observed::default();
    let pod = Nl::connect(Some(pod_ns))?;
    if let Some(link) = pod.link_by_name(ifname).await? {
        obs.pod_link = Some(state(&link));
        obs.pod_addresses = pod.addresses(link.header.index).await?;
        obs.pod_routes = pod.routes_via(link.header.index).await?;
    }
    if let Some(link) = host.link_by_name(host_name).await? {
        obs.host_link = Some(state(&link));
        obs.host_routes = host
            .routes_via(link.header.index)
            .await?
            .into_iter()
            .map(|(dst, _)| dst)
            .collect();
        if obs.pod_addresses.iter().any(|a| a.addr().is_ipv4()) {
            let v = netlink::read_sysctl(&format!("net/ipv4/conf/{host_name}/proxy_arp"))?;
            obs.host_proxy_arp = Some(v == "1");
        }
    }
    Ok(obs)
}

/// Deletes the host veths of `network` whose attachment (`container id`, `ifname`) is
/// not in `valid`. Returns their names.
pub async fn collect(
    host: &Nl,
    network: &str,
    valid: &BTreeSet<(String, String)>,
) -> Result<Vec<String>, NetError> {
    let mut deleted = Vec::new();
    for link in host.links().await? {
        let (Some(name), Some(alias)) = (netlink::link_name(&link), netlink::link_alias(&link))
        else {
            continue;
        };
        let Some((cid, ifname)) = decide::alias_attachment(alias, network) else {
            continue;
        };
        if !name.starts_with(decide::HOST_PREFIX)
            || valid.contains(&(cid.to_owned(), ifname.to_owned()))
        {
            continue;
        }
        host.del_link(link.header.index, name).await?;
        deleted.push(name.to_owned());
    }
    Ok(deleted)
}
