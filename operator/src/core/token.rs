//! StrakeToken: which token to hold, what to publish, which phase it is in,
//! and when to look again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use strake_crds::contract::{self, PreviousToken, SourceRef, TokenRecord};
use strake_crds::pricing::Picodollars;
use strake_crds::token::{Token, TokenHash};
use strake_crds::{Phase, StrakeToken, StrakeTokenStatus};

use crate::core::condition;

/// Reasons on a StrakeToken's `Ready` condition (and its events).
pub mod reason {
    pub const ACTIVE: &str = "Active";
    pub const SUSPENDED: &str = "Suspended";
    pub const EXPIRED: &str = "Expired";
    pub const UPSTREAM_NOT_FOUND: &str = "UpstreamNotFound";
    pub const UPSTREAM_NOT_READY: &str = "UpstreamNotReady";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const PUBLISH_FAILED: &str = "PublishFailed";
}

/// Event reasons that are not also condition reasons.
pub mod event {
    pub const ISSUED: &str = "Issued";
    /// A replacement after the held token was lost or edited. Its own reason,
    /// because the event recorder folds repeats of one reason into a series
    /// that keeps the first note.
    pub const REISSUED: &str = "Reissued";
    pub const ROTATED: &str = "Rotated";
    pub const RESUMED: &str = "Resumed";
    /// The `ExpiringSoon` condition turned True.
    pub const EXPIRING_SOON: &str = "ExpiringSoon";
    pub const REVOKED: &str = "Revoked";
}

/// One `spec.upstreams` entry, as found in the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamState {
    /// No such UpstreamKey (or it is being deleted).
    Missing,
    /// It exists but is not published (see its Ready condition).
    NotReady,
    Ready,
}

/// Everything the phase depends on.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub expires_at: Option<Timestamp>,
    pub now: Timestamp,
    pub suspended: bool,
    /// The plaintext Secret's name, when a Secret of that name exists but
    /// belongs to something else.
    pub secret_conflict: Option<&'a str>,
    /// `spec.upstreams` in order, with what was found.
    pub upstreams: &'a [(&'a str, UpstreamState)],
}

/// What the proxy namespace should hold for the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// The token's current record (its hash and policy).
    Record,
    /// Nothing: the proxy must forget the token.
    Withdraw,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub phase: Phase,
    pub reason: &'static str,
    pub message: String,
    pub publish: Publish,
}

/// The phase decision. Precedence: Expired, SecretConflict (Failed),
/// Suspended, UpstreamNotFound, UpstreamNotReady, Active.
///
/// A token whose upstreams are missing or not Ready is still *published*
/// (Pending is a report, not a withdrawal): its record carries every upstream
/// id, and the proxy serves only upstreams it has a Secret for. So a
/// suspension, an expiry or a model change always reaches the proxy, the
/// token keeps working for its healthy upstreams, and a recreated UpstreamKey
/// is usable again without touching the token.
///
/// Expired and SecretConflict withdraw the record: fail closed.
pub fn decide(f: &Facts<'_>) -> Verdict {
    if let Some(at) = f.expires_at.filter(|at| *at <= f.now) {
        return Verdict {
            phase: Phase::Expired,
            reason: reason::EXPIRED,
            message: format!("expired at {at}; the proxy no longer accepts it"),
            publish: Publish::Withdraw,
        };
    }
    if let Some(secret) = f.secret_conflict {
        return Verdict {
            phase: Phase::Failed,
            reason: reason::SECRET_CONFLICT,
            message: format!(
                "Secret {secret} exists and is not owned by this StrakeToken; \
                 delete it or set spec.secretName to an unused name"
            ),
            publish: Publish::Withdraw,
        };
    }
    if f.suspended {
        return Verdict {
            phase: Phase::Suspended,
            reason: reason::SUSPENDED,
            message: "spec.suspended is true: the proxy rejects the token with 403".into(),
            publish: Publish::Record,
        };
    }
    let names = |state: UpstreamState| -> Vec<&str> {
        f.upstreams
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(n, _)| *n)
            .collect()
    };
    let missing = names(UpstreamState::Missing);
    if !missing.is_empty() {
        return Verdict {
            phase: Phase::Pending,
            reason: reason::UPSTREAM_NOT_FOUND,
            message: format!(
                "UpstreamKey not found in this namespace: {}",
                missing.join(", ")
            ),
            publish: Publish::Record,
        };
    }
    let not_ready = names(UpstreamState::NotReady);
    if !not_ready.is_empty() {
        return Verdict {
            phase: Phase::Pending,
            reason: reason::UPSTREAM_NOT_READY,
            message: format!(
                "UpstreamKey not Ready (see its Ready condition): {}",
                not_ready.join(", ")
            ),
            publish: Publish::Record,
        };
    }
    Verdict {
        phase: Phase::Active,
        reason: reason::ACTIVE,
        message: format!(
            "the proxy accepts the token for {}",
            f.upstreams
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        publish: Publish::Record,
    }
}

