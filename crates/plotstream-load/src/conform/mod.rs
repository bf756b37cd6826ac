//! The conformance runner (PRODUCT.md §6, RELIABILITY.md §8). Not built yet (issue 6).

/// `plotstream conform` options.
#[derive(Debug, clap::Args)]
pub struct ConformArgs {
    /// The endpoint, e.g. http://127.0.0.1:9999.
    #[arg(long)]
    pub target: String,
}

/// Runs `plotstream conform`; returns the process exit code.
pub async fn run(_args: ConformArgs) -> anyhow::Result<i32> {
    anyhow::bail!("plotstream conform is not built yet (issue 6)")
}
