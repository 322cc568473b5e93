//! `serval pool`: add, list and delete IP pools.

use anyhow::Context as _;
use ipam::model::{AllowedUse, EncapMode, IpPool, PoolName, Selector};
use ipam::Ipam;
use ipnet::IpNet;

use super::ipam::{block_on, print_table, DatastoreArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub store: DatastoreArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Mode {
    Always,
    CrossSubnet,
    Never,
}

impl From<Mode> for EncapMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Always => EncapMode::Always,
            Mode::CrossSubnet => EncapMode::CrossSubnet,
            Mode::Never => EncapMode::Never,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Use {
    Workload,
    Tunnel,
    LoadBalancer,
}

impl From<Use> for AllowedUse {
    fn from(u: Use) -> Self {
        match u {
            Use::Workload => AllowedUse::Workload,
            Use::Tunnel => AllowedUse::Tunnel,
            Use::LoadBalancer => AllowedUse::LoadBalancer,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
// Parsed once per run: the size of `Add` costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Add a pool. Overlapping pools and bad block sizes are refused.
    Add {
        cidr: IpNet,
        /// Pool name [default: derived from the CIDR, e.g. pool-10-65-0-0-16]
        #[arg(long)]
        name: Option<PoolName>,
        /// Block prefix length [default: 26 for IPv4, 122 for IPv6]
        #[arg(long)]
        block_size: Option<u8>,
        #[arg(long, value_enum, default_value = "never")]
        ipip_mode: Mode,
        #[arg(long, value_enum, default_value = "never")]
        vxlan_mode: Mode,
        #[arg(long)]
        nat_outgoing: bool,
        #[arg(long)]
        disabled: bool,
        #[arg(long = "disable-bgp-export")]
        disable_bgp_export: bool,
        /// Nodes that may use the pool, in Kubernetes (`zone in (a,b)`) or Calico
        /// (`zone == 'a' && has(rack)`) selector syntax [default: all()]
        #[arg(long)]
        node_selector: Option<Selector>,
        /// What the addresses are for (repeatable) [default: workload, tunnel]
        #[arg(long = "allowed-use", value_enum)]
        allowed_uses: Vec<Use>,
        /// Pods whose namespace's labels match may use the pool (known on the kubernetes
        /// datastore only) [default: all()]
        #[arg(long)]
        namespace_selector: Option<Selector>,
        /// Only for requests that name the pool, never chosen by default
        #[arg(long)]
        manual: bool,
        #[arg(long)]
        json: bool,
    },
    /// List pools.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a pool that holds no allocated addresses.
    Delete { name: PoolName },
}

fn default_name(cidr: &IpNet) -> anyhow::Result<PoolName> {
    let s: String = cidr
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut name = String::from("pool-");
    for c in s.trim_matches('-').chars() {
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    PoolName::new(name).context("deriving a pool name; pass --name")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    block_on(async move {
        let ipam = Ipam::new(args.store.open().await?);
        match args.command {
            Command::Add {
                cidr,
                name,
                block_size,
                ipip_mode,
                vxlan_mode,
                nat_outgoing,
                disabled,
                disable_bgp_export,
                node_selector,
                allowed_uses,
                namespace_selector,
                manual,
                json,
            } => {
                let name = match name {
                    Some(n) => n,
                    None => default_name(&cidr)?,
                };
                let mut pool = IpPool::new(name.clone(), cidr);
                if let Some(b) = block_size {
                    pool.block_size = b;
                }
                pool.ipip_mode = ipip_mode.into();
                pool.vxlan_mode = vxlan_mode.into();
                pool.nat_outgoing = nat_outgoing;
                pool.disabled = disabled;
                pool.disable_bgp_export = disable_bgp_export;
                if let Some(s) = node_selector {
                    pool.node_selector = s;
                }
                if !allowed_uses.is_empty() {
                    pool.allowed_uses = allowed_uses.into_iter().map(Into::into).collect();
                }
                if let Some(s) = namespace_selector {
                    *pool.namespace_selector = s;
                }
                if manual {
                    pool.assignment_mode = ipam::model::AssignmentMode::Manual;
                }
                ipam.add_pool(pool.clone())
                    .await
                    .with_context(|| format!("adding pool {name} ({cidr})"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&pool)?);
                } else {
                    println!("added pool {name} ({cidr}, blocks of /{})", pool.block_size);
                }
                Ok(())
            }
            Command::List { json } => {
                let pools = ipam.pools().await.context("listing pools")?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&pools)?);
                    return Ok(());
                }
                let mut rows = vec![vec![
                    "NAME".to_owned(),
                    "CIDR".into(),
                    "BLOCK".into(),
                    "IPIP".into(),
                    "VXLAN".into(),
                    "NAT".into(),
                    "DISABLED".into(),
                    "BGP EXPORT".into(),
                    "SELECTOR".into(),
                ]];
                for p in pools {
                    rows.push(vec![
                        p.name.to_string(),
                        p.cidr.to_string(),
                        format!("/{}", p.block_size),
                        format!("{:?}", p.ipip_mode),
                        format!("{:?}", p.vxlan_mode),
                        p.nat_outgoing.to_string(),
                        p.disabled.to_string(),
                        (!p.disable_bgp_export).to_string(),
                        p.node_selector.to_string(),
                    ]);
                }
                print_table(&rows);
                Ok(())
            }
            Command::Delete { name } => {
                ipam.delete_pool(name.clone())
                    .await
                    .with_context(|| format!("deleting pool {name}"))?;
                println!("deleted pool {name}");
                Ok(())
            }
        }
    })
}