/// What the holder's Secret currently holds, if it exists.
#[derive(Clone, Copy, Debug)]
pub struct Held<'a> {
    /// The `token` key's bytes.
    pub token: Option<&'a [u8]>,
    /// The rotation annotation.
    pub rotation: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenChoice {
    Keep(Token),
    Mint(MintReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// Never issued before.
    First,
    /// The Secret (or its token) is gone after an earlier issue: the old token
    /// cannot be recovered, so it is replaced.
    SecretDeleted,
    /// The Secret's token is not a well-formed Strake token, or its
    /// bookkeeping annotation was removed.
    Edited,
    /// The Secret's token is not the one the proxy knows: edited by hand, or
    /// an earlier publish did not complete. Minting is the only safe answer.
    Mismatch,
    /// `spec.rotation` changed.
    Rotated,
}

/// Keep the held token, or mint a new one. A token is kept only when it is
/// well-formed, was minted for the current `spec.rotation`, and is the token
/// the proxy has (when the proxy has one).
pub fn choose_token(
    held: Option<Held<'_>>,
    rotation: i64,
    published: Option<&TokenHash>,
    issued_before: bool,
) -> TokenChoice {
    let Some(held) = held else {
        return TokenChoice::Mint(if issued_before {
            MintReason::SecretDeleted
        } else {
            MintReason::First
        });
    };
    let Some(raw) = held.token else {
        return TokenChoice::Mint(MintReason::SecretDeleted);
    };
    match held.rotation.map(str::parse::<i64>) {
        Some(Ok(r)) if r == rotation => {}
        Some(Ok(_)) => return TokenChoice::Mint(MintReason::Rotated),
        None | Some(Err(_)) => return TokenChoice::Mint(MintReason::Edited),
    }
    let Some(token) = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| Token::parse(s).ok())
    else {
        return TokenChoice::Mint(MintReason::Edited);
    };
    match published {
        Some(hash) if *hash != token.hash() => TokenChoice::Mint(MintReason::Mismatch),
        _ => TokenChoice::Keep(token),
    }
}

impl MintReason {
    /// The event announcing a new token: (reason, note). Shows only the prefix.
    pub fn event(
        self,
        secret: &str,
        prefix: &str,
        rotation: i64,
        previous_until: Option<&Time>,
    ) -> (&'static str, String) {
        match self {
            MintReason::First => (
                event::ISSUED,
                format!("issued token {prefix}… into Secret {secret}"),
            ),
            MintReason::SecretDeleted => (
                event::REISSUED,
                format!(
                    "Secret {secret} or its token was deleted; the old token cannot be recovered \
                     and no longer works. Issued a new token {prefix}…"
                ),
            ),
            MintReason::Edited => (
                event::REISSUED,
                format!(
                    "Secret {secret} was edited and its token is no longer trusted; it no longer \
                     works. Issued a new token {prefix}…"
                ),
            ),
            MintReason::Mismatch => (
                event::REISSUED,
                format!(
                    "the token in Secret {secret} is not the one the proxy knows (edited, or an \
                     earlier publish failed); issued a new token {prefix}…"
                ),
            ),
            MintReason::Rotated => (
                event::ROTATED,
                match previous_until {
                    Some(until) => format!(
                        "rotation {rotation}: issued a new token {prefix}… into Secret {secret}; the \
                         previous token keeps working until {}",
                        until.0
                    ),
                    None => format!(
                        "rotation {rotation}: issued a new token {prefix}… into Secret {secret}; the \
                         previous token stops working now"
                    ),
                },
            ),
        }
    }
}

/// What decides whether a replaced token still works.
#[derive(Clone, Copy, Debug)]
pub struct Succession<'a> {
    /// Why a token was minted in this reconcile, if one was.
    pub minted: Option<MintReason>,
    /// The record the proxy has now (the replaced token's, if one was minted).
    pub published: Option<&'a TokenRecord>,
    /// When the token now issued was minted.
    pub issued_at: Timestamp,
    /// `spec.rotationGracePeriod`.
    pub grace: Duration,
    pub suspended: bool,
    pub now: Timestamp,
}

/// The token a rotation replaced, while its grace period lasts. Only a
/// rotation grants one (a token re-minted because its Secret was lost or
/// edited is not trusted), for the token the proxy had, until the new
/// token's issue time plus the grace. A later reconcile keeps it until
/// then, ending it sooner if the grace is shortened (never later if it is
/// lengthened); a second rotation replaces it with the token it replaced,
/// so the oldest ends at once; suspending ends it.
pub fn previous_token(s: Succession<'_>) -> Option<PreviousToken> {
    if s.suspended || s.grace.is_zero() {
        return None;
    }
    let deadline = s.issued_at.checked_add(jiff_span(s.grace)).ok()?;
    let previous = match s.minted {
        Some(MintReason::Rotated) => PreviousToken {
            sha256: s.published?.sha256,
            valid_until: Time(deadline),
        },
        Some(_) => return None,
        None => {
            let kept = s.published?.previous.clone()?;
            PreviousToken {
                valid_until: Time(kept.valid_until.0.min(deadline)),
                ..kept
            }
        }
    };
    (previous.valid_until.0 > s.now).then_some(previous)
}

pub fn source(token: &StrakeToken) -> SourceRef {
    SourceRef {
        namespace: token.metadata.namespace.clone().unwrap_or_default(),
        name: token.metadata.name.clone().unwrap_or_default(),
    }
}

