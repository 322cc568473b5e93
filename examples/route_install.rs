//! Installs N routes of serval's protocol into the current network namespace through
//! the route programmer, then removes them, and prints the rates.
//!
//!     ip netns exec NS route_install [--count 100000] [--prefix-len 32|26] [--gateway 192.0.2.2]
//!
//! The gateway must be on a connected subnet of the namespace (e.g. a veth). Routes are
//! 10.0.0.0 upwards in steps of the prefix size. `tests/dataplane_perf.rs` runs this
//! and `ip -batch` with the same routes in fresh namespaces and compares.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{bail, Context};
use ipnet::{IpNet, Ipv4Net};
use serval::node::dataplane::{Dataplane, DesiredRoutes, RouteConfig, RouteTarget};

fn main() -> anyhow::Result<()> {
    let mut count: u32 = 100_000;
    let mut prefix_len: u8 = 32;
    let mut gateway: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--count" => count = value.parse().context("--count")?,
            "--prefix-len" => prefix_len = value.parse().context("--prefix-len")?,
            "--gateway" => gateway = value.parse().context("--gateway")?,
            other => bail!("unknown argument {other}"),
        }
    }
    let desired = routes(count, prefix_len, gateway)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut dataplane = Dataplane::connect(RouteConfig::default())?;
        let start = Instant::now();
        let report = dataplane.sync(&desired).await?;
        let install = start.elapsed();
        if report.routes.added.len() != count as usize || !report.routes.is_clean() {
            bail!(
                "installed {} of {count} routes; first failure: {:?}",
                report.routes.added.len(),
                report.routes.failures.first().map(|f| f.error.to_string())
            );
        }
        let start = Instant::now();
        let report = dataplane.sync(&DesiredRoutes::default()).await?;
        let remove = start.elapsed();
        if report.routes.deleted.len() != count as usize {
            bail!("removed {} of {count} routes", report.routes.deleted.len());
        }
        let rate = |d: std::time::Duration| f64::from(count) / d.as_secs_f64();
        println!(
            "install {count} routes: {:.3} s, {:.0} routes/s",
            install.as_secs_f64(),
            rate(install)
        );
        println!(
            "remove {count} routes: {:.3} s, {:.0} routes/s",
            remove.as_secs_f64(),
            rate(remove)
        );
        Ok(())
    })
}

fn routes(count: u32, prefix_len: u8, gateway: Ipv4Addr) -> anyhow::Result<DesiredRoutes> {
    let step = 1u32 << (32 - u32::from(prefix_len));
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let mut desired = DesiredRoutes::default();
    for i in 0..count {
        let addr = Ipv4Addr::from(base + i * step);
        let net = Ipv4Net::new(addr, prefix_len).context("prefix length")?;
        desired
            .routes
            .insert(IpNet::V4(net), RouteTarget::direct(IpAddr::V4(gateway)));
    }
    Ok(desired)
}
