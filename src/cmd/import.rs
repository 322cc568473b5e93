//! `serval import calico -f FILE… [-o DIR|-]`: converts Calico's resources into serval's
//! and reports, on stderr, every field it could not carry over and why.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serval::import::{calico, Imported, Severity};

#[derive(Parser, Debug)]
pub struct Args {
    #[command(subcommand)]
    from: From,
}

#[derive(Subcommand, Debug)]
enum From {
    /// Calico projectcalico.org/v3 YAML (calicoctl get -o yaml, kubectl get -o yaml):
    /// BGPConfiguration, BGPPeer, BGPFilter, IPPool, Node, IPAMConfiguration,
    /// CalicoNodeStatus.
    Calico {
        /// A file of Calico resources (`-` for stdin); repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// `-` (default): all documents to stdout. A directory: one file per kind
        /// (bgppeers.yaml, ippools.yaml, …).
        #[arg(short = 'o', long = "output", default_value = "-")]
        output: String,
        /// Exit non-zero when anything was not carried over, not only when a document
        /// could not be imported.
        #[arg(long)]
        strict: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let From::Calico {
        files,
        output,
        strict,
    } = args.from;
    let mut all = Imported::default();
    for file in &files {
        let (name, text) = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            ("(stdin)".to_owned(), s)
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            (file.display().to_string(), text)
        };
        let one = calico::import(&text, &name).map_err(anyhow::Error::msg)?;
        all.documents.extend(one.documents);
        all.findings.extend(one.findings);
    }
    calico::merge_load_balancer_settings(&mut all.documents);
    write(&all.documents, &output)?;
    for f in &all.findings {
        eprintln!("{f}");
    }
    let count = |s: Severity| all.findings.iter().filter(|f| f.severity == s).count();
    eprintln!(
        "imported {} resource(s); {} field(s) converted, {} not carried, {} document(s) skipped, {} error(s)",
        all.documents.len(),
        count(Severity::Converted),
        count(Severity::Dropped),
        count(Severity::Skipped),
        count(Severity::Error),
    );
    if all.incomplete() {
        bail!("some Calico documents were not imported (see above)");
    }
    if strict && count(Severity::Dropped) > 0 {
        bail!("--strict: some fields were not carried over (see above)");
    }
    Ok(())
}

fn yaml(docs: &[&serde_json::Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d)?);
    }
    Ok(out)
}

fn write(docs: &[serde_json::Value], output: &str) -> anyhow::Result<()> {
    if output == "-" {
        print!("{}", yaml(&docs.iter().collect::<Vec<_>>())?);
        return Ok(());
    }
    let dir = PathBuf::from(output);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut by_kind: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or("unknown").to_ascii_lowercase();
        by_kind.entry(kind).or_default().push(d);
    }
    for (kind, docs) in by_kind {
        let plural = if kind.ends_with('s') {
            format!("{kind}es")
        } else {
            format!("{kind}s")
        };
        let path = dir.join(format!("{plural}.yaml"));
        std::fs::write(&path, yaml(&docs)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
