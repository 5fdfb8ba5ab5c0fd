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
        if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {name}")).await {
            if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                bail!("database {name} already exists on that server (left by a run with --keep?); drop it first");
            }
            bail!("cannot create the bench database {name}: {e}");
        }
        Ok(BenchDatabase { url: with_database(admin_url, &name), admin_url: admin_url.to_string(), name })
    }

    /// Drops the database, closing any connection left to it.
    pub async fn drop_database(self) -> Result<()> {
        let client = connect(&self.admin_url).await?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await
            .with_context(|| format!("cannot drop the bench database {}", self.name))
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let mut cfg: tokio_postgres::Config = url.parse().context("--database-url is not a valid PostgreSQL URL")?;
    cfg.connect_timeout(Duration::from_secs(5));
    let (client, conn) =
        cfg.connect(tokio_postgres::NoTls).await.with_context(|| format!("cannot connect to {}", tw_store::postgres::redact_url(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// `url` with its database name replaced by `db` (query parameters kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_swapped() {
        assert_eq!(super::with_database("postgres://u@h:5432/tw", "x"), "postgres://u@h:5432/x");
        assert_eq!(super::with_database("postgresql://u:p@h/tw?sslmode=disable", "x"), "postgresql://u:p@h/x?sslmode=disable");
        assert_eq!(super::with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
