//! `serval bgp`: the speaker on its own.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("serval bgp: not built yet")
}
