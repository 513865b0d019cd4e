//! Carrying out `/admin`: the handler checks the chat, parses the arguments ([`super::parse`]),
//! runs the command and appends it with its outcome to the admin log. Each subcommand is one
//! small function that asks the ledger, answers the administrator and returns what the log
//! records; `/admin promo` and `/admin refund` are carried out where their domain lives
//! ([`crate::growth`], [`crate::stars`]). What the answers show is built by the pure
//! [`stats_view`] and [`user_view`].

use std::sync::Arc;

use jiff::Timestamp;
use teloxide::prelude::*;
use teloxide::types::MessageId;
use wgsub_ledger::{AdminGrant, Revenue, Stats, SyncError, User as LedgerUser};

use super::{AdminCommand, Audience, UserRef, parse};
use crate::app::App;
use crate::broadcast;
use crate::growth;
use crate::handlers::reply::{Reply, on_message};
use crate::handlers::{HandlerError, HandlerResult, in_private_chat, sync_quietly, user_id};
use crate::stars;
use crate::store::{self, AdminLogEntry};
use crate::telegram;
use crate::text;

/// A command's name and outcome, as the admin log records them.
pub type Logged = (&'static str, String);

/// The outcome logged when the named user does not exist.
const UNKNOWN_USER: &str = "unknown user";

/// `/admin …` from an administrator, in a private chat only.
pub async fn command(
    bot: Bot,
    message: Message,
    app: Arc<App>,
    arguments: String,
) -> HandlerResult {
    on_message(&bot, &app, &message, "admin", async |to| {
        let Some(from) = message.from.as_ref() else {
            return Ok(());
        };
        if !in_private_chat(to, &message).await? {
            return Ok(());
        }
        let admin_id = user_id(from)?;
        let command = match parse(&arguments) {
            Ok(command) => command,
            Err(error) => return to.send(text::admin_usage_error(to.lang, &error)).await,
        };
        let (name, outcome) = run(to, admin_id, command).await?;
        let entry = AdminLogEntry {
            admin_id,
            command: name.into(),
            arguments: arguments.trim().into(),
            outcome,
        };
        store::log_admin(&app.ledger, &entry, Timestamp::now()).await?;
        Ok(())
    })
    .await
}

/// Carries out a parsed command.
pub async fn run(
    to: Reply<'_>,
    admin_id: i64,
    command: AdminCommand,
) -> Result<Logged, HandlerError> {
    let now = Timestamp::now();
    match command {
        AdminCommand::Help => {
            to.send(text::admin_help(to.lang)).await?;
            Ok(("help", "shown".into()))
        }
        AdminCommand::Stats => {
            let stats = to.app.ledger.stats(now).await?;
            to.send(text::admin_stats(to.lang, &stats_view(&stats)))
                .await?;
            Ok(("stats", "shown".into()))
        }
        AdminCommand::Grant { user, days, reason } => {
            grant(to, admin_id, &user, days, reason, now).await
        }
        AdminCommand::Promo(command) => growth::run_admin_promo(to, admin_id, command, now).await,
        AdminCommand::Suspend { user, reason } => {
            set_suspended(to, admin_id, &user, reason, true, now).await
        }
        AdminCommand::Unsuspend { user, reason } => {
            set_suspended(to, admin_id, &user, reason, false, now).await
        }
        AdminCommand::Find { user } => find(to, &user).await,
        AdminCommand::Refund { charge_id, reason } => {
            let outcome = stars::admin_refund(to, admin_id, &charge_id, reason).await?;
            Ok(("refund", outcome))
        }
        AdminCommand::Broadcast { audience, text } => {
            send_broadcast(to, admin_id, audience, &text, now).await
        }
    }
}

/// The ledger user an admin command names; `None` after telling the administrator there is
/// no such user.
async fn resolve(to: Reply<'_>, user: &UserRef) -> Result<Option<LedgerUser>, HandlerError> {
    let found = match user {
        UserRef::Id(id) => to.app.ledger.user(*id).await?,
        UserRef::Username(name) => to.app.ledger.user_by_username(name).await?,
    };
    if found.is_none() {
        to.send(text::admin_user_not_found(to.lang, user)).await?;
    }
    Ok(found)
}

/// What `/admin stats` shows of the ledger's numbers.
pub fn stats_view(stats: &Stats) -> text::StatsView {
    let money = |revenue: &[Revenue]| {
        revenue
            .iter()
            .map(|r| (r.currency.clone(), r.amount_minor))
            .collect()
    };
    text::StatsView {
        users: stats.users,
        active: stats.active,
        expired: stats.expired,
        never_paid: stats.never_paid,
        suspended: stats.suspended,
        revenue_today: money(&stats.revenue_today),
        revenue_30_days: money(&stats.revenue_30_days),
    }
}

/// What `/admin find` shows of a user.
pub fn user_view(user: &LedgerUser) -> text::UserView {
    text::UserView {
        telegram_id: user.telegram_id,
        username: user.username.clone(),
        name: [Some(user.first_name.clone()), user.last_name.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        language_code: user.language_code.clone(),
        created_at: user.created_at,
        last_seen_at: user.last_seen_at,
        paid_until: user.entitlement.paid_until,
        plan: user.entitlement.plan.clone(),
        max_devices: user.entitlement.max_devices,
        suspended: user.suspended,
    }
}

/// `/admin grant`: the days go through the ledger; a failed `VpnSubscription` write is left to
/// the drift loop.
async fn grant(
    to: Reply<'_>,
    admin_id: i64,
    user: &UserRef,
    days: u32,
    reason: Option<String>,
    now: Timestamp,
) -> Result<Logged, HandlerError> {
    let Some(target) = resolve(to, user).await? else {
        return Ok(("grant", UNKNOWN_USER.into()));
    };
    let grant = AdminGrant {
        user_id: target.telegram_id,
        days,
        admin_id,
        reason: reason.unwrap_or_else(|| "granted with /admin grant".into()),
    };
    let app = to.app;
    let entitlement = match app.sync.admin_grant(&app.ledger, &grant, now).await {
        Ok(entitlement) => entitlement,
        Err(error @ (SyncError::Kube(_) | SyncError::Unrepaired(_))) => {
            tracing::warn!(%error, "grant recorded; VpnSubscription write failed, the drift loop retries");
            app.ledger
                .user(target.telegram_id)
                .await?
                .map(|user| user.entitlement)
                .ok_or("granted user vanished")?
        }
        Err(SyncError::Ledger(error)) => return Err(error.into()),
    };
    let id = target.telegram_id;
    to.send(text::admin_granted(
        to.lang,
        id,
        days,
        entitlement.paid_until,
    ))
    .await?;
    Ok(("grant", format!("granted {days} days to {id}")))
}

/// `/admin suspend` and `/admin unsuspend`.
async fn set_suspended(
    to: Reply<'_>,
    admin_id: i64,
    user: &UserRef,
    reason: Option<String>,
    suspended: bool,
    now: Timestamp,
) -> Result<Logged, HandlerError> {
    let name = if suspended { "suspend" } else { "unsuspend" };
    let Some(target) = resolve(to, user).await? else {
        return Ok((name, UNKNOWN_USER.into()));
    };
    let id = target.telegram_id;
    let reason = reason.unwrap_or_else(|| format!("/admin {name}"));
    let changed = to
        .app
        .ledger
        .set_suspended(id, suspended, admin_id, &reason, now)
        .await?;
    if changed {
        sync_quietly(to.app, id).await;
    }
    to.send(text::admin_suspended(to.lang, id, suspended, changed))
        .await?;
    let outcome = if changed { "changed" } else { "unchanged" };
    Ok((name, format!("{outcome}: {id}")))
}

/// `/admin find`.
async fn find(to: Reply<'_>, user: &UserRef) -> Result<Logged, HandlerError> {
    let Some(target) = resolve(to, user).await? else {
        return Ok(("find", UNKNOWN_USER.into()));
    };
    to.send(text::admin_found(to.lang, &user_view(&target)))
        .await?;
    Ok(("find", format!("found {}", target.telegram_id)))
}

/// `/admin broadcast`: recorded, sent paced with a progress message, and its tally recorded.
async fn send_broadcast(
    to: Reply<'_>,
    admin_id: i64,
    audience: Audience,
    body: &str,
    now: Timestamp,
) -> Result<Logged, HandlerError> {
    let (ledger, lang) = (&to.app.ledger, to.lang);
    let recipients = store::recipients(ledger, audience, now).await?;
    if recipients.is_empty() {
        to.send(text::broadcast_no_recipients(lang)).await?;
        return Ok(("broadcast", "no recipients".into()));
    }
    let total = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
    let id = store::start_broadcast(ledger, admin_id, audience, body, total, now).await?;
    let progress = to
        .bot
        .send_message(to.chat, text::broadcast_started(lang, audience, total))
        .await?;
    let tally = paced(to, progress.id, &recipients, body).await;
    store::finish_broadcast(ledger, id, tally, Timestamp::now()).await?;
    to.send(text::broadcast_done(lang, tally)).await?;
    let outcome = format!(
        "{}: {} delivered, {} failed",
        audience.as_str(),
        tally.delivered,
        tally.failed
    );
    Ok(("broadcast", outcome))
}

/// Sends the broadcast paced, editing the progress message as it goes.
async fn paced(
    to: Reply<'_>,
    progress: MessageId,
    recipients: &[i64],
    body: &str,
) -> broadcast::Tally {
    let (bot, app) = (to.bot, to.app);
    let tally = broadcast::run(
        app.settings.pacing,
        recipients,
        app.settings.progress_every,
        |recipient| telegram::send_text(bot, recipient, body.to_owned()),
        tokio::time::sleep,
        |tally| async move {
            let shown = text::broadcast_progress(to.lang, tally);
            if let Err(error) = bot.edit_message_text(to.chat, progress, shown).await {
                tracing::debug!(%error, "broadcast progress not shown");
            }
        },
    )
    .await;
    app.metrics
        .notifications("broadcast", true, tally.delivered.into());
    app.metrics
        .notifications("broadcast", false, tally.failed.into());
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_ledger::Entitlement;

    #[test]
    fn find_shows_the_full_name_and_the_entitlement() {
        let at: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let mut user = LedgerUser {
            telegram_id: 42,
            username: Some("ann".into()),
            first_name: "Ann".into(),
            last_name: Some("Lee".into()),
            language_code: Some("en".into()),
            email: None,
            phone: None,
            suspended: true,
            created_at: at,
            last_seen_at: at,
            entitlement: Entitlement {
                paid_until: Some(at),
                plan: Some("month".into()),
                max_devices: 2,
                ..Entitlement::default()
            },
            ledger_version: 1,
            synced_version: 1,
        };
        let view = user_view(&user);
        assert_eq!(view.name, "Ann Lee");
        assert_eq!(
            (view.paid_until, view.plan.as_deref(), view.max_devices),
            (Some(at), Some("month"), 2)
        );
        assert!(view.suspended);
        user.last_name = None;
        assert_eq!(user_view(&user).name, "Ann");
    }
}
