//! serval: a Kubernetes node networking agent.

mod cmd;

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
        Command::Crds(args) => cmd::crds::run(args),
        Command::Import(args) => cmd::import::run(args),
    }
}