/// The record the proxy gets: the token's hash and policy, never the token.
pub fn record(token: &StrakeToken, sha256: TokenHash) -> TokenRecord {
    let source = source(token);
    let spec = &token.spec;
    TokenRecord {
        name: format!("{}/{}", source.namespace, source.name),
        identity: spec.identity.clone(),
        sha256,
        upstreams: spec
            .upstreams
            .iter()
            .map(|u| contract::upstream_id(&source.namespace, &u.0))
            .collect(),
        expires_at: spec.expires_at.clone(),
        suspended: spec.suspended,
        allowed_models: spec.allowed_models.iter().map(|m| m.0.clone()).collect(),
        limits: spec.limits,
        endpoints: spec.endpoints.clone(),
        source: Some(source),
        budget: None,
        federated: Vec::new(),
        previous: None,
    }
}

/// `now` without its fraction of a second: API timestamps (status `Time`)
/// carry whole seconds, and a value that does not survive the round trip
/// would make every resync rewrite the status.
pub fn whole_seconds(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// True once `expires_at` is reached: a token is valid strictly before it.
pub fn is_expired(expires_at: Option<&Time>, now: Timestamp) -> bool {
    expires_at.is_some_and(|at| at.0 <= now)
}

/// When to reconcile again: at the expiry instant if that comes before the
/// next resync, else at the resync.
pub fn requeue_after(expires_at: Option<&Time>, now: Timestamp, resync: Duration) -> Duration {
    let Some(at) = expires_at else {
        return resync;
    };
    let nanos = at.0.as_nanosecond() - now.as_nanosecond();
    if nanos <= 0 {
        return resync;
    }
    // The scheduler has millisecond resolution: round up so that the next
    // reconcile never lands just before the instant.
    let millis = u64::try_from((nanos + 999_999) / 1_000_000).unwrap_or(u64::MAX);
    Duration::from_millis(millis).min(resync)
}

/// The condition that warns before `expiresAt`.
pub const EXPIRING_SOON: &str = "ExpiringSoon";

/// The `ExpiringSoon` condition: True from `warning` before `expiresAt`
/// until the token expires (then the phase says Expired), False before;
/// absent for a token that never expires. `lastTransitionTime` moves only
/// with the status.
pub fn expiring_soon(
    token: &StrakeToken,
    now: Timestamp,
    warning: Duration,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let at = token.spec.expires_at.as_ref()?.0;
    let warn_from = at.checked_sub(jiff_span(warning)).unwrap_or(Timestamp::MIN);
    let soon = now >= warn_from && now < at;
    let previous = token
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, EXPIRING_SOON));
    let status = if soon { "True" } else { "False" };
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(whole_seconds(now)),
    };
    let (reason, message) = if soon {
        let days = (at.as_second() - now.as_second()) / 86_400;
        (
            "ExpiresSoon",
            format!(
                "expires at {at} (in {days} days): extend spec.expiresAt, or issue a new token for the holder"
            ),
        )
    } else if now >= at {
        ("Expired", format!("expired at {at}"))
    } else {
        ("ExpiresLater", format!("expires at {at}"))
    };
    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: EXPIRING_SOON.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: token.metadata.generation,
        last_transition_time,
    })
}

/// A std duration as jiff's, saturating.
fn jiff_span(d: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
}

/// The warning event, when `ExpiringSoon` turns True.
pub fn expiry_notice(
    previous: Option<&StrakeTokenStatus>,
    desired: &StrakeTokenStatus,
) -> Option<Notice> {
    let now = condition::find(&desired.conditions, EXPIRING_SOON).filter(|c| c.status == "True")?;
    let before = previous
        .and_then(|s| condition::find(&s.conditions, EXPIRING_SOON))
        .is_some_and(|c| c.status == "True");
    (!before).then(|| Notice {
        warning: true,
        reason: event::EXPIRING_SOON,
        note: now.message.clone(),
    })
}

/// When to reconcile again: at the warning instant or the expiry, whichever
/// comes next, or at the resync.
pub fn next_look(
    expires_at: Option<&Time>,
    warning: Duration,
    now: Timestamp,
    resync: Duration,
) -> Duration {
    let warn_at = expires_at
        .and_then(|at| at.0.checked_sub(jiff_span(warning)).ok())
        .map(Time);
    requeue_after(expires_at, now, resync).min(requeue_after(warn_at.as_ref(), now, resync))
}

/// What the token currently holds, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub prefix: String,
    pub at: Option<Time>,
    /// Until when the token it replaced still works (a rotation's grace).
    pub previous_until: Option<Time>,
}

/// The status this operator owns. `lastUsedAt` and `usage` are left out: they
/// are not ours to write (see [`owned`]).
pub fn status(
    token: &StrakeToken,
    verdict: &Verdict,
    endpoint: Option<String>,
    issued: Option<Issued>,
    now: Timestamp,
) -> StrakeTokenStatus {
    let generation = token.metadata.generation;
    let previous = token
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = condition::ready(
        verdict.phase == Phase::Active,
        verdict.reason,
        verdict.message.clone(),
        generation,
        previous,
        now,
    );
    let (token_prefix, issued_at, previous_until) = match issued {
        Some(i) => (Some(i.prefix), i.at, i.previous_until),
        None => (None, None, None),
    };
    StrakeTokenStatus {
        phase: Some(verdict.phase),
        conditions: vec![ready],
        observed_generation: generation,
        endpoint,
        secret_name: Some(token.secret_name()),
        token_prefix,
        issued_at,
        expires_at: token.spec.expires_at.clone(),
        last_used_at: None,
        usage: None,
        budget: None,
        budget_alerts: None,
        previous_token_valid_until: previous_until,
        federated_subjects: Vec::new(),
    }
}

