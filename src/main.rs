//! serval: a Kubernetes node networking agent.

mod cmd;
mod lab;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "serval",
    version,
    about = "Kubernetes node networking: BGP, block IPAM, CNI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the BGP speaker on its own, or query a running one.
    Bgp(cmd::bgp::Args),
    /// Block IPAM: show usage, check, assign and release addresses.
    Ipam(cmd::ipam::Args),
    /// IP pools: add, list, delete.
    Pool(cmd::pool::Args),
    /// A multi-node lab in network namespaces: nodes, a BGP top-of-rack router, pods.
    Lab(cmd::lab::Args),
    /// Install the CNI plugin and its configuration on the host (DaemonSet init container).
    InstallCni(cmd::install_cni::Args),
    /// The node agent: run it, or show its status.
    Node(cmd::node::Args),
    /// Create or update cluster resources (BGPConfiguration, BGPPeer, BGPFilter,
    /// ServalNode) from YAML documents.
    Apply(cmd::apply::ApplyArgs),
    /// Show cluster resources.
    Get(cmd::apply::GetArgs),
    /// Delete a cluster resource. Deleting a ServalNode also releases what the node
    /// held: its pods' and tunnel addresses and its block affinities.
    Delete(cmd::apply::DeleteArgs),
    /// Write the CustomResourceDefinitions generated from the resource types.
    Crds(cmd::crds::Args),
    /// Convert another system's resources into serval's (Calico's projectcalico.org/v3).
    Import(cmd::import::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bgp(args) => cmd::bgp::run(args),
        Command::Ipam(args) => cmd::ipam::run(args),
        Command::Pool(args) => cmd::pool::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::InstallCni(args) => cmd::install_cni::run(args),
        Command::Node(args) => cmd::node::run(args),
        Command::Apply(args) => cmd::apply::apply(args),
        Command::Get(args) => cmd::apply::get(args),
        Command::Delete(args) => cmd::apply::delete(args),
        Command::Crds(args) => cmd::crds::run(args),
        Command::Import(args) => cmd::import::run(args),
    }
}
