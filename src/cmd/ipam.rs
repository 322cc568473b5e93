//! `serval ipam`: show, check, assign and release addresses in the block IPAM.
//!
//! Every command picks its datastore the same way as the agent and the CNI plugin
//! (`ipam::store::select`): `--datastore`, else `SERVAL_DATASTORE`, else the file under
//! /var/lib/serval. Reads take `--json` for scripts; errors name what was wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ipam::allocator::{AssignIpRequest, AutoAssignRequest, NodeInfo};
use ipam::check::LiveHandles;
use ipam::model::{HandleId, NodeName};
use ipam::store::select::{self, Datastore};
use ipam::store::Store;
use ipam::Ipam;
use serde_json::json;

/// How to reach the datastore; shared by `serval ipam` and `serval pool`.
#[derive(clap::Args, Debug, Clone)]
pub struct DatastoreArgs {
    /// file:PATH, etcd:ENDPOINTS or kubernetes [default: SERVAL_DATASTORE, else
    /// file:/var/lib/serval/ipam.json]
    #[arg(long, global = true)]
    pub datastore: Option<String>,
    /// PEM CA bundle for etcd's TLS [env: SERVAL_ETCD_CA_FILE]
    #[arg(long, global = true)]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate for etcd [env: SERVAL_ETCD_CERT_FILE]
    #[arg(long, global = true)]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM client key for etcd [env: SERVAL_ETCD_KEY_FILE]
    #[arg(long, global = true)]
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user [env: SERVAL_ETCD_USERNAME]
    #[arg(long, global = true)]
    pub etcd_username: Option<String>,
    /// File holding the etcd user's password [env: SERVAL_ETCD_PASSWORD_FILE]
    #[arg(long, global = true)]
    pub etcd_password_file: Option<PathBuf>,
}

impl DatastoreArgs {
    /// Opens the datastore named by the flags and the environment.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        let mut ds =
            Datastore::resolve(self.datastore.as_deref()).context("choosing the datastore")?;
        if let Datastore::Etcd(c) = &mut ds {
            if let Some(p) = &self.etcd_ca_file {
                c.tls.ca_file = Some(p.clone());
            }
            if let Some(p) = &self.etcd_cert_file {
                c.tls.cert_file = Some(p.clone());
            }
            if let Some(p) = &self.etcd_key_file {
                c.tls.key_file = Some(p.clone());
            }
            if let Some(u) = &self.etcd_username {
                c.username = Some(u.clone());
            }
            if let Some(f) = &self.etcd_password_file {
                let p = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                c.password = Some(p.trim_end_matches(['\r', '\n']).to_owned());
            }
            c.validate()?;
        }
        select::open(&ds)
            .await
            .with_context(|| format!("opening datastore {ds}"))
    }
}

