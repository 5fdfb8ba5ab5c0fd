//! A PostgreSQL database of the bench's own (`tw_bench_<pid>`), created on the server that
//! `--database-url` names and dropped at the end, so a run never touches existing data.

use anyhow::{Context, Result, bail};
use std::time::Duration;

/// A database created for one bench run.
pub struct BenchDatabase {
    admin_url: String,
    pub name: String,
    /// The URL of the new database, for the server.
    pub url: String,
}

impl BenchDatabase {
    /// Creates `tw_bench_<pid>` on the server of `admin_url` (a URL naming any database there that
    /// the user may connect to).
    pub async fn create(admin_url: &str) -> Result<BenchDatabase> {
        let name = format!("tw_bench_{}", std::process::id());
        let client = connect(admin_url).await?;
        if let Err(e) = tw_store::postgres::create_database(&client, &name).await {
            if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                bail!("database {name} already exists on that server (left by a run with --keep?); drop it first");
            }
            bail!("cannot create the bench database {name}: {e}");
        }
        Ok(BenchDatabase { url: tw_store::postgres::with_database(admin_url, &name), admin_url: admin_url.to_string(), name })
    }

    /// Drops the database, closing any connection left to it.
    pub async fn drop_database(self) -> Result<()> {
        let client = connect(&self.admin_url).await?;
        tw_store::postgres::drop_database(&client, &self.name)
            .await
            .with_context(|| format!("cannot drop the bench database {}", self.name))
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    tw_store::postgres::connect_admin(url, Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot connect to {}", tw_store::postgres::redact_url(url)))
}
