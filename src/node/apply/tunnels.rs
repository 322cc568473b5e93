//! Tunnel devices and MTU: which encapsulations the pools use decides the devices this
//! node needs and the MTU pods get (underlay MTU less the largest overhead in use:
//! IP-in-IP 20, VXLAN 50, VXLAN over IPv6 70).
//!
//! [`pod_mtu`] is pure; [`apply`] makes the devices exist through the dataplane and
//! reports each one's outcome (a kernel without ipip gives an error naming the pool, and
//! the other devices go ahead). [`TunnelApplier`] keeps the devices last asked for, so
//! an unchanged [`Tunnels`] touches nothing.

use std::net::IpAddr;

use tracing::error;

use crate::node::dataplane::{
    Dataplane, Encapsulation, IpipTunnel, VxlanTunnel, IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE,
};
use crate::node::desired::{TunnelWant, Tunnels};
use crate::node::status::TunnelRow;

use crate::node::register::Detected;

/// The interface carrying the node's address of each family, as (index, MTU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Underlay {
    pub v4: Option<(u32, u32)>,
    pub v6: Option<(u32, u32)>,
}

pub use ipam::encap::{encapsulations, pod_mtu};

/// How the tunnel applier reaches the kernel.
pub(crate) trait TunnelIo {
    /// Makes the devices of `want` exist; one row per device, with its error.
    async fn apply(&mut self, want: &Tunnels) -> Vec<TunnelRow>;
}

/// The kernel's tunnel devices through the dataplane.
pub struct KernelTunnels<'a> {
    pub dp: &'a Dataplane,
    pub detected: &'a Detected,
    pub underlay: Underlay,
}

impl TunnelIo for KernelTunnels<'_> {
    async fn apply(&mut self, want: &Tunnels) -> Vec<TunnelRow> {
        apply(self.dp, want, self.detected, self.underlay).await
    }
}

/// The tunnel devices last asked for, and each one's outcome (shown by status).
#[derive(Debug, Default)]
pub struct TunnelApplier {
    applied: Option<Tunnels>,
    rows: Vec<TunnelRow>,
}

impl TunnelApplier {
    /// Makes the devices `want` exist unless they were the last ones asked for; returns
    /// whether it touched the kernel (a device it recreated lost its routes).
    pub(crate) async fn apply(&mut self, want: &Tunnels, io: &mut impl TunnelIo) -> bool {
        if self.applied.as_ref() == Some(want) {
            return false;
        }
        self.rows = io.apply(want).await;
        for r in &self.rows {
            if let Some(e) = &r.error {
                error!(device = %r.device, error = %e, "tunnel");
            }
        }
        self.applied = Some(want.clone());
        true
    }

    /// Each device's outcome.
    pub fn rows(&self) -> &[TunnelRow] {
        &self.rows
    }

    /// Whether a device failed.
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.error.is_some())
    }

    /// The errors, for readiness.
    pub fn errors(&self) -> impl Iterator<Item = String> + '_ {
        self.rows.iter().filter_map(|r| r.error.clone())
    }

    /// Forgets what was applied, so the next [`TunnelApplier::apply`] applies again.
    pub fn forget(&mut self) {
        self.applied = None;
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the calls; `fail` makes every device fail.
    #[derive(Default)]
    struct Fake {
        calls: usize,
        fail: bool,
    }

    impl TunnelIo for Fake {
        async fn apply(&mut self, want: &Tunnels) -> Vec<TunnelRow> {
            self.calls += 1;
            want.vxlan_v4
                .iter()
                .map(|w| TunnelRow {
                    device: VXLAN_DEVICE.into(),
                    address: w.address,
                    mtu: None,
                    pools: w.requested_by.clone(),
                    error: self.fail.then(|| "no vxlan".to_owned()),
                })
                .collect()
        }
    }

    fn want(pool: &str) -> Tunnels {
        Tunnels {
            vxlan_v4: Some(TunnelWant {
                requested_by: pool.into(),
                address: None,
                mac: None,
            }),
            ..Tunnels::default()
        }
    }

    #[tokio::test]
    async fn same_tunnels_twice_touch_the_kernel_once() {
        {
            let (mut a, mut io) = (TunnelApplier::default(), Fake::default());
            assert!(a.apply(&want("p"), &mut io).await);
            assert!(!a.apply(&want("p"), &mut io).await);
            assert_eq!(io.calls, 1);
            assert!(a.apply(&want("q"), &mut io).await, "a change is applied");
            assert_eq!(io.calls, 2);
            assert_eq!(a.rows()[0].pools, "q");
        }
    }

    #[tokio::test]
    async fn a_failed_device_is_applied_again_once_forgotten() {
        {
            let mut a = TunnelApplier::default();
            let mut io = Fake {
                fail: true,
                ..Fake::default()
            };
            a.apply(&want("p"), &mut io).await;
            assert!(a.failed());
            assert_eq!(a.errors().collect::<Vec<_>>(), vec!["no vxlan".to_owned()]);
            // Not at every reconcile: only when the periodic retry forgets it.
            a.apply(&want("p"), &mut io).await;
            assert_eq!(io.calls, 1);
            a.forget();
            io.fail = false;
            assert!(a.apply(&want("p"), &mut io).await);
            assert_eq!(io.calls, 2);
            assert!(!a.failed());
        }
    }
}
