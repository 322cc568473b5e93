//! Tunnel devices and MTU: which encapsulations the pools use decides the devices this
//! node needs and the MTU pods get (underlay MTU less the largest overhead in use:
//! IP-in-IP 20, VXLAN 50, VXLAN over IPv6 70).
//!
//! [`pod_mtu`] is pure; [`apply`] makes the devices exist through the dataplane and
//! reports each one's outcome (a kernel without ipip gives an error naming the pool, and
//! the other devices go ahead).

use std::net::IpAddr;

use crate::dataplane::{
    Dataplane, Encapsulation, IpipTunnel, VxlanTunnel, IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE,
};
use crate::desired::{TunnelWant, Tunnels};
use crate::status::TunnelRow;

use super::register::Detected;

/// The interface carrying the node's address of each family, as (index, MTU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Underlay {
    pub v4: Option<(u32, u32)>,
    pub v6: Option<(u32, u32)>,
}

pub use ipam::encap::{encapsulations, pod_mtu};

/// Makes the wanted tunnel devices exist, removes serval's VXLAN devices no pool wants,
/// and reports each device. `underlay_mtu` is the MTU of the interface carrying the
/// node's address of each family (v4, v6).
pub async fn apply(
    dp: &Dataplane,
    want: &Tunnels,
    detected: &Detected,
    underlay: Underlay,
) -> Vec<TunnelRow> {
    let mut rows = Vec::new();
    if let Some(w) = &want.ipip {
        let mtu = underlay.v4.map(|(_, m)| Encapsulation::Ipip.inner_mtu(m));
        let address = match w.address {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        };
        let result = dp
            .ensure_ipip(&IpipTunnel {
                requested_by: w.requested_by.clone(),
                address,
                mtu: mtu.unwrap_or(1480),
            })
            .await;
        rows.push(row(
            IPIP_DEVICE,
            w,
            mtu,
            result.err().map(|e| e.to_string()),
        ));
    }
    for (device, w, node, parent, encap) in [
        (
            VXLAN_DEVICE,
            &want.vxlan_v4,
            detected.v4,
            underlay.v4,
            Encapsulation::Vxlan,
        ),
        (
            VXLAN_V6_DEVICE,
            &want.vxlan_v6,
            detected.v6,
            underlay.v6,
            Encapsulation::VxlanV6,
        ),
    ] {
        let Some(w) = w else {
            if let Err(e) = dp.remove_tunnel(device).await {
                rows.push(TunnelRow {
                    device: device.to_owned(),
                    address: None,
                    mtu: None,
                    pools: String::new(),
                    error: Some(format!("removing {device}: {e}")),
                });
            }
            continue;
        };
        let mtu = parent.map(|(_, m)| encap.inner_mtu(m));
        let error = match (node, w.address, w.mac) {
            (None, _, _) => Some(format!(
                "{device}: the node has no address of this family for IP pool {}",
                w.requested_by
            )),
            (_, None, _) | (_, _, None) => Some(format!(
                "{device}: waiting for a tunnel address from IP pool {}",
                w.requested_by
            )),
            (Some(node), Some(vtep_addr), Some(vtep_mac)) => dp
                .ensure_vxlan(&VxlanTunnel {
                    requested_by: w.requested_by.clone(),
                    node_addr: node.addr(),
                    vtep_addr,
                    vtep_mac,
                    mtu: mtu.unwrap_or(1450),
                    parent: parent.map(|(i, _)| i),
                })
                .await
                .err()
                .map(|e| e.to_string()),
        };
        rows.push(row(device, w, mtu, error));
    }
    rows
}

fn row(device: &str, w: &TunnelWant, mtu: Option<u32>, error: Option<String>) -> TunnelRow {
    TunnelRow {
        device: device.to_owned(),
        address: w.address,
        mtu,
        pools: w.requested_by.clone(),
        error,
    }
}
