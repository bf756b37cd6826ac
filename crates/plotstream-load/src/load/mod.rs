//! The load generator (PRODUCT.md §5). Not built yet (issue 5).

/// `plotstream load` options.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The endpoint, e.g. http://127.0.0.1:9999.
    #[arg(long)]
    pub target: String,
}

/// Runs `plotstream load`; returns the process exit code.
pub async fn run(_args: LoadArgs) -> anyhow::Result<i32> {
    anyhow::bail!("plotstream load is not built yet (issue 5)")
}
