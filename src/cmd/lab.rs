//! `serval lab`: a multi-node cluster in network namespaces on this machine, with a real
//! BIRD (or FRR) top-of-rack router; see `src/lab/`.

use crate::lab;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build the lab, start the agents, the ToR and the pods, and prove it works.
    Up(lab::UpArgs),
    /// Print the lab's nodes, routes, ToR view and pings again.
    Status {
        #[arg(long, default_value = lab::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Remove everything the lab made (namespaces, processes, files), also after a crash.
    Down {
        #[arg(long, default_value = lab::DEFAULT_DIR)]
        dir: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Up(a) => lab::up(a),
        Command::Status { dir } => lab::status(&dir),
        Command::Down { dir } => lab::down(&dir),
    }
}