/// The part of a status this operator writes (`lastUsedAt`, `usage` and
/// `budget` are the usage collector's).
pub fn owned(status: &StrakeTokenStatus) -> StrakeTokenStatus {
    StrakeTokenStatus {
        last_used_at: None,
        usage: None,
        budget: None,
        ..status.clone()
    }
}

/// True when writing `desired` would change the status: skipping identical
/// writes keeps the controller from triggering itself.
pub fn status_changed(current: Option<&StrakeTokenStatus>, desired: &StrakeTokenStatus) -> bool {
    current.map(owned).as_ref() != Some(desired)
}

/// A deleted token's lifetime usage: for the revoke event and the
/// chargeback metric.
#[derive(Clone, Debug, PartialEq)]
pub struct FinalUsage {
    pub note: String,
    pub usage: crate::metrics::FinalUsage,
}

/// The lifetime usage in a token's status when it is deleted. Use in the
/// last collection interval before the deletion is not in it.
pub fn final_usage(token: &StrakeToken) -> FinalUsage {
    let lifetime = token
        .status
        .as_ref()
        .and_then(|s| s.usage.as_ref())
        .and_then(|u| u.lifetime.clone())
        .unwrap_or_default();
    let spend: Picodollars = lifetime.spend_usd.parse().unwrap_or(Picodollars::ZERO);
    let mut note = format!(
        "lifetime usage: {} requests, {} input tokens ({} cached, {} cache-write), {} output tokens, ${} spent",
        lifetime.requests,
        lifetime.input_tokens,
        lifetime.cached_input_tokens,
        lifetime.cache_write_tokens,
        lifetime.output_tokens,
        spend.to_decimal_string(),
    );
    if lifetime.unpriced_requests > 0 {
        note.push_str(&format!(
            " (plus {} unpriced requests)",
            lifetime.unpriced_requests
        ));
    }
    FinalUsage {
        note,
        usage: crate::metrics::FinalUsage {
            spend_usd: spend.as_usd_f64(),
            requests: lifetime.requests,
            input_tokens: lifetime.input_tokens,
            output_tokens: lifetime.output_tokens,
        },
    }
}

