//! `serval crds`: writes the CRD manifests generated from the resource types into
//! `crds/` and the Helm chart's `crds/`; with `--check`, compares instead and fails when
//! a file differs (CI runs it, so a changed type without regenerated YAML fails).

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write; repeat for several. Default: crds/ and charts/serval/crds/
    /// under the current directory (the repository root).
    #[arg(long = "out", value_name = "DIR")]
    out: Vec<PathBuf>,
    /// Write nothing; exit non-zero and list the differences when a directory is stale.
    #[arg(long, hide = true)]
    check: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let files = serval::crds::files()?;
    let dirs = if args.out.is_empty() {
        serval::crds::OUT_DIRS.iter().map(PathBuf::from).collect()
    } else {
        args.out
    };
    let mut stale = 0;
    for dir in &dirs {
        if args.check {
            let diffs = serval::crds::compare(dir, &files)
                .with_context(|| format!("reading {}", dir.display()))?;
            for d in &diffs {
                eprintln!("{d}");
            }
            stale += diffs.len();
        } else {
            let touched = serval::crds::write(dir, &files)
                .with_context(|| format!("writing {}", dir.display()))?;
            println!(
                "{}: {} CRDs, {} file(s) updated",
                dir.display(),
                files.len(),
                touched.len()
            );
        }
    }
    if stale > 0 {
        anyhow::bail!("{stale} CRD file(s) differ from the types: run `serval crds` and commit");
    }
    Ok(())
}