/// Runs an async command body on a small runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub store: DatastoreArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Pool usage; with --show-blocks every block, its node and usage.
    Show {
        #[arg(long)]
        show_blocks: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check consistency: leaks, orphaned blocks and affinities, double allocations.
    /// Exits 1 when problems remain.
    Check {
        /// Fix what can be fixed safely.
        #[arg(long)]
        repair: bool,
        /// A file listing the live handles, one per line: allocations of any other handle
        /// are leaks (and --repair frees them), except tunnel addresses and allocations
        /// made after the list was taken.
        #[arg(long)]
        live_handles: Option<PathBuf>,
        /// When the live handles were listed, in seconds since the Unix epoch
        /// [default: the file's modification time].
        #[arg(long, requires = "live_handles")]
        live_handles_taken_at: Option<u64>,
        /// How far the clocks of the hosts that allocate may be behind this one's, in
        /// seconds: an allocation is judged against the list only when it is older than
        /// the list by more than this.
        #[arg(long, default_value_t = DEFAULT_MAX_CLOCK_SKEW)]
        max_clock_skew: u64,
        /// The CNI plugin's node-wide IPAM lock, held while --repair runs so that no pod
        /// on this node allocates or releases meanwhile.
        #[arg(long, default_value = cni::config::DEFAULT_IPAM_LOCK_FILE)]
        ipam_lock_file: PathBuf,
        /// How long --repair waits for that lock, in seconds.
        #[arg(long, default_value_t = cni::ipam::LOCK_TIMEOUT.as_secs())]
        lock_timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Reserve addresses for a handle on a node (idempotent per handle).
    Assign {
        #[arg(long)]
        node: NodeName,
        #[arg(long)]
        handle: HandleId,
        /// This exact address.
        #[arg(long, conflicts_with_all = ["num", "num6"])]
        ip: Option<IpAddr>,
        /// How many IPv4 addresses [default: 1 unless --num6 is given]
        #[arg(long)]
        num: Option<u32>,
        /// How many IPv6 addresses.
        #[arg(long)]
        num6: Option<u32>,
        /// A node label KEY=VALUE, for pools with a node selector (repeatable).
        #[arg(long = "node-label", value_parser = parse_label)]
        node_labels: Vec<(String, String)>,
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long)]
        pod: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Release addresses by address or by handle.
    Release {
        #[arg(long, required_unless_present = "handle", conflicts_with = "handle", num_args = 1..)]
        ip: Vec<IpAddr>,
        #[arg(long)]
        handle: Option<HandleId>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    block_on(async move {
        let store = args.store.open().await?;
        let ipam = Ipam::new(store.clone());
        match args.command {
            Command::Show { show_blocks, json } => show(&ipam, show_blocks, json).await,
            Command::Check {
                repair,
                live_handles,
                live_handles_taken_at,
                max_clock_skew,
                ipam_lock_file,
                lock_timeout,
                json,
            } => {
                let live = match live_handles {
                    Some(path) => Some(read_live_handles(
                        &path,
                        live_handles_taken_at,
                        max_clock_skew,
                    )?),
                    None => None,
                };
                // The plugin's lock: no pod of this node allocates or releases while the
                // repair decides and writes (pods elsewhere are judged by their time).
                let _lock = if repair {
                    Some(
                        cni::ipam::NodeLock::acquire(
                            &ipam_lock_file,
                            Duration::from_secs(lock_timeout),
                        )
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!("{}: {}; nothing was repaired", e.msg, e.details)
                        })?,
                    )
                } else {
                    None
                };
                check(&ipam, repair, live, json).await
            }
            Command::Assign {
                node,
                handle,
                ip,
                num,
                num6,
                node_labels,
                namespace,
                pod,
                json,
            } => {
                let info = NodeInfo {
                    name: node.clone(),
                    labels: node_labels.into_iter().collect::<BTreeMap<_, _>>(),
                };
                let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = if let Some(ip) = ip {
                    let got = ipam
                        .assign_ip(AssignIpRequest {
                            ip,
                            handle: handle.clone(),
                            node: info,
                            namespace,
                            pod,
                        })
                        .await
                        .with_context(|| format!("assigning {ip} to {handle}"))?;
                    if got.is_ipv4() {
                        (vec![got], vec![])
                    } else {
                        (vec![], vec![got])
                    }
                } else {
                    let n4 = num.unwrap_or(if num6.is_some() { 0 } else { 1 });
                    let n6 = num6.unwrap_or(0);
                    if n4 == 0 && n6 == 0 {
                        bail!("nothing to assign: --num and --num6 are both 0");
                    }
                    let mut req = AutoAssignRequest::new(handle.clone(), info, n4, n6);
                    req.namespace = namespace;
                    req.pod = pod;
                    let got = ipam
                        .auto_assign(req)
                        .await
                        .with_context(|| format!("assigning addresses to {handle} on {node}"))?;
                    (got.v4, got.v6)
                };
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &json!({"handle": handle, "node": node, "v4": v4, "v6": v6})
                        )?
                    );
                } else {
                    for ip in v4.iter().chain(&v6) {
                        println!("{ip}");
                    }
                }
                Ok(())
            }
            Command::Release { ip, handle, json } => {
                if let Some(h) = handle {
                    let freed = ipam
                        .release_handle(h.clone())
                        .await
                        .with_context(|| format!("releasing handle {h}"))?;
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&json!({"handle": h, "released": freed}))?
                        );
                    } else if freed.is_empty() {
                        println!("handle {h} held no addresses");
                    } else {
                        for ip in freed {
                            println!("released {ip}");
                        }
                    }
                    return Ok(());
                }
                let out = ipam.release_ips(ip).await.context("releasing addresses")?;
                if json {
                    let released: Vec<_> = out
                        .released
                        .iter()
                        .map(|(ip, h)| json!({"ip": ip, "handle": h}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &json!({"released": released, "notAllocated": out.not_allocated})
                        )?
                    );
                } else {
                    for (ip, h) in &out.released {
                        println!("released {ip} (handle {h})");
                    }
                    for ip in &out.not_allocated {
                        println!("{ip} was not allocated");
                    }
                }
                Ok(())
            }
        }
    })
}

