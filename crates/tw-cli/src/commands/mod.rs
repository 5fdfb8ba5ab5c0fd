//! The commands. Each talks to the API through [`crate::client::Client`], except `serve` and
//! `api-key create` and `db`, which work on the store directly, and `bench`, which starts servers
//! of its own and loads them.

pub mod api_key;
pub mod audit;
pub mod bench;
pub mod db;
pub mod incident;
pub mod intel;
pub mod logs;
pub mod playbook;
pub mod serve;
pub mod triage;
pub mod webhook;

use crate::client::Client;
use crate::output::{self, Output, cell};
use anyhow::Result;
use std::process::ExitCode;

/// What every command gets: where the server is, the key, and how to print.
pub struct Ctx {
    pub url: String,
    pub api_key: Option<String>,
    pub output: Output,
}

impl Ctx {
    pub fn client(&self) -> Result<Client> {
        Client::new(&self.url, self.api_key.clone())
    }
}

pub use crate::client::seg;

/// Creates an API key in the store that `store` names, opening it directly (no server needed);
/// the key's plaintext is in the returned [`tw_store::api_key::NewApiKey`], the only place it
/// exists.
pub async fn new_api_key(
    name: &str,
    scope: &str,
    store: &serve::StoreArgs,
) -> Result<(tw_store::api_key::NewApiKey, tw_store::ApiKeyRecord)> {
    api_key::create_key(name, scope, None, store).await
}

/// `tw-cli queue <queue_id>`.
pub async fn queue_get(ctx: &Ctx, id: &str) -> Result<ExitCode> {
    let v: tw_server::api::queue::QueueEntry = ctx.client()?.get(&format!("/api/webhooks/queue/{}", seg(id))).await?;
    match ctx.output {
        Output::Json => output::json(&v),
        Output::Table => output::pairs(&[
            ("queue_id", v.queue_id.clone()),
            ("status", cell(&v.status)),
            ("source", v.source.clone()),
            ("received_at", cell(&v.received_at)),
            ("attempts", v.attempts.to_string()),
            ("incident_number", cell(&v.incident_number)),
            ("incident_id", cell(&v.incident_id)),
            ("error", cell(&v.error)),
        ]),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tw-cli dead-letters`.
pub async fn dead_letters(ctx: &Ctx, source: Option<&str>) -> Result<ExitCode> {
    let path = crate::client::with_query("/api/dead-letters", &[("source", source.map(str::to_string))]);
    let v: tw_server::api::queue::DeadLetterList = ctx.client()?.get(&path).await?;
    match ctx.output {
        Output::Json => output::json(&v),
        Output::Table => {
            output::table_of(&["ID", "SOURCE", "RECEIVED", "REASON"], &v.data, |d| {
                vec![d.id.clone(), d.source.clone(), cell(&d.received_at), d.reason.clone()]
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
