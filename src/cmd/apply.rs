//! `serval apply -f FILE`, `serval get KIND [NAME]`, `serval delete KIND NAME`: the
//! cluster resources (BGPConfiguration, BGPPeer, BGPFilter, ServalNode) on the file and
//! etcd datastores, in the CRD shape `kubectl` uses. With the kubernetes datastore they
//! are CRDs: use kubectl.
//!
//! `apply` validates every document into its typed resource before writing anything: an
//! error names the document, the field path and the value, and a file with one bad
//! document writes nothing. The writes are one compare-and-swap batch.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use ipam::store::select::Datastore;
use ipam::store::{Key, Object, ResourceName, Store, StoreExt as _, Write};
use serval::resources::document;
use serval::resources::{ClusterResource, ResourceKind};

use crate::cmd::ipam::{block_on, DatastoreArgs};
use crate::cmd::table::render;

/// `serval apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// A YAML (or JSON) file of one or more documents; `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    #[command(flatten)]
    store: DatastoreArgs,
}

/// Output formats of `serval get`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Yaml,
    Json,
}

/// `serval get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// bgpconfiguration, bgppeer, bgpfilter or servalnode (plurals and `node` too).
    kind: String,
    name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Output>,
    #[command(flatten)]
    store: DatastoreArgs,
}

/// `serval delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    kind: String,
    name: String,
    #[command(flatten)]
    store: DatastoreArgs,
}

fn kind(s: &str) -> anyhow::Result<ResourceKind> {
    ResourceKind::parse(s).with_context(|| {
        format!(
            "{s:?} is not a serval resource kind ({})",
            ResourceKind::ALL.map(ResourceKind::as_str).join(", ")
        )
    })
}

/// Refuses the kubernetes datastore, which keeps these resources as CRDs.
async fn open(store: &DatastoreArgs, verb: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    if let Ok(Datastore::Kubernetes) = Datastore::resolve(store.datastore.as_deref()) {
        bail!(
            "with the kubernetes datastore the resources are CRDs (serval.dev/v1): use `kubectl {verb}`"
        );
    }
    store.open().await
}

pub fn apply(a: ApplyArgs) -> anyhow::Result<()> {
    let text = if a.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?
    };
    let resources = match document::parse(&text) {
        Ok(r) => r,
        Err(errors) => bail!("{}: nothing applied:\n{errors}", a.file.display()),
    };
    if resources.is_empty() {
        bail!("{}: no documents", a.file.display());
    }
    block_on(async move {
        let store = open(&a.store, "apply -f").await?;
        // A lost compare-and-swap (someone wrote meanwhile) is read again and retried.
        let mut last = None;
        for _ in 0..5 {
            match apply_once(&*store, &resources).await {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    return Ok(());
                }
                Err(e @ ipam::StoreError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e).context("writing the resources"),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("conflicts"), anyhow::Error::from))
            .context("writing the resources: they kept changing underneath")
    })
}

/// One read-compare-write round; returns what happened to each resource.
async fn apply_once(
    store: &dyn Store,
    resources: &[ClusterResource],
) -> Result<Vec<String>, ipam::StoreError> {
    let keys: Vec<Key> = resources
        .iter()
        .map(|r| Key::Resource {
            kind: r.kind().stored(),
            name: r.name.clone(),
        })
        .collect();
    let existing = store.get_many(&keys).await?;
    let mut writes = Vec::new();
    let mut lines = Vec::new();
    for (r, old) in resources.iter().zip(existing) {
        let stored = r.to_stored();
        let what = format!("{} {}", r.kind(), r.name);
        match old {
            Some(o) if o.value == Object::Resource(stored.clone()) => {
                lines.push(format!("{what} unchanged"));
            }
            Some(o) => {
                writes.push(Write::update(Object::Resource(stored), o.revision));
                lines.push(format!("{what} configured"));
            }
            None => {
                writes.push(Write::create(Object::Resource(stored)));
                lines.push(format!("{what} created"));
            }
        }
    }
    if !writes.is_empty() {
        if store.atomic_commit() {
            store.commit(&writes).await?;
        } else {
            for w in writes {
                store.commit(&[w]).await?;
            }
        }
    }
    Ok(lines)
}

pub fn get(a: GetArgs) -> anyhow::Result<()> {
    let kind = kind(&a.kind)?;
    block_on(async move {
        let store = open(&a.store, "get").await?;
        let mut found = Vec::new();
        for v in store.list_resources(kind.as_str()).await? {
            if a.name.as_ref().is_some_and(|n| v.value.name != n.as_str()) {
                continue;
            }
            match ClusterResource::from_stored(&v.value) {
                Some(Ok(r)) => found.push(r),
                Some(Err(e)) => eprintln!("warning: {e}"),
                None => {}
            }
        }
        if let (Some(name), true) = (&a.name, found.is_empty()) {
            bail!("{kind} {name} not found");
        }
        let docs: Vec<serde_json::Value> = found.iter().map(ClusterResource::to_document).collect();
        match a.output {
            Some(Output::Json) if a.name.is_some() => {
                println!("{}", serde_json::to_string_pretty(&docs[0])?)
            }
            Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&docs)?),
            Some(Output::Yaml) => {
                for d in &docs {
                    print!("---\n{}", serde_yaml::to_string(d)?);
                }
            }
            None => {
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|r| {
                        let labels: Vec<String> =
                            r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        vec![r.name.to_string(), labels.join(",")]
                    })
                    .collect();
                print!("{}", render(&["NAME", "LABELS"], &rows));
            }
        }
        Ok(())
    })
}

pub fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    let kind = kind(&a.kind)?;
    block_on(async move {
        let store = open(&a.store, "delete").await?;
        if kind == ResourceKind::ServalNode {
            return delete_node(store, &a.name).await;
        }
        // Nothing is stored under a name that is not valid.
        let Ok(name) = ResourceName::new(&a.name) else {
            bail!("{kind} {} not found", a.name);
        };
        let key = Key::Resource {
            kind: kind.stored(),
            name,
        };
        for _ in 0..5 {
            let Some(v) = store.get(&key).await? else {
                bail!("{kind} {} not found", a.name);
            };
            match store
                .commit(&[Write::delete(key.clone(), v.revision)])
                .await
            {
                Ok(_) => {
                    println!("{kind} {} deleted", a.name);
                    return Ok(());
                }
                Err(ipam::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("{kind} {}: it kept changing underneath", a.name)
    })
}

/// A node that leaves for good: what it held goes with its ServalNode, as `calicoctl
/// delete node` does. Delete a node only once it is decommissioned: its pods' addresses
/// become free for others.
async fn delete_node(store: std::sync::Arc<dyn Store>, name: &str) -> anyhow::Result<()> {
    let ipam = ipam::Ipam::new(store);
    let c = serval::node::gc::collect_node(&ipam, name).await?;
    let held = !c.handles_released.is_empty() || c.blocks_deleted + c.blocks_orphaned > 0;
    if !c.serval_node_deleted && !held {
        bail!("ServalNode {name} not found, and no addresses or blocks are held by that node");
    }
    if c.serval_node_deleted {
        println!("ServalNode {name} deleted");
    } else {
        println!("ServalNode {name} was already gone; released what the node still held");
    }
    println!(
        "released {} handle(s){}; {} empty block(s) deleted, {} block(s) with other \
         allocations left without affinity",
        c.handles_released.len(),
        if c.handles_released.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.handles_released.join(", "))
        },
        c.blocks_deleted,
        c.blocks_orphaned
    );
    Ok(())
}
