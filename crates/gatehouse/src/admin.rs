//! The operator's commands: `gatehouse user …` and `gatehouse audit`.
//!
//! They work on the configured database (`DATABASE_URL`, SQLite or
//! PostgreSQL) with the auth service's own state and account operations
//! ([`auth_service::accounts`]), so a user disabled here has every session
//! revoked, announced to Redis when configured and published on the
//! revocation feed — gateways refuse the user's access tokens within
//! seconds — and the action is in the audit log like any other.
//!
//! Answers go to stdout (a table, or JSON with `--json`); errors are one line
//! on stderr with a non-zero exit.

use std::io::BufRead as _;

use anyhow::{Context as _, anyhow, bail};
use auth_service::AppState;
use auth_service::audit::EventKind;
use auth_service::domain::Email;
use auth_service::http::ClientInfo;
use auth_service::store::{AuditEvent, Session, User};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::config::Settings;

/// Accounts are named by email; a positional email may start with `-`
/// (valid in a local part), so each takes hyphen-led values as the email.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from the first line of stdin
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// List accounts, oldest first
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one account and its active sessions
    Show {
        #[arg(allow_hyphen_values = true)]
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: no login or refresh, every session revoked
    Disable {
        #[arg(allow_hyphen_values = true)]
        email: String,
    },
    /// Enable a disabled account
    Enable {
        #[arg(allow_hyphen_values = true)]
        email: String,
    },
    /// Delete an account (its email can register again) and revoke every session
    Delete {
        #[arg(allow_hyphen_values = true)]
        email: String,
    },
    /// List an account's active sessions
    Sessions {
        #[arg(allow_hyphen_values = true)]
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke every session of an account
    RevokeSessions {
        #[arg(allow_hyphen_values = true)]
        email: String,
    },
    /// Mark an account's email address verified (when the user cannot receive the mail)
    VerifyEmail {
        #[arg(allow_hyphen_values = true)]
        email: String,
    },
}

/// `gatehouse audit` options.
#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only this account's events
    #[arg(long)]
    user: Option<String>,
    /// Only events since: unix seconds, RFC 3339 (2026-11-28T10:00:00Z), or an age (30m, 12h, 7d)
    #[arg(long)]
    since: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: i64,
    #[arg(long)]
    json: bool,
}

/// The operator, as the audit log records them.
fn operator() -> ClientInfo {
    ClientInfo { ip: None, user_agent: Some("gatehouse-cli".to_owned()) }
}

async fn open(settings: &Settings) -> anyhow::Result<AppState> {
    let config = settings.auth_config().context("configuration error")?;
    settings.ensure_data_dir().context("configuration error")?;
    auth_service::build_state(config).await.context("could not open the database (check DATABASE_URL)")
}

async fn find(state: &AppState, email: &str) -> anyhow::Result<User> {
    let normalised = Email::parse(email).map_err(|e| anyhow!("{email:?} is not a valid email: {e}"))?;
    state
        .store
        .find_user_by_email(normalised.as_str())
        .await
        .context("could not read the database")?
        .ok_or_else(|| anyhow!("no user with email {}", normalised.as_str()))
}

fn timestamp(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.user_id,
        "email": u.email,
        "name": u.name,
        "active": u.active,
        "email_verified": u.email_verified_at.is_some(),
        "created_at": timestamp(u.created_at),
    })
}

