//! `tw-cli api-key create|list|revoke`: on the store directly (no server needed), like `db`.
//! Creating and revoking write an audit record in the same transaction, with the operating-system
//! user as the actor.

use super::Ctx;
use super::serve::StoreArgs;
use crate::output::{self, Output};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use tw_server::api::audit::{ApiKeyList, ApiKeyView};
use tw_store::api_key::{ApiKeySpec, NewApiKey, parse_duration};
use tw_store::{ApiKeyRecord, AuditActor, NewAuditRecord, Store};

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once.
    Create(CreateArgs),
    /// List keys: name, prefix, scope, status, created, expires, last used, revoked (never a key).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key: every server on this database refuses it from its next request.
    Revoke {
        /// The key's prefix (tw_1a2b3c4d, as `api-key list` shows), its name when only one active
        /// key has it, or the whole key.
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name that says who or what uses the key.
    #[arg(long)]
    pub name: String,
    /// admin: everything; read: only reading.
    #[arg(long, default_value = "admin", value_parser = ["admin", "read"])]
    pub scope: String,
    /// The key stops working this long from now: 90d, 12h, 2w (default: it does not expire).
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
    pub expires_in: Option<String>,
    /// The key stops working at this time (RFC 3339, e.g. 2027-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs an `api-key` command.
pub async fn run(ctx: &Ctx, cmd: ApiKeyCommand) -> Result<ExitCode> {
    match cmd {
        ApiKeyCommand::Create(a) => create(ctx, &a).await,
        ApiKeyCommand::List { store } => list(ctx, &store).await,
        ApiKeyCommand::Revoke { key, store } => revoke(ctx, &key, &store).await,
    }
}

/// When a key made now with these flags expires.
fn expiry(expires_in: Option<&str>, expires_at: Option<&str>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    match (expires_in, expires_at) {
        (Some(d), _) => Ok(Some(now + parse_duration(d).map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?)),
        (None, Some(t)) => {
            let at = DateTime::parse_from_rfc3339(t.trim())
                .map_err(|_| anyhow::anyhow!("--expires-at: '{t}' is not an RFC 3339 time like 2027-01-31T00:00:00Z"))?
                .with_timezone(&Utc);
            if at <= now {
                bail!("--expires-at: {t} is not in the future");
            }
            if at - now > chrono::Duration::days(tw_store::api_key::MAX_DURATION_DAYS) {
                bail!("--expires-at: {t} is more than {} days away", tw_store::api_key::MAX_DURATION_DAYS);
            }
            Ok(Some(at))
        }
        (None, None) => Ok(None),
    }
}

/// The operating-system user running this command, for the audit log: the account of the real
/// user id (or `$USER` where it has no name), and who ran `sudo` when that is how it was run.
pub fn os_user() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let name = account_name(uid)
        .or_else(|| ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty())))
        .unwrap_or_else(|| format!("uid {uid}"));
    match std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty() && *s != name) {
        Some(by) => format!("{name} (sudo by {by})"),
        None => name,
    }
}

/// The account name of `uid` from the password database.
fn account_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r writes into `pwd` and `buf`
    // (whose length it is told) and sets `found` to `&pwd` or null; `pw_name` then points into
    // `buf`, which outlives the read below.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned()).filter(|n| !n.is_empty())
    }
}

fn cli_actor() -> AuditActor {
    AuditActor::Cli { user: os_user() }
}

