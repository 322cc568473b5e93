//! One module per top-level subcommand, and what they share: the async runtime, logging,
//! and the tables printed for people.

pub mod apply;
pub mod bgp;
pub mod crds;
pub mod import;
pub mod install_cni;
pub mod ipam;
pub mod lab;
pub mod node;
pub mod pool;
pub mod table;

/// How the daemons log: structured, to stderr, as text for people or JSON for collectors.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "SERVAL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing's env-filter syntax, e.g. `info` or `bgp=debug,info`).
    #[arg(long, default_value = "info", env = "SERVAL_LOG")]
    pub log_level: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    Ok(())
}

/// The runtime every subcommand runs on: two workers are plenty for a node agent.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("serval")
        .build()?)
}