async fn show(ipam: &Ipam, show_blocks: bool, json: bool) -> anyhow::Result<()> {
    let usage = ipam.usage().await.context("reading pools and blocks")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    let mut rows = vec![vec![
        "POOL".to_owned(),
        "CIDR".into(),
        "BLOCK SIZE".into(),
        "IPS TOTAL".into(),
        "IPS IN USE".into(),
        "IPS FREE".into(),
    ]];
    for p in &usage.pools {
        let pct = if p.size == 0 {
            0.0
        } else {
            p.in_use as f64 * 100.0 / p.size as f64
        };
        rows.push(vec![
            format!("{}{}", p.name, if p.disabled { " (disabled)" } else { "" }),
            p.cidr.to_string(),
            format!("/{}", p.block_size),
            p.size.to_string(),
            format!("{} ({pct:.1}%)", p.in_use),
            (p.size - u128::from(p.in_use)).to_string(),
        ]);
    }
    print_table(&rows);
    if show_blocks {
        println!();
        let mut rows = vec![vec![
            "BLOCK".to_owned(),
            "POOL".into(),
            "NODE".into(),
            "STATE".into(),
            "IPS TOTAL".into(),
            "IPS IN USE".into(),
            "IPS FREE".into(),
            "BORROWED BY OTHERS".into(),
        ]];
        let blocks = usage
            .pools
            .iter()
            .flat_map(|p| p.blocks.iter().map(move |b| (p.name.to_string(), b)))
            .chain(
                usage
                    .orphan_blocks
                    .iter()
                    .map(|b| ("(no pool)".to_owned(), b)),
            );
        for (pool, b) in blocks {
            let state = match (b.deleted, b.state) {
                (true, _) => "deleting".to_owned(),
                (false, Some(s)) => format!("{s:?}").to_lowercase(),
                (false, None) => "-".to_owned(),
            };
            rows.push(vec![
                b.cidr.to_string(),
                pool,
                b.node.as_ref().map_or("-".to_owned(), |n| n.to_string()),
                state,
                b.size.to_string(),
                b.in_use.to_string(),
                (b.size - b.in_use).to_string(),
                b.borrowed.to_string(),
            ]);
        }
        print_table(&rows);
    }
    Ok(())
}

/// How far behind this host's clock the allocating hosts' clocks may be, by default.
pub const DEFAULT_MAX_CLOCK_SKEW: u64 = 60;

/// The live handles of `path`, taken at `taken_at` (default: the file's modification
/// time), less `skew`.
fn read_live_handles(path: &Path, taken_at: Option<u64>, skew: u64) -> anyhow::Result<LiveHandles> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut handles = BTreeSet::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let h = HandleId::new(line.trim())
            .with_context(|| format!("{}:{}: not a handle id", path.display(), i + 1))?;
        handles.insert(h);
    }
    let taken_at = match taken_at {
        Some(t) => t,
        None => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .with_context(|| format!("{}: modification time", path.display()))?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    Ok(LiveHandles {
        handles,
        taken_at: Some(taken_at.saturating_sub(skew)),
    })
}

async fn check(
    ipam: &Ipam,
    repair: bool,
    live: Option<LiveHandles>,
    json: bool,
) -> anyhow::Result<()> {
    let report = ipam
        .check(repair, live)
        .await
        .context("checking IPAM consistency")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.is_clean() {
        println!("IPAM is consistent: no leaks, no orphaned blocks, no double allocations");
    } else {
        for p in &report.problems {
            let fixed = repair && !report.remaining.contains(p);
            println!("{}{p}", if fixed { "repaired: " } else { "" });
        }
        let counts: Vec<String> = report
            .counts()
            .iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        println!(
            "{} problems ({}); {} remain",
            report.problems.len(),
            counts.join(", "),
            report.remaining.len()
        );
    }
    if !report.remaining.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints rows as left-aligned columns, the first row being the header.
pub fn print_table(rows: &[Vec<String>]) {
    let Some((header, body)) = rows.split_first() else {
        return;
    };
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print!("{}", super::table::render(&header, body));
}