/// `tw-cli api-key create`.
async fn create(ctx: &Ctx, a: &CreateArgs) -> Result<ExitCode> {
    let expires_at = expiry(a.expires_in.as_deref(), a.expires_at.as_deref(), Utc::now())?;
    let (key, record) = create_key(&a.name, &a.scope, expires_at, &a.store).await?;
    match ctx.output {
        Output::Json => output::json(&json!({
            "key": key.plaintext, "id": record.id, "name": record.name, "prefix": record.prefix, "scope": record.scope,
            "created_at": record.created_at, "expires_at": record.expires_at,
        })),
        Output::Table => {
            let until = record.expires_at.map(|e| format!(", valid until {}", e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
            eprintln!(
                "Created {} API key '{}' ({}{}). Store it now: it is not shown again.",
                record.scope.as_str(),
                record.name,
                record.prefix,
                until.unwrap_or_default()
            );
            println!("{}", key.plaintext);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates an API key in the store that `store` names, opening it directly (no server needed), and
/// its audit record; the key's plaintext is in the returned [`NewApiKey`], the only place it exists.
pub async fn create_key(
    name: &str,
    scope: &str,
    expires_at: Option<DateTime<Utc>>,
    store: &StoreArgs,
) -> Result<(NewApiKey, ApiKeyRecord)> {
    let name = name.trim();
    anyhow::ensure!(!name.is_empty() && name.len() <= 100, "--name must be 1 to 100 characters");
    let scope: tw_store::Scope = scope.parse().map_err(anyhow::Error::msg)?;
    let store = tw_server::open_store(&store.server_config()).await?;
    let key = tw_store::api_key::generate()?;
    let spec = ApiKeySpec { name: name.to_string(), scope, hash: key.hash, prefix: key.prefix.clone(), expires_at };
    let after = json!({"name": name, "prefix": key.prefix, "scope": scope, "expires_at": expires_at});
    let audit = NewAuditRecord {
        actor: cli_actor(),
        client_ip: None,
        action: "api_key.create".into(),
        target: key.prefix.clone(),
        before: None,
        after: Some(after),
        request_id: None,
    };
    let record = store.add_api_key(spec, Some(audit)).await?;
    Ok((key, record))
}

/// `tw-cli api-key list`.
async fn list(ctx: &Ctx, store: &StoreArgs) -> Result<ExitCode> {
    let store = tw_server::open_store(&store.server_config()).await?;
    let keys = store.list_api_keys().await?;
    let now = Utc::now();
    match ctx.output {
        Output::Json => output::json(&ApiKeyList { data: keys.iter().map(|k| ApiKeyView::new(k, now)).collect() }),
        Output::Table => {
            let time =
                |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            output::table_of(&["NAME", "PREFIX", "SCOPE", "STATUS", "CREATED", "EXPIRES", "LAST USED", "REVOKED"], &keys, |k| {
                vec![
                    k.name.clone(),
                    k.prefix.clone(),
                    k.scope.as_str().to_string(),
                    k.status(now).to_string(),
                    time(Some(k.created_at)),
                    time(k.expires_at),
                    time(k.last_used_at),
                    time(k.revoked_at),
                ]
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one key `given` names: a prefix, the whole key, or a name that only one active key has.
fn resolve<'a>(keys: &'a [ApiKeyRecord], given: &str) -> Result<&'a ApiKeyRecord> {
    let given = given.trim();
    // A whole key starts with its prefix: pasting the key works as well as typing the prefix.
    let by_key: Vec<&ApiKeyRecord> = if given.starts_with(tw_store::api_key::PREFIX) {
        keys.iter().filter(|k| given.starts_with(&k.prefix)).collect()
    } else {
        Vec::new()
    };
    let candidates: Vec<&ApiKeyRecord> = if by_key.is_empty() { keys.iter().filter(|k| k.name == given).collect() } else { by_key };
    let active: Vec<&ApiKeyRecord> = candidates.iter().copied().filter(|k| k.revoked_at.is_none()).collect();
    match (active.as_slice(), candidates.as_slice()) {
        ([one], _) => Ok(one),
        ([], []) => bail!("no API key has the prefix or name '{given}' (see `tw-cli api-key list`)"),
        ([], [revoked, ..]) => Ok(revoked),
        (many, _) => bail!(
            "{} active keys match '{given}' ({}): revoke one by its prefix",
            many.len(),
            many.iter().map(|k| k.prefix.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `tw-cli api-key revoke`.
async fn revoke(ctx: &Ctx, given: &str, store: &StoreArgs) -> Result<ExitCode> {
    let store: Arc<dyn Store> = tw_server::open_store(&store.server_config()).await?;
    let keys = store.list_api_keys().await?;
    let key = resolve(&keys, given)?;
    let now = Utc::now();
    if let Some(at) = key.revoked_at {
        // Nothing changes, so nothing is audited; still a success, so scripts may repeat it.
        eprintln!(
            "API key '{}' ({}) was already revoked at {}.",
            key.name,
            key.prefix,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        print_key(ctx, key, now);
        return Ok(ExitCode::SUCCESS);
    }
    let mut after = key.clone();
    after.revoked_at = Some(now);
    let audit = NewAuditRecord {
        actor: cli_actor(),
        client_ip: None,
        action: "api_key.revoke".into(),
        target: key.prefix.clone(),
        before: Some(audit_view(key, now)),
        after: Some(audit_view(&after, now)),
        request_id: None,
    };
    if !store.revoke_api_key(&key.id, now, Some(audit)).await? {
        bail!("API key '{}' ({}) was revoked meanwhile by someone else", key.name, key.prefix);
    }
    eprintln!("Revoked {} API key '{}' ({}): servers refuse it from their next request.", key.scope.as_str(), key.name, key.prefix);
    print_key(ctx, &after, now);
    Ok(ExitCode::SUCCESS)
}

/// A key in an audit snapshot: the listing's view without the last-use time, which is not part of
/// the change.
fn audit_view(k: &ApiKeyRecord, now: DateTime<Utc>) -> Value {
    let mut v = serde_json::to_value(ApiKeyView::new(k, now)).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("last_used_at");
    }
    v
}

fn print_key(ctx: &Ctx, k: &ApiKeyRecord, now: DateTime<Utc>) {
    if ctx.output == Output::Json {
        output::json(&ApiKeyView::new(k, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tw_store::Scope;

    fn key(name: &str, prefix: &str, revoked: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            id: prefix.into(),
            name: name.into(),
            prefix: prefix.into(),
            scope: Scope::Read,
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: revoked.then(Utc::now),
            last_used_at: None,
        }
    }

    #[test]
    fn a_key_is_named_by_prefix_whole_key_or_unique_name() {
        let keys = vec![key("ci", "tw_aaaaaaaa", false), key("ci", "tw_bbbbbbbb", true), key("ops", "tw_cccccccc", false)];
        assert_eq!(resolve(&keys, "tw_bbbbbbbb").unwrap().prefix, "tw_bbbbbbbb");
        assert_eq!(resolve(&keys, "tw_cccccccc0123456789").unwrap().prefix, "tw_cccccccc");
        assert_eq!(resolve(&keys, "ci").unwrap().prefix, "tw_aaaaaaaa", "the revoked one does not make it ambiguous");
        assert!(resolve(&keys, "nobody").unwrap_err().to_string().contains("no API key"));
        let twins = vec![key("ci", "tw_aaaaaaaa", false), key("ci", "tw_dddddddd", false)];
        let e = resolve(&twins, "ci").unwrap_err().to_string();
        assert!(e.contains("tw_aaaaaaaa") && e.contains("tw_dddddddd"), "{e}");
    }

    #[test]
    fn expiry_is_a_duration_or_a_future_time() {
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(expiry(Some("90d"), None, now).unwrap(), Some(now + chrono::Duration::days(90)));
        assert_eq!(expiry(None, Some("2027-01-01T00:00:00Z"), now).unwrap().unwrap().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(expiry(None, Some("2020-01-01T00:00:00Z"), now).unwrap_err().to_string().contains("not in the future"));
        assert!(expiry(Some("forever"), None, now).is_err());
        assert_eq!(expiry(None, None, now).unwrap(), None);
    }
}