/// A notable change, to be published as an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The events a phase change deserves: Suspended, Resumed and Expired on the
/// transition, and a warning when the token becomes Pending or Failed for a
/// new reason. A steady state produces none, so resyncs stay quiet.
pub fn phase_notices(previous: Option<&StrakeTokenStatus>, verdict: &Verdict) -> Vec<Notice> {
    let prev_phase = previous.and_then(|s| s.phase);
    let prev_reason = previous.and_then(|s| condition::ready_reason(&s.conditions));
    let mut notices = Vec::new();
    let normal = |reason, note: String| Notice {
        warning: false,
        reason,
        note,
    };
    match verdict.phase {
        Phase::Expired if prev_phase != Some(Phase::Expired) => {
            notices.push(normal(reason::EXPIRED, verdict.message.clone()));
        }
        Phase::Suspended if prev_phase != Some(Phase::Suspended) => {
            notices.push(normal(reason::SUSPENDED, verdict.message.clone()));
        }
        Phase::Pending | Phase::Failed if prev_reason != Some(verdict.reason) => {
            notices.push(Notice {
                warning: true,
                reason: verdict.reason,
                note: verdict.message.clone(),
            });
        }
        _ => {}
    }
    if prev_phase == Some(Phase::Suspended)
        && !matches!(verdict.phase, Phase::Suspended | Phase::Expired)
    {
        notices.push(normal(
            event::RESUMED,
            "spec.suspended is false: the proxy accepts the token again".into(),
        ));
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use strake_crds::StrakeTokenSpec;
    use strake_crds::TokenLimits;
    use strake_crds::resources::{ModelGlob, UpstreamName};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-06-01T12:00:00Z";

    fn facts<'a>(ups: &'a [(&'a str, UpstreamState)]) -> Facts<'a> {
        Facts {
            expires_at: None,
            now: ts(NOW),
            suspended: false,
            secret_conflict: None,
            upstreams: ups,
        }
    }

    use UpstreamState::{Missing, NotReady, Ready};

    /// The record the proxy has for a token, optionally still accepting
    /// the one before it.
    fn published(token: &Token, previous: Option<(&Token, &str)>) -> TokenRecord {
        let alice = StrakeToken::new("alice", crate::core::fixtures::token_spec(&["openai"]));
        TokenRecord {
            previous: previous.map(|(t, until)| PreviousToken {
                sha256: t.hash(),
                valid_until: Time(ts(until)),
            }),
            ..record(&alice, token.hash())
        }
    }

    #[test]
    fn a_rotation_with_a_grace_keeps_the_replaced_token_until_the_deadline() {
        let (oldest, old, new) = (Token::mint(), Token::mint(), Token::mint());
        let hour = Duration::from_secs(3600);
        let at = |minted, published: &TokenRecord, issued: &str, grace, now: &str| {
            previous_token(Succession {
                minted,
                published: Some(published),
                issued_at: ts(issued),
                grace,
                suspended: false,
                now: ts(now),
            })
        };
        // Rotated: the token the proxy had, until issue + grace.
        let before = published(&old, None);
        let p = at(Some(MintReason::Rotated), &before, NOW, hour, NOW).unwrap();
        assert_eq!(p.sha256, old.hash());
        assert_eq!(p.valid_until.0, ts("2026-06-01T13:00:00Z"));
        // No grace, or a re-mint for any other reason: it dies now.
        assert_eq!(
            at(Some(MintReason::Rotated), &before, NOW, Duration::ZERO, NOW),
            None
        );
        for why in [
            MintReason::First,
            MintReason::SecretDeleted,
            MintReason::Edited,
            MintReason::Mismatch,
        ] {
            assert_eq!(at(Some(why), &before, NOW, hour, NOW), None, "{why:?}");
        }
        // Later looks keep it until the deadline, and no longer.
        let after = published(&new, Some((&old, "2026-06-01T13:00:00Z")));
        assert_eq!(
            at(None, &after, NOW, hour, "2026-06-01T12:59:59Z"),
            Some(p.clone())
        );
        assert_eq!(at(None, &after, NOW, hour, "2026-06-01T13:00:00Z"), None);
        // A shorter grace ends it sooner; a longer one never extends it.
        let shorter = at(
            None,
            &after,
            NOW,
            Duration::from_secs(60),
            "2026-06-01T12:00:30Z",
        )
        .unwrap();
        assert_eq!(shorter.valid_until.0, ts("2026-06-01T12:01:00Z"));
        assert_eq!(
            at(
                None,
                &after,
                NOW,
                Duration::from_secs(60),
                "2026-06-01T12:01:00Z"
            ),
            None
        );
        assert_eq!(at(None, &after, NOW, 5 * hour, NOW), Some(p));
        assert_eq!(
            at(None, &after, NOW, Duration::ZERO, NOW),
            None,
            "grace removed"
        );
        // A second rotation inside the grace: the token it replaced
        // survives, the oldest is gone.
        let during = published(&old, Some((&oldest, "2026-06-01T12:30:00Z")));
        let second = at(
            Some(MintReason::Rotated),
            &during,
            "2026-06-01T12:10:00Z",
            hour,
            "2026-06-01T12:10:00Z",
        )
        .unwrap();
        assert_eq!(second.sha256, old.hash());
        assert_ne!(second.sha256, oldest.hash());
        // Suspended: both stop.
        let suspended = previous_token(Succession {
            minted: None,
            published: Some(&after),
            issued_at: ts(NOW),
            grace: hour,
            suspended: true,
            now: ts(NOW),
        });
        assert_eq!(suspended, None);
        // Nothing published yet: nothing to keep.
        let unpublished = previous_token(Succession {
            minted: Some(MintReason::Rotated),
            published: None,
            issued_at: ts(NOW),
            grace: hour,
            suspended: false,
            now: ts(NOW),
        });
        assert_eq!(unpublished, None);
    }

    #[test]
    fn the_rotated_event_says_until_when_the_previous_token_works() {
        let t = Token::mint();
        let until = Time(ts("2026-06-01T13:00:00Z"));
        let (reason, note) =
            MintReason::Rotated.event("alice-strake", t.display_prefix(), 2, Some(&until));
        assert_eq!(reason, event::ROTATED);
        assert!(
            note.ends_with("the previous token keeps working until 2026-06-01T13:00:00Z"),
            "{note}"
        );
        let (_, now) = MintReason::Rotated.event("alice-strake", t.display_prefix(), 2, None);
        assert!(now.ends_with("stops working now"), "{now}");
    }

    #[test]
    fn phase_decision_table() {
        let all_ready = [("openai", Ready), ("anthropic", Ready)];
        let one_missing = [("openai", Ready), ("anthropic", Missing)];
        let one_not_ready = [("openai", NotReady), ("anthropic", Ready)];
        let mixed = [("openai", NotReady), ("anthropic", Missing)];
        let past = Some(ts("2026-06-01T11:59:59Z"));
        let future = Some(ts("2026-06-01T12:00:01Z"));
        let cases: Vec<(&str, Facts<'_>, Phase, &str, Publish)> = vec![
            (
                "active",
                facts(&all_ready),
                Phase::Active,
                reason::ACTIVE,
                Publish::Record,
            ),
            (
                "active, expiring later",
                Facts {
                    expires_at: future,
                    ..facts(&all_ready)
                },
                Phase::Active,
                reason::ACTIVE,
                Publish::Record,
            ),
            (
                "missing upstream",
                facts(&one_missing),
                Phase::Pending,
                reason::UPSTREAM_NOT_FOUND,
                Publish::Record,
            ),
            (
                "upstream not ready",
                facts(&one_not_ready),
                Phase::Pending,
                reason::UPSTREAM_NOT_READY,
                Publish::Record,
            ),
            (
                "missing wins over not ready",
                facts(&mixed),
                Phase::Pending,
                reason::UPSTREAM_NOT_FOUND,
                Publish::Record,
            ),
            (
                "suspended",
                Facts {
                    suspended: true,
                    ..facts(&all_ready)
                },
                Phase::Suspended,
                reason::SUSPENDED,
                Publish::Record,
            ),
            (
                "suspended wins over missing upstream",
                Facts {
                    suspended: true,
                    ..facts(&one_missing)
                },
                Phase::Suspended,
                reason::SUSPENDED,
                Publish::Record,
            ),
            (
                "expired",
                Facts {
                    expires_at: past,
                    ..facts(&all_ready)
                },
                Phase::Expired,
                reason::EXPIRED,
                Publish::Withdraw,
            ),
            (
                "expired exactly now",
                Facts {
                    expires_at: Some(ts(NOW)),
                    ..facts(&all_ready)
                },
                Phase::Expired,
                reason::EXPIRED,
                Publish::Withdraw,
            ),
            (
                "expired wins over suspended",
                Facts {
                    expires_at: past,
                    suspended: true,
                    ..facts(&one_missing)
                },
                Phase::Expired,
                reason::EXPIRED,
                Publish::Withdraw,
            ),
            (
                "secret conflict fails closed",
                Facts {
                    secret_conflict: Some("alice-strake"),
                    ..facts(&all_ready)
                },
                Phase::Failed,
                reason::SECRET_CONFLICT,
                Publish::Withdraw,
            ),
        ];
        for (name, f, phase, reason, publish) in cases {
            let v = decide(&f);
            assert_eq!(
                (v.phase, v.reason, v.publish),
                (phase, reason, publish),
                "{name}"
            );
        }
        let v = decide(&facts(&mixed));
        assert!(v.message.contains("anthropic") && !v.message.contains("openai"));
        let v = decide(&facts(&one_not_ready));
        assert!(v.message.contains("openai"));
    }

    #[test]
    fn whole_seconds_survive_the_api_round_trip() {
        let t = ts("2026-06-01T12:00:00.123456789Z");
        assert_eq!(whole_seconds(t), ts(NOW));
        let json = serde_json::to_string(&Time(whole_seconds(t))).unwrap();
        assert_eq!(
            serde_json::from_str::<Time>(&json).unwrap().0,
            whole_seconds(t)
        );
    }

    #[test]
    fn requeue_lands_on_the_expiry_instant() {
        let resync = Duration::from_secs(300);
        let now = ts(NOW);
        let at = |s: &str| Some(Time(ts(s)));
        assert_eq!(requeue_after(None, now, resync), resync);
        assert_eq!(
            requeue_after(at("2026-06-01T12:00:42Z").as_ref(), now, resync),
            Duration::from_secs(42)
        );
        // Sub-millisecond remainders round up, never down.
        assert_eq!(
            requeue_after(at("2026-06-01T12:00:00.0000001Z").as_ref(), now, resync),
            Duration::from_millis(1)
        );
        // Far expiries wait for the resync (the scheduler cannot hold years).
        assert_eq!(
            requeue_after(at("2030-01-01T00:00:00Z").as_ref(), now, resync),
            resync
        );
        assert_eq!(
            requeue_after(at("2026-01-01T00:00:00Z").as_ref(), now, resync),
            resync
        );
        assert!(is_expired(at(NOW).as_ref(), now));
        assert!(!is_expired(at("2026-06-01T12:00:00.001Z").as_ref(), now));
        assert!(!is_expired(None, now));
    }

    #[test]
    fn token_choice() {
        let t = Token::mint();
        let raw = t.expose().as_bytes();
        let held =
            |token: Option<&'static [u8]>, rotation: Option<&'static str>| Held { token, rotation };
        let keep =
            |h: Held<'_>, published: Option<&TokenHash>| choose_token(Some(h), 0, published, true);
        let good = Held {
            token: Some(raw),
            rotation: Some("0"),
        };

        assert_eq!(
            choose_token(None, 0, None, false),
            TokenChoice::Mint(MintReason::First)
        );
        assert_eq!(
            choose_token(None, 0, None, true),
            TokenChoice::Mint(MintReason::SecretDeleted)
        );
        assert_eq!(
            keep(held(None, Some("0")), None),
            TokenChoice::Mint(MintReason::SecretDeleted)
        );
        assert_eq!(keep(good, None), TokenChoice::Keep(t.clone()));
        assert_eq!(keep(good, Some(&t.hash())), TokenChoice::Keep(t.clone()));
        assert_eq!(
            keep(good, Some(&Token::mint().hash())),
            TokenChoice::Mint(MintReason::Mismatch)
        );
        assert_eq!(
            choose_token(Some(good), 1, Some(&t.hash()), true),
            TokenChoice::Mint(MintReason::Rotated)
        );
        assert_eq!(
            keep(
                Held {
                    token: Some(raw),
                    rotation: None
                },
                None
            ),
            TokenChoice::Mint(MintReason::Edited)
        );
        assert_eq!(
            keep(
                Held {
                    token: Some(raw),
                    rotation: Some("x")
                },
                None
            ),
            TokenChoice::Mint(MintReason::Edited)
        );
        assert_eq!(
            keep(held(Some(b"sk-strk-notatoken"), Some("0")), None),
            TokenChoice::Mint(MintReason::Edited)
        );
        assert_eq!(
            keep(held(Some(b"\xff\xfe"), Some("0")), None),
            TokenChoice::Mint(MintReason::Edited)
        );
    }

    #[test]
    fn mint_events_show_only_the_prefix() {
        let t = Token::mint();
        for r in [
            MintReason::First,
            MintReason::SecretDeleted,
            MintReason::Edited,
            MintReason::Mismatch,
            MintReason::Rotated,
        ] {
            let (reason, note) = r.event("alice-strake", t.display_prefix(), 3, None);
            assert!(!note.contains(t.expose()));
            assert!(note.contains(t.display_prefix()));
            let expected = match r {
                MintReason::First => event::ISSUED,
                MintReason::Rotated => event::ROTATED,
                _ => event::REISSUED,
            };
            assert_eq!(reason, expected);
        }
    }

    #[test]
    fn expiring_soon_turns_true_within_the_warning_and_warns_once() {
        let week = Duration::from_secs(7 * 86_400);
        let mut t = alice();
        t.metadata.generation = Some(3);
        // alice expires at 2027-03-01T00:00:00Z.
        let early = expiring_soon(&t, ts("2027-02-20T00:00:00Z"), week).unwrap();
        assert_eq!(
            (
                early.type_.as_str(),
                early.status.as_str(),
                early.reason.as_str()
            ),
            ("ExpiringSoon", "False", "ExpiresLater")
        );
        let soon = expiring_soon(&t, ts("2027-02-22T00:00:00Z"), week).unwrap();
        assert_eq!(
            (soon.status.as_str(), soon.reason.as_str()),
            ("True", "ExpiresSoon")
        );
        assert!(
            soon.message.contains("2027-03-01T00:00:00Z") && soon.message.contains("in 7 days"),
            "{}",
            soon.message
        );
        assert_eq!(soon.observed_generation, Some(3));
        let gone = expiring_soon(&t, ts("2027-03-01T00:00:00Z"), week).unwrap();
        assert_eq!(
            (gone.status.as_str(), gone.reason.as_str()),
            ("False", "Expired")
        );
        let mut never = alice();
        never.spec.expires_at = None;
        assert!(expiring_soon(&never, ts(NOW), week).is_none());

        // The event comes with the transition to True, once.
        let with = |c: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>| {
            StrakeTokenStatus {
                conditions: c.into_iter().collect(),
                ..StrakeTokenStatus::default()
            }
        };
        let notice =
            expiry_notice(Some(&with(Some(early.clone()))), &with(Some(soon.clone()))).unwrap();
        assert!(notice.warning);
        assert_eq!(notice.reason, event::EXPIRING_SOON);
        assert_eq!(notice.note, soon.message);
        assert!(expiry_notice(None, &with(Some(soon.clone()))).is_some());
        assert!(
            expiry_notice(Some(&with(Some(soon.clone()))), &with(Some(soon.clone()))).is_none()
        );
        assert!(expiry_notice(Some(&with(None)), &with(Some(early))).is_none());

        // lastTransitionTime holds while the status does.
        t.status = Some(with(Some(soon.clone())));
        let later = expiring_soon(&t, ts("2027-02-25T00:00:00Z"), week).unwrap();
        assert_eq!(later.last_transition_time, soon.last_transition_time);
    }

    #[test]
    fn the_next_look_is_the_warning_instant_then_the_expiry() {
        let week = Duration::from_secs(7 * 86_400);
        let resync = Duration::from_secs(300);
        let at = Some(Time(ts("2026-06-08T12:01:00Z")));
        // 60 s to the warning instant, a week and 60 s to the expiry.
        assert_eq!(
            next_look(at.as_ref(), week, ts(NOW), resync),
            Duration::from_secs(60)
        );
        let inside = ts("2026-06-08T12:00:30Z");
        assert_eq!(
            next_look(at.as_ref(), week, inside, resync),
            Duration::from_secs(30)
        );
        assert_eq!(next_look(None, week, ts(NOW), resync), resync);
    }

    fn alice() -> StrakeToken {
        let mut t = StrakeToken::new(
            "alice",
            StrakeTokenSpec {
                identity: "alice@example.com".into(),
                upstreams: vec![
                    UpstreamName("openai".into()),
                    UpstreamName("anthropic".into()),
                ],
                expires_at: Some(Time(ts("2027-03-01T00:00:00Z"))),
                suspended: true,
                allowed_models: vec![ModelGlob("gpt-4o*".into())],
                limits: Some(TokenLimits {
                    requests_per_minute: Some(60),
                    tokens_per_minute: None,
                }),
                endpoints: vec![strake_crds::EndpointAllowance {
                    methods: vec![strake_crds::HttpMethod::Get],
                    path: "/v1/files".into(),
                }],
                budget: None,
                secret_name: None,
                rotation: 0,
                rotation_grace_period: None,
                federated: Vec::new(),
                service_account: None,
                service_account_audience: None,
                mint_token: None,
            },
        );
        t.metadata.namespace = Some("team-a".into());
        t.metadata.generation = Some(4);
        t
    }

    #[test]
    fn record_carries_the_policy_and_qualified_upstream_ids() {
        let t = alice();
        let token = Token::mint();
        let r = record(&t, token.hash());
        assert_eq!(r.name, "team-a/alice");
        assert_eq!(r.identity, "alice@example.com");
        assert_eq!(r.sha256, token.hash());
        assert_eq!(r.upstreams, ["team-a/openai", "team-a/anthropic"]);
        assert_eq!(r.expires_at, t.spec.expires_at);
        assert!(r.suspended);
        assert_eq!(r.allowed_models, ["gpt-4o*"]);
        assert_eq!(r.endpoints, t.spec.endpoints);
        assert_eq!(r.limits.unwrap().requests_per_minute, Some(60));
        assert_eq!(
            r.source,
            Some(SourceRef {
                namespace: "team-a".into(),
                name: "alice".into()
            })
        );
        assert!(!serde_json::to_string(&r).unwrap().contains(token.expose()));
    }

    #[test]
    fn status_is_rewritten_only_when_it_changes() {
        let mut t = alice();
        let v = decide(&Facts {
            suspended: false,
            ..facts(&[("openai", Ready)])
        });
        let issued = Some(Issued {
            prefix: "sk-strk-AbCd".into(),
            at: Some(Time(ts(NOW))),
            previous_until: None,
        });
        let s = status(
            &t,
            &v,
            Some("https://llm.example.com/v1".into()),
            issued.clone(),
            ts(NOW),
        );
        assert_eq!(s.phase, Some(Phase::Active));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.secret_name.as_deref(), Some("alice-strake"));
        assert_eq!(s.conditions[0].status, "True");
        assert!(status_changed(None, &s));
        // Stored, with usage counted by someone else: nothing to write.
        let mut stored = s.clone();
        stored.usage = Some(Default::default());
        t.status = Some(stored);
        let later = status(
            &t,
            &v,
            Some("https://llm.example.com/v1".into()),
            issued.clone(),
            ts("2026-06-02T00:00:00Z"),
        );
        assert!(!status_changed(t.status.as_ref(), &later));
        // A new generation is a change.
        t.metadata.generation = Some(5);
        let newer = status(
            &t,
            &v,
            Some("https://llm.example.com/v1".into()),
            issued,
            ts(NOW),
        );
        assert!(status_changed(t.status.as_ref(), &newer));
    }

    #[test]
    fn the_final_usage_is_the_lifetime_in_status() {
        let mut t = alice();
        let none = final_usage(&t);
        assert_eq!(none.usage.requests, 0);
        assert!(none.note.contains("0 requests"), "{}", none.note);
        t.status = Some(StrakeTokenStatus {
            usage: Some(strake_crds::TokenUsage {
                lifetime: Some(strake_crds::UsageTotals {
                    requests: 7,
                    input_tokens: 700,
                    output_tokens: 70,
                    cached_input_tokens: 100,
                    spend_usd: "1.25".into(),
                    unpriced_requests: 2,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let f = final_usage(&t);
        assert_eq!(f.usage.requests, 7);
        assert_eq!(f.usage.spend_usd, 1.25);
        assert!(f.note.contains("7 requests") && f.note.contains("$1.25"));
        assert!(f.note.contains("2 unpriced"), "{}", f.note);
    }

    #[test]
    fn notices_fire_on_transitions_only() {
        let t = alice();
        let active = decide(&facts(&[("openai", Ready)]));
        let suspended = decide(&Facts {
            suspended: true,
            ..facts(&[("openai", Ready)])
        });
        let missing = decide(&facts(&[("openai", Missing)]));
        let expired = decide(&Facts {
            expires_at: Some(ts(NOW)),
            ..facts(&[("openai", Ready)])
        });
        let st = |v: &Verdict| status(&t, v, None, None, ts(NOW));
        let reasons = |prev: Option<&StrakeTokenStatus>, v: &Verdict| -> Vec<&'static str> {
            phase_notices(prev, v)
                .into_iter()
                .map(|n| n.reason)
                .collect()
        };
        assert!(reasons(None, &active).is_empty());
        assert!(reasons(Some(&st(&active)), &active).is_empty());
        assert_eq!(reasons(Some(&st(&active)), &suspended), [reason::SUSPENDED]);
        assert!(reasons(Some(&st(&suspended)), &suspended).is_empty());
        assert_eq!(reasons(Some(&st(&suspended)), &active), [event::RESUMED]);
        assert_eq!(
            reasons(Some(&st(&active)), &missing),
            [reason::UPSTREAM_NOT_FOUND]
        );
        assert!(phase_notices(Some(&st(&active)), &missing)[0].warning);
        assert!(reasons(Some(&st(&missing)), &missing).is_empty());
        assert_eq!(
            reasons(Some(&st(&suspended)), &missing),
            [reason::UPSTREAM_NOT_FOUND, event::RESUMED]
        );
        assert_eq!(reasons(Some(&st(&active)), &expired), [reason::EXPIRED]);
        assert_eq!(reasons(Some(&st(&suspended)), &expired), [reason::EXPIRED]);
        assert!(reasons(Some(&st(&expired)), &expired).is_empty());
    }
}