fn session_json(s: &Session) -> Value {
    json!({
        "id": s.session_id,
        "created_at": timestamp(s.created_at),
        "last_used_at": timestamp(s.last_rotated_at),
        "expires_at": timestamp(s.expires_at),
        "ip": s.ip,
        "user_agent": s.user_agent,
    })
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn print_users(users: &[User]) {
    println!("{:<36}  {:<32}  {:<8}  {:<20}  NAME", "ID", "EMAIL", "ACTIVE", "CREATED");
    for u in users {
        println!(
            "{:<36}  {:<32}  {:<8}  {:<20}  {}",
            u.user_id,
            u.email,
            if u.active { "yes" } else { "no" },
            timestamp(u.created_at),
            u.name
        );
    }
}

fn print_sessions(sessions: &[Session]) {
    println!("{:<36}  {:<20}  {:<20}  {:<15}  USER AGENT", "SESSION", "CREATED", "LAST USED", "IP");
    for s in sessions {
        println!(
            "{:<36}  {:<20}  {:<20}  {:<15}  {}",
            s.session_id,
            timestamp(s.created_at),
            timestamp(s.last_rotated_at),
            s.ip.as_deref().unwrap_or("-"),
            s.user_agent.as_deref().unwrap_or("-")
        );
    }
}

/// Runs one `gatehouse user …` command.
///
/// # Errors
/// One line for the operator: a configuration or database problem, an
/// unknown user, an invalid value.
pub async fn run_user(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let state = open(settings).await?;
    let result = run_user_on(&state, command).await;
    state.store.close().await;
    result
}

async fn run_user_on(state: &AppState, command: UserCommand) -> anyhow::Result<()> {
    let now = state.now();
    match command {
        UserCommand::Create { email, name } => {
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password).context("could not read the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            let user = auth_service::accounts::create_account(state, &operator(), &email, &name, password)
                .await
                .map_err(|e| anyhow!("could not create the user: {e}"))?;
            println!("created {} ({})", user.email, user.user_id);
        }
        UserCommand::List { limit, offset, json } => {
            if !(1..=10_000).contains(&limit) || offset < 0 {
                bail!("--limit must be 1 to 10000 and --offset not negative");
            }
            let users = state.store.list_users(limit, offset).await.context("could not read the database")?;
            if json {
                print_json(&Value::Array(users.iter().map(user_json).collect()));
            } else {
                print_users(&users);
            }
        }
        UserCommand::Show { email, json } => {
            let user = find(state, &email).await?;
            let sessions = state.store.list_active_sessions(user.user_id, now).await?;
            if json {
                let mut v = user_json(&user);
                v["sessions"] = Value::Array(sessions.iter().map(session_json).collect());
                print_json(&v);
            } else {
                print_users(std::slice::from_ref(&user));
                println!();
                print_sessions(&sessions);
            }
        }
        UserCommand::Sessions { email, json } => {
            let user = find(state, &email).await?;
            let sessions = state.store.list_active_sessions(user.user_id, now).await?;
            if json {
                print_json(&Value::Array(sessions.iter().map(session_json).collect()));
            } else {
                print_sessions(&sessions);
            }
        }
        UserCommand::Disable { email } => {
            let user = find(state, &email).await?;
            let ended = auth_service::accounts::set_account_active(state, &operator(), user.user_id, false)
                .await?
                .ok_or_else(|| anyhow!("no user with email {}", user.email))?;
            println!("disabled {}; revoked {} sessions", user.email, ended.len());
        }
        UserCommand::Enable { email } => {
            let user = find(state, &email).await?;
            auth_service::accounts::set_account_active(state, &operator(), user.user_id, true)
                .await?
                .ok_or_else(|| anyhow!("no user with email {}", user.email))?;
            println!("enabled {}", user.email);
        }
        UserCommand::Delete { email } => {
            let user = find(state, &email).await?;
            let ended = auth_service::accounts::delete_account(state, &operator(), user.user_id)
                .await?
                .ok_or_else(|| anyhow!("no user with email {}", user.email))?;
            println!("deleted {}; revoked {} sessions", user.email, ended.len());
        }
        UserCommand::RevokeSessions { email } => {
            let user = find(state, &email).await?;
            let ended =
                auth_service::accounts::end_sessions(state, &operator(), user.user_id, None, EventKind::LogoutAll)
                    .await?;
            println!("revoked {} sessions of {}", ended.len(), user.email);
        }
        UserCommand::VerifyEmail { email } => {
            let user = find(state, &email).await?;
            if user.email_verified_at.is_some() {
                println!("{} is already verified", user.email);
                return Ok(());
            }
            if !auth_service::accounts::mark_email_verified(state, &operator(), &user).await? {
                bail!("no user with email {}", user.email);
            }
            println!("verified {}", user.email);
        }
    }
    Ok(())
}

/// `--since`: unix seconds, RFC 3339, or an age such as `30m`, `12h`, `7d`.
fn parse_since(raw: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(unix) = raw.parse::<i64>() {
        return Ok(unix);
    }
    if let Ok(t) = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let split = raw.len().saturating_sub(1);
    let (digits, unit) = raw.split_at(split);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match digits.parse::<i64>() {
        Ok(n) if unit_secs > 0 && n >= 0 => Ok(now.saturating_sub(n.saturating_mul(unit_secs))),
        _ => bail!("--since {raw:?}: use unix seconds, RFC 3339 (2026-11-28T10:00:00Z) or an age like 30m, 12h, 7d"),
    }
}

fn audit_json(e: &AuditEvent) -> Value {
    json!({
        "id": e.audit_event_id,
        "at": timestamp(e.occurred_at),
        "event": e.kind,
        "user_id": e.user_id,
        "email": e.email,
        "session_id": e.session_id,
        "ip": e.ip,
        "user_agent": e.user_agent,
        "detail": e.detail,
    })
}

/// Runs `gatehouse audit`: the security-event log, newest first.
///
/// # Errors
/// As [`run_user`].
pub async fn run_audit(settings: &Settings, args: AuditArgs) -> anyhow::Result<()> {
    let state = open(settings).await?;
    let result = async {
        if !(1..=10_000).contains(&args.limit) {
            bail!("--limit must be 1 to 10000");
        }
        let since = args.since.as_deref().map(|s| parse_since(s, state.now())).transpose()?.unwrap_or(i64::MIN);
        let user_id = match &args.user {
            Some(email) => Some(find(&state, email).await?.user_id),
            None => None,
        };
        let events = state.store.list_audit_events_since(user_id, since, args.limit).await?;
        if args.json {
            for e in &events {
                println!("{}", audit_json(e));
            }
        } else {
            println!("{:<20}  {:<24}  {:<32}  {:<15}  DETAIL", "AT", "EVENT", "EMAIL", "IP");
            for e in &events {
                println!(
                    "{:<20}  {:<24}  {:<32}  {:<15}  {}",
                    timestamp(e.occurred_at),
                    e.kind,
                    e.email.as_deref().unwrap_or("-"),
                    e.ip.as_deref().unwrap_or("-"),
                    e.detail.as_deref().unwrap_or("")
                );
            }
        }
        Ok(())
    }
    .await;
    state.store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_unix_seconds_rfc3339_and_ages() {
        let now = 1_800_000_000;
        assert_eq!(parse_since("1700000000", now).unwrap(), 1_700_000_000);
        assert_eq!(parse_since("2023-11-14T22:13:20Z", now).unwrap(), 1_700_000_000);
        assert_eq!(parse_since("30m", now).unwrap(), now - 1800);
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * 86_400);
        for bad in ["", "m", "-3h", "12y", "yesterday", "1.5h"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
