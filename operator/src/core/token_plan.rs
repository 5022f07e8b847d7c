//! The StrakeToken reconcile as a pure step: what was observed goes in,
//! the writes, the status, the events and the next look come out. The
//! controller (`controller::strake_token`) only reads and then does what
//! the plan says, so every decision here is tested without an API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use strake_crds::contract::TokenRecord;
use strake_crds::federated::{self, FederatedSubject};
use strake_crds::token::Token;
use strake_crds::{Phase, StrakeToken, StrakeTokenStatus, UpstreamKey};

use crate::core::budget::{self, BudgetPlan};
use crate::core::env::{self, EnvUpstream};
use crate::core::objects::{self, ISSUED_AT_ANNOTATION, ROTATION_ANNOTATION, TOKEN_KEY};
use crate::core::token::{
    self, Facts, FinalUsage, Held, Issued, MintReason, Notice, Publish, Succession, TokenChoice,
    UpstreamState, Verdict, reason,
};
use crate::core::upstream;

/// Everything one reconcile of a live StrakeToken reads.
pub struct Observed<'a> {
    pub token: &'a StrakeToken,
    pub now: Timestamp,
    /// The proxy's public base URL (`--endpoint`).
    pub endpoint: &'a str,
    pub proxy_namespace: &'a str,
    pub resync: Duration,
    /// How long before `expiresAt` the token warns (`--expiry-warning`).
    pub expiry_warning: Duration,
    /// How often usage is collected (`--usage-interval`): budget records
    /// tell the proxy when the next fold is due.
    pub collect_every: Duration,
    /// The cluster's ServiceAccount issuer (`--cluster-issuer`), which
    /// `spec.serviceAccount` names.
    pub cluster_issuer: &'a str,
    /// `spec.upstreams` in order, each with the UpstreamKey found, if any.
    pub upstreams: &'a [(&'a str, Option<&'a UpstreamKey>)],
    /// The Secret named by `spec.secretName` (or its default), if it exists.
    pub held: Option<&'a Secret>,
    /// The token's record Secret in the proxy namespace, if it exists.
    pub published: Option<&'a Secret>,
    /// The metadata of the Secret a previous `spec.secretName` named, when
    /// the name changed and that Secret still exists.
    pub old_secret: Option<&'a ObjectMeta>,
    /// The token to issue if one must be minted (randomness comes from the
    /// shell, so the plan stays a function of its input).
    pub fresh: Token,
}

/// What the status write, the events and the phase gauge should say.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub verdict: Verdict,
    /// `None` when the status already says this: nothing is written.
    pub status: Option<StrakeTokenStatus>,
    /// The phase differs from the stored one (worth a log line).
    pub phase_changed: bool,
    pub notices: Vec<Notice>,
}

/// The writes of one reconcile, in the order they must happen: the
/// holder's Secret before the proxy's record (a token is announced only
/// once it is kept), the status last.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The upstream list may have changed: recount the keys' tokens.
    pub recount_upstreams: bool,
    /// Delete the proxy's record (expired, or the Secret name is taken).
    pub withdraw: bool,
    /// Apply the holder's Secret.
    pub holder_secret: Option<Secret>,
    /// Delete this holder's Secret of ours: one of an earlier
    /// `spec.secretName`, or the current one of a token turned keyless.
    pub delete_old_secret: Option<String>,
    /// Apply the proxy's record Secret.
    pub record_secret: Option<Secret>,
    /// A token was minted: why, and its display prefix.
    pub minted: Option<(MintReason, String)>,
    pub report: Report,
    pub requeue: Duration,
}

/// The Ready reason of a StrakeToken whose federated subjects the operator
/// refuses (withdrawn until fixed).
pub const INVALID_FEDERATED_SUBJECT: &str = "InvalidFederatedSubject";

/// The status, events and gauge for `verdict`, with the `ExpiringSoon`
/// condition `warning` before `expiresAt` and its event.
pub fn report(
    obj: &StrakeToken,
    verdict: Verdict,
    endpoint: Option<String>,
    issued: Option<Issued>,
    (now, warning): (Timestamp, Duration),
    mut notices: Vec<Notice>,
    budget: Option<&BudgetPlan>,
) -> Report {
    let previous = obj.status.as_ref();
    let mut status = token::status(obj, &verdict, endpoint, issued, now);
    status
        .conditions
        .extend(token::expiring_soon(obj, now, warning));
    if let Some(b) = budget {
        status.conditions.push(b.condition.clone());
        status.budget_alerts = Some(b.alerts.clone());
        notices.extend(b.notices.iter().cloned());
    }
    notices.extend(token::phase_notices(previous, &verdict));
    notices.extend(token::expiry_notice(previous, &status));
    Report {
        phase_changed: previous.and_then(|s| s.phase) != Some(verdict.phase),
        status: token::status_changed(previous, &status).then_some(status),
        verdict,
        notices,
    }
}

/// What the stored status says was issued, for reports that issue nothing.
fn issued_before(obj: &StrakeToken) -> Option<Issued> {
    obj.status.as_ref().and_then(|s| {
        s.token_prefix.clone().map(|prefix| Issued {
            prefix,
            at: s.issued_at.clone(),
            previous_until: s.previous_token_valid_until.clone(),
        })
    })
}

/// The report when the API server refused a write: Failed, naming the
/// refusal, keeping what was issued before.
pub fn refused(obj: &StrakeToken, message: String, now: Timestamp, warning: Duration) -> Report {
    let verdict = Verdict {
        phase: Phase::Failed,
        reason: reason::PUBLISH_FAILED,
        message,
        publish: Publish::Record,
    };
    let endpoint = obj.status.as_ref().and_then(|s| s.endpoint.clone());
    report(
        obj,
        verdict,
        endpoint,
        issued_before(obj),
        (now, warning),
        Vec::new(),
        None,
    )
}

/// The budget's decisions, when the token has one.
fn budget_plan(o: &Observed<'_>) -> Option<BudgetPlan> {
    let obj = o.token;
    let status = obj.status.as_ref();
    let what = format!(
        "StrakeToken {}/{}",
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.name_any()
    );
    let empty = Default::default();
    Some(budget::plan(&budget::Observed {
        budget: obj.spec.budget.as_ref()?,
        bucket: status.and_then(|s| s.budget.as_ref()),
        alerts: status.and_then(|s| s.budget_alerts.as_ref()),
        collected: status
            .and_then(|s| s.usage.as_ref())
            .map_or(&empty, |u| &u.collected),
        conditions: status.map_or(&[], |s| s.conditions.as_slice()),
        generation: obj.metadata.generation,
        now: o.now,
        collect_every: o.collect_every,
        what: &what,
    }))
}

pub fn plan(o: Observed<'_>) -> Plan {
    let obj = o.token;
    let previous = obj.status.as_ref();
    let recount_upstreams = previous.and_then(|s| s.observed_generation) != obj.metadata.generation;
    let states: Vec<(&str, UpstreamState)> = o
        .upstreams
        .iter()
        .map(|(n, uk)| {
            let state = match uk {
                None => UpstreamState::Missing,
                Some(uk) if uk.metadata.deletion_timestamp.is_some() => UpstreamState::Missing,
                Some(uk) if upstream::is_ready(uk) => UpstreamState::Ready,
                Some(_) => UpstreamState::NotReady,
            };
            (*n, state)
        })
        .collect();
    let env_upstreams: Vec<EnvUpstream<'_>> = o
        .upstreams
        .iter()
        .filter_map(|(n, uk)| {
            uk.map(|uk| EnvUpstream {
                name: n,
                provider: uk.spec.provider,
            })
        })
        .collect();
    let secret_name = obj.secret_name();
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    let conflict = o
        .held
        .is_some_and(|s| !objects::controlled_by(&s.metadata, uid));
    let mut verdict = token::decide(&Facts {
        expires_at: obj.spec.expires_at.as_ref().map(|t| t.0),
        now: o.now,
        suspended: obj.spec.suspended,
        // Never overwrite (or garbage-collect) a Secret that is not ours.
        secret_conflict: conflict.then_some(secret_name.as_str()),
        upstreams: &states,
    });
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let subjects = obj.spec.federated_subjects(namespace, o.cluster_issuer);
    let refused_subject = subjects
        .iter()
        .find_map(|s| s.check(Some(namespace), o.cluster_issuer).err());
    if let Some(message) = refused_subject {
        // Nothing is published: serving the rest would quietly accept less
        // (or, for a minted token, more) than the resource asks.
        verdict = Verdict {
            phase: Phase::Failed,
            reason: INVALID_FEDERATED_SUBJECT,
            message: format!("spec.federated: {message}"),
            publish: Publish::Withdraw,
        };
    }
    let budget = budget_plan(&o);
    if let Some(message) = budget.as_ref().and_then(|b| b.exceeded.clone())
        && verdict.phase == Phase::Active
    {
        // Still published: the proxy refuses it with the provider's quota
        // error, which tells the holder more than an unknown token would.
        verdict.phase = Phase::BudgetExceeded;
        verdict.reason = budget::reason::EXCEEDED;
        verdict.message = message;
    }
    let withdrawn = |report| Plan {
        recount_upstreams,
        withdraw: true,
        holder_secret: None,
        delete_old_secret: None,
        record_secret: None,
        minted: None,
        report,
        requeue: o.resync,
    };
    if verdict.publish == Publish::Withdraw {
        let report = if conflict {
            report(
                obj,
                verdict,
                None,
                None,
                (o.now, o.expiry_warning),
                Vec::new(),
                None,
            )
        } else {
            // Expired: the holder's Secret is left as is, so extending
            // expiresAt brings the same token back. A rotated-out token
            // went with the record.
            let endpoint = previous.and_then(|s| s.endpoint.clone());
            let issued = issued_before(obj).map(|i| Issued {
                previous_until: None,
                ..i
            });
            report(
                obj,
                verdict,
                endpoint,
                issued,
                (o.now, o.expiry_warning),
                Vec::new(),
                None,
            )
        };
        return withdrawn(report);
    }
    if !obj.spec.mints_token() {
        return keyless(
            &o,
            verdict,
            subjects,
            budget,
            recount_upstreams,
            &env_upstreams,
        );
    }

    let published_record = o.published.and_then(objects::read_record::<TokenRecord>);
    let published_hash = published_record.as_ref().map(|r| r.sha256);
    let held = o.held.map(|s| Held {
        token: s
            .data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .map(|b| b.0.as_slice()),
        rotation: s.annotations().get(ROTATION_ANNOTATION).map(String::as_str),
    });
    let choice = token::choose_token(
        held,
        obj.spec.rotation,
        published_hash.as_ref(),
        previous.is_some_and(|s| s.token_prefix.is_some()),
    );
    let (token, issued_at, minted) = match choice {
        TokenChoice::Keep(token) => {
            let issued_at = o
                .held
                .and_then(|s| s.annotations().get(ISSUED_AT_ANNOTATION))
                .and_then(|a| a.parse::<Timestamp>().ok())
                .map(Time)
                .or_else(|| previous.and_then(|s| s.issued_at.clone()))
                .unwrap_or(Time(o.now));
            (token, issued_at, None)
        }
        TokenChoice::Mint(why) => (o.fresh, Time(token::whole_seconds(o.now)), Some(why)),
    };

    let env = env::render(o.endpoint, &env_upstreams, token.expose());
    let desired_held = objects::plaintext_secret(obj, &token, &issued_at, env);
    let holder_secret = (!o
        .held
        .is_some_and(|s| objects::already_applied(s, &desired_held)))
    .then_some(desired_held);
    // A renamed spec.secretName leaves the old Secret behind, holding a
    // token that no longer works: remove it if it is ours.
    let delete_old_secret = previous
        .and_then(|s| s.secret_name.as_deref())
        .filter(|old| *old != secret_name)
        .filter(|_| o.old_secret.is_some_and(|m| objects::controlled_by(m, uid)))
        .map(str::to_string);
    let rotated_out = token::previous_token(Succession {
        minted,
        published: published_record.as_ref(),
        issued_at: issued_at.0,
        grace: obj.spec.rotation_grace(),
        suspended: obj.spec.suspended,
        now: o.now,
    });
    let previous_until = rotated_out.as_ref().map(|p| p.valid_until.clone());
    let mut record = token::record(obj, token.hash());
    record.previous = rotated_out;
    let record_secret = record_secret(
        o.proxy_namespace,
        o.published,
        obj,
        &record,
        budget.as_ref(),
        &subjects,
    );

    let mut notices = Vec::new();
    if let Some(why) = minted {
        let (reason, note) = why.event(
            &secret_name,
            token.display_prefix(),
            obj.spec.rotation,
            previous_until.as_ref(),
        );
        notices.push(Notice {
            warning: false,
            reason,
            note,
        });
    }
    let endpoint = env::base_urls(o.endpoint, &env_upstreams)
        .into_iter()
        .next()
        .unwrap_or_else(|| o.endpoint.to_string());
    // The proxy ends a rotated-out token by itself at the instant; look
    // again then so the record and status stop naming it.
    let requeue = token::next_look(
        obj.spec.expires_at.as_ref(),
        o.expiry_warning,
        o.now,
        o.resync,
    )
    .min(token::requeue_after(
        previous_until.as_ref(),
        o.now,
        o.resync,
    ))
    .min(budget.as_ref().map_or(o.resync, |b| b.requeue));
    let issued = Issued {
        prefix: token.display_prefix().to_string(),
        at: Some(issued_at),
        previous_until,
    };
    let mut report = report(
        obj,
        verdict,
        Some(endpoint),
        Some(issued),
        (o.now, o.expiry_warning),
        notices,
        budget.as_ref(),
    );
    with_subjects(obj, &mut report, subjects, true);
    Plan {
        recount_upstreams,
        withdraw: false,
        holder_secret,
        delete_old_secret,
        record_secret,
        minted: minted.map(|why| (why, token.display_prefix().to_string())),
        report,
        requeue,
    }
}

/// The record Secret for the proxy's namespace, unless the published one
/// already holds exactly it.
/// (Fields of [`Observed`] rather than all of it: the minting path has
/// moved the fresh token out by then.)
fn record_secret(
    proxy_namespace: &str,
    published: Option<&Secret>,
    obj: &StrakeToken,
    record: &TokenRecord,
    budget: Option<&BudgetPlan>,
    subjects: &[FederatedSubject],
) -> Option<Secret> {
    let desired = objects::token_secret(
        proxy_namespace,
        &token::source(obj),
        record,
        budget.map(|b| &b.record),
        subjects,
    );
    (!published.is_some_and(|s| objects::already_applied(s, &desired))).then_some(desired)
}

/// A StrakeToken that mints nothing (`mintToken` false, the default with
/// federated subjects): no holder's Secret (one left from when it minted is
/// deleted, and its token dies with the record's new hash), and a record
/// under a hash nobody can present, carrying the subjects.
fn keyless(
    o: &Observed<'_>,
    verdict: Verdict,
    subjects: Vec<FederatedSubject>,
    budget: Option<BudgetPlan>,
    recount_upstreams: bool,
    env_upstreams: &[EnvUpstream<'_>],
) -> Plan {
    let obj = o.token;
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    let held_is_ours = o
        .held
        .is_some_and(|s| objects::controlled_by(&s.metadata, uid));
    let old_is_ours = o.old_secret.is_some_and(|m| objects::controlled_by(m, uid));
    let delete_old_secret = if held_is_ours {
        Some(obj.secret_name())
    } else {
        obj.status
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .filter(|_| old_is_ours)
    };
    let record = token::record(obj, federated::unminted_hash(uid));
    let record_secret = record_secret(
        o.proxy_namespace,
        o.published,
        obj,
        &record,
        budget.as_ref(),
        &subjects,
    );
    let endpoint = env::base_urls(o.endpoint, env_upstreams)
        .into_iter()
        .next()
        .unwrap_or_else(|| o.endpoint.to_string());
    let requeue = token::next_look(
        obj.spec.expires_at.as_ref(),
        o.expiry_warning,
        o.now,
        o.resync,
    )
    .min(budget.as_ref().map_or(o.resync, |b| b.requeue));
    let mut report = report(
        obj,
        verdict,
        Some(endpoint),
        None,
        (o.now, o.expiry_warning),
        Vec::new(),
        budget.as_ref(),
    );
    with_subjects(obj, &mut report, subjects, false);
    Plan {
        recount_upstreams,
        withdraw: false,
        holder_secret: None,
        delete_old_secret,
        record_secret,
        minted: None,
        report,
        requeue,
    }
}

/// The accepted subjects in the status (and no holder's Secret named when
/// none is written), keeping "nothing to write" when that is what it says.
fn with_subjects(
    obj: &StrakeToken,
    report: &mut Report,
    subjects: Vec<FederatedSubject>,
    holds_secret: bool,
) {
    let desired = match &report.status {
        Some(status) => status.clone(),
        None => match &obj.status {
            Some(stored) => token::owned(stored),
            None => return,
        },
    };
    let mut status = StrakeTokenStatus {
        federated_subjects: subjects,
        ..desired
    };
    if !holds_secret {
        status.secret_name = None;
    }
    report.status = token::status_changed(obj.status.as_ref(), &status).then_some(status);
}

/// A deleted StrakeToken: wait for the last usage, or let it go.
#[derive(Clone, Debug, PartialEq)]
pub enum Revocation {
    /// The proxy's record is deleted (the token is refused from now on),
    /// but the finalizer stays until the replicas' last counters for it
    /// have been collected into status: look again after this long.
    Hold(Duration),
    /// Delete the record (again; idempotent), record the final usage in
    /// the Revoked event and the metric, and remove the finalizer.
    Release(FinalUsage),
}

/// `final_collection`: how long after the deletion the collector needs to
/// have read every replica at least once more (zero when usage is not
/// collected).
pub fn revocation(obj: &StrakeToken, now: Timestamp, final_collection: Duration) -> Revocation {
    let deleted_at = obj
        .metadata
        .deletion_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let held_nanos = now.as_nanosecond() - deleted_at.as_nanosecond();
    let wait = i128::try_from(final_collection.as_nanos()).unwrap_or(i128::MAX) - held_nanos;
    if wait > 0 {
        // Millisecond scheduler: round up so the next look is not early.
        let millis = u64::try_from((wait + 999_999) / 1_000_000).unwrap_or(u64::MAX);
        Revocation::Hold(Duration::from_millis(millis))
    } else {
        Revocation::Release(token::final_usage(obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures;
    use crate::core::objects::FINALIZER;
    use k8s_openapi::ByteString;
    use strake_crds::provider::Provider;
    use strake_crds::resources::UpstreamName;
    use strake_crds::{StrakeTokenSpec, UpstreamKeyStatus};

    const NOW: &str = "2026-06-15T12:00:00Z";
    const RESYNC: Duration = Duration::from_secs(300);
    const ENDPOINT: &str = "https://llm.example.com";
    const PROXY_NS: &str = "strake-system";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn token(spec: impl FnOnce(&mut StrakeTokenSpec)) -> StrakeToken {
        let mut s = fixtures::token_spec(&["openai"]);
        spec(&mut s);
        let mut t = StrakeToken::new("alice", s);
        t.metadata.namespace = Some("team-a".into());
        t.metadata.uid = Some("uid-alice".into());
        t.metadata.generation = Some(1);
        t.metadata.finalizers = Some(vec![FINALIZER.into()]);
        t
    }

    fn ready_key() -> UpstreamKey {
        let mut uk = fixtures::upstream_key("openai", Provider::OpenAi, None);
        uk.status = Some(UpstreamKeyStatus {
            conditions: vec![crate::core::condition::ready(
                true,
                "Published",
                "ok".into(),
                Some(1),
                &[],
                now(),
            )],
            observed_generation: Some(1),
            ..UpstreamKeyStatus::default()
        });
        uk
    }

    fn observe<'a>(
        t: &'a StrakeToken,
        upstreams: &'a [(&'a str, Option<&'a UpstreamKey>)],
        held: Option<&'a Secret>,
        published: Option<&'a Secret>,
        fresh: Token,
    ) -> Observed<'a> {
        Observed {
            token: t,
            now: now(),
            endpoint: ENDPOINT,
            proxy_namespace: PROXY_NS,
            resync: RESYNC,
            collect_every: Duration::from_secs(10),
            expiry_warning: Duration::from_secs(7 * 86_400),
            cluster_issuer: federated::DEFAULT_CLUSTER_ISSUER,
            upstreams,
            held,
            published,
            old_secret: None,
            fresh,
        }
    }

    /// The world after a plan's writes, as the next reconcile observes it.
    fn applied(t: &StrakeToken, p: &Plan) -> StrakeToken {
        let mut next = t.clone();
        if let Some(s) = &p.report.status {
            next.status = Some(s.clone());
        }
        next
    }

    fn federated_of(secret: &Secret) -> Vec<FederatedSubject> {
        let bytes = &secret.data.as_ref().unwrap()[strake_crds::contract::FEDERATED_KEY];
        serde_json::from_slice(&bytes.0).unwrap()
    }

    /// The Secret the last plan applied, as the next reconcile reads it.
    fn kept(p: &Plan) -> Secret {
        p.record_secret.clone().expect("a record")
    }

    #[test]
    fn a_keyless_token_publishes_its_subjects_under_an_unminted_hash_and_no_holder_secret() {
        let t = token(|s| s.service_account = Some("ci-runner".into()));
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let p = plan(observe(&t, &ups, None, None, Token::mint()));
        assert!(p.holder_secret.is_none() && p.minted.is_none() && !p.withdraw);
        let record_secret = kept(&p);
        let r: TokenRecord = objects::read_record(&record_secret).unwrap();
        assert_eq!(r.sha256, federated::unminted_hash("uid-alice"));
        let expected = vec![FederatedSubject::service_account(
            federated::DEFAULT_CLUSTER_ISSUER,
            "team-a",
            "ci-runner",
            None,
        )];
        assert_eq!(federated_of(&record_secret), expected);
        let status = p.report.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Active));
        assert_eq!(status.federated_subjects, expected);
        assert_eq!(status.secret_name, None);
        assert_eq!(status.token_prefix, None);

        // Steady state: nothing to write.
        let t2 = applied(&t, &p);
        let again = plan(observe(
            &t2,
            &ups,
            None,
            Some(&record_secret),
            Token::mint(),
        ));
        assert_eq!(again.record_secret, None);
        assert_eq!(again.report.status, None);
        assert_eq!(again.delete_old_secret, None);
    }

    #[test]
    fn turning_a_minted_token_keyless_deletes_our_holder_secret_and_changes_the_hash() {
        let t = token(|_| {});
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let fresh = Token::mint();
        let first = plan(observe(&t, &ups, None, None, fresh.clone()));
        let held = first.holder_secret.clone().unwrap();
        let published = kept(&first);
        let mut keyless = applied(&t, &first);
        keyless.spec.federated = vec![FederatedSubject {
            issuer: "https://token.actions.githubusercontent.com".into(),
            audience: "strake".into(),
            subject: Some("repo:acme/api:ref:refs/heads/main".into()),
            claims: Default::default(),
        }];
        let p = plan(observe(
            &keyless,
            &ups,
            Some(&held),
            Some(&published),
            Token::mint(),
        ));
        assert_eq!(p.delete_old_secret.as_deref(), Some("alice-strake"));
        let r: TokenRecord = objects::read_record(&kept(&p)).unwrap();
        assert_ne!(r.sha256, fresh.hash(), "the minted token dies");
        assert_eq!(r.previous, None, "and gets no grace");

        // Both: mintToken true keeps the minted token beside the subjects.
        let mut both = keyless.clone();
        both.spec.mint_token = Some(true);
        let p = plan(observe(
            &both,
            &ups,
            Some(&held),
            Some(&published),
            Token::mint(),
        ));
        assert_eq!(p.delete_old_secret, None);
        let record_secret = kept(&p);
        let r: TokenRecord = objects::read_record(&record_secret).unwrap();
        assert_eq!(r.sha256, fresh.hash());
        assert_eq!(federated_of(&record_secret), both.spec.federated);
        let status = p.report.status.unwrap();
        assert_eq!(status.secret_name.as_deref(), Some("alice-strake"));
        assert_eq!(status.federated_subjects, both.spec.federated);
    }

    #[test]
    fn another_namespaces_service_account_is_refused_and_nothing_published() {
        let t = token(|s| {
            s.federated = vec![FederatedSubject {
                issuer: federated::DEFAULT_CLUSTER_ISSUER.into(),
                audience: "strake".into(),
                subject: Some("system:serviceaccount:team-b:deployer".into()),
                claims: Default::default(),
            }]
        });
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let p = plan(observe(&t, &ups, None, None, Token::mint()));
        assert!(p.withdraw && p.record_secret.is_none() && p.holder_secret.is_none());
        let status = p.report.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Failed));
        let ready = &status.conditions[0];
        assert_eq!(ready.reason, INVALID_FEDERATED_SUBJECT);
        assert!(ready.message.contains("team-a"), "{}", ready.message);
        assert!(p.report.notices.iter().any(|n| n.warning));
    }

    #[test]
    fn a_new_token_is_minted_kept_then_published_and_a_second_look_writes_nothing() {
        let t = token(|_| {});
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let fresh = Token::mint();
        let p = plan(observe(&t, &ups, None, None, fresh.clone()));
        assert!(p.recount_upstreams, "first generation seen");
        assert!(!p.withdraw);
        let held = p.holder_secret.clone().expect("the holder's Secret");
        let data = held.data.as_ref().unwrap();
        assert_eq!(
            data[TOKEN_KEY],
            ByteString(fresh.expose().as_bytes().to_vec())
        );
        let record = p.record_secret.clone().expect("the proxy's record");
        let r: TokenRecord = objects::read_record(&record).unwrap();
        assert_eq!(r.sha256, fresh.hash());
        assert_eq!(p.minted.as_ref().map(|m| m.0), Some(MintReason::First));
        assert_eq!(p.report.verdict.phase, Phase::Active);
        assert!(p.report.phase_changed);
        let reasons: Vec<_> = p.report.notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["Issued"]);
        let status = p.report.status.clone().unwrap();
        assert_eq!(status.token_prefix.as_deref(), Some(fresh.display_prefix()));
        assert_eq!(
            status.endpoint.as_deref(),
            Some("https://llm.example.com/v1")
        );
        assert_eq!(p.requeue, RESYNC);

        // The next reconcile sees what was written: the same token, no writes.
        let t2 = applied(&t, &p);
        let again = plan(observe(
            &t2,
            &ups,
            Some(&held),
            Some(&record),
            Token::mint(),
        ));
        assert!(!again.recount_upstreams);
        assert_eq!(again.holder_secret, None);
        assert_eq!(again.record_secret, None);
        assert_eq!(again.minted, None);
        assert_eq!(again.report.status, None, "nothing changed");
        assert!(again.report.notices.is_empty());
    }

    #[test]
    fn a_spent_budget_is_published_as_exhausted_and_looked_at_again_at_the_reset() {
        let budget = strake_crds::Budget {
            period: strake_crds::BudgetPeriod::Month,
            time_zone: None,
            usd: Some("5".into()),
            tokens: None,
            alert_at: vec![strake_crds::resources::AlertPercent(80)],
        };
        let mut t = token(|s| s.budget = Some(budget.clone()));
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        // Within budget: Active, the record carries the budget, not spent.
        let p = plan(observe(&t, &ups, None, None, Token::mint()));
        assert_eq!(p.report.verdict.phase, Phase::Active);
        let record = p.record_secret.clone().unwrap();
        let held = p.holder_secret.clone().unwrap();
        let data = record.data.as_ref().unwrap();
        let b: strake_crds::contract::BudgetRecord =
            serde_json::from_slice(&data[strake_crds::contract::BUDGET_KEY].0).unwrap();
        assert!(!b.exhausted);
        // now() is mid-June: the month ends on 1 July.
        assert_eq!(p.requeue, RESYNC);
        // The collector folded $6 into this month's bucket.
        let added = strake_crds::usage::Counters {
            spend_picodollars: 6_000_000_000_000,
            ..Default::default()
        };
        let mut status = p.report.status.clone().unwrap();
        status.budget = Some(crate::core::budget::fold_bucket(
            &budget,
            None,
            &added,
            now(),
        ));
        t.status = Some(status);
        let p = plan(observe(&t, &ups, Some(&held), Some(&record), Token::mint()));
        assert_eq!(p.report.verdict.phase, Phase::BudgetExceeded);
        assert!(p.report.verdict.message.contains("monthly budget of $5"));
        let status = p.report.status.clone().unwrap();
        let ready = crate::core::condition::find(&status.conditions, "Ready").unwrap();
        assert_eq!(ready.status, "False");
        let exceeded = crate::core::condition::find(&status.conditions, "BudgetExceeded").unwrap();
        assert_eq!(exceeded.status, "True");
        let reasons: Vec<_> = p.report.notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["BudgetAlert", "BudgetExceeded"]);
        let again = p
            .record_secret
            .clone()
            .expect("republished: exhausted flipped");
        let b: strake_crds::contract::BudgetRecord = serde_json::from_slice(
            &again.data.as_ref().unwrap()[strake_crds::contract::BUDGET_KEY].0,
        )
        .unwrap();
        assert!(b.exhausted);
        assert_eq!(b.spent.picodollars, 6_000_000_000_000);
        // The token was already refused for 0 s; the look comes at the reset.
        assert!(p.requeue <= RESYNC);
    }

    #[test]
    fn a_rotation_with_a_grace_publishes_both_hashes_says_until_when_and_looks_again_then() {
        let t = token(|s| s.rotation_grace_period = Some("90s".into()));
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let first = Token::mint();
        let p = plan(observe(&t, &ups, None, None, first.clone()));
        let (held, record) = (
            p.holder_secret.clone().unwrap(),
            p.record_secret.clone().unwrap(),
        );
        let t = applied(&t, &p);

        let mut rotated = t.clone();
        rotated.spec.rotation = 1;
        let second = Token::mint();
        let p = plan(observe(
            &rotated,
            &ups,
            Some(&held),
            Some(&record),
            second.clone(),
        ));
        assert_eq!(p.minted.as_ref().map(|m| m.0), Some(MintReason::Rotated));
        let r: TokenRecord = objects::read_record(p.record_secret.as_ref().unwrap()).unwrap();
        assert_eq!(r.sha256, second.hash());
        let previous = r.previous.clone().expect("the replaced token, in grace");
        assert_eq!(previous.sha256, first.hash());
        // now() is 2026-06-15T12:00:00Z.
        assert_eq!(
            previous.valid_until.0,
            "2026-06-15T12:01:30Z".parse().unwrap()
        );
        let status = p.report.status.clone().unwrap();
        assert_eq!(
            status.previous_token_valid_until,
            Some(previous.valid_until.clone())
        );
        let rotated_note = &p.report.notices[0];
        assert_eq!(rotated_note.reason, "Rotated");
        assert!(
            rotated_note
                .note
                .contains("keeps working until 2026-06-15T12:01:30Z"),
            "{}",
            rotated_note.note
        );
        assert_eq!(p.requeue, Duration::from_secs(90), "at the deadline");

        // Suspended inside the grace: the record names only the current token.
        let (held, record) = (
            p.holder_secret.clone().unwrap(),
            p.record_secret.clone().unwrap(),
        );
        let mut suspended = applied(&rotated, &p);
        suspended.spec.suspended = true;
        let p = plan(observe(
            &suspended,
            &ups,
            Some(&held),
            Some(&record),
            Token::mint(),
        ));
        let r: TokenRecord = objects::read_record(p.record_secret.as_ref().unwrap()).unwrap();
        assert_eq!((r.sha256, r.previous), (second.hash(), None));
        assert_eq!(p.report.status.unwrap().previous_token_valid_until, None);
    }

    #[test]
    fn expiry_withdraws_keeps_the_holders_secret_and_requeues_at_the_instant() {
        let soon = Time("2026-06-15T12:00:30Z".parse().unwrap());
        let t = token(|s| s.expires_at = Some(soon.clone()));
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let p = plan(observe(&t, &ups, None, None, Token::mint()));
        assert_eq!(p.requeue, Duration::from_secs(30));
        assert!(!p.withdraw);

        let past = token(|s| s.expires_at = Some(Time("2026-06-15T11:00:00Z".parse().unwrap())));
        let p = plan(observe(&past, &ups, None, None, Token::mint()));
        assert!(p.withdraw);
        assert_eq!((p.holder_secret, p.record_secret), (None, None));
        assert_eq!(p.report.verdict.phase, Phase::Expired);
        assert_eq!(p.requeue, RESYNC);
        let reasons: Vec<_> = p.report.notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["Expired"]);
    }

    #[test]
    fn a_token_inside_the_warning_says_so_once_and_looks_again_at_the_warning_instant() {
        // now() is 2026-06-15T12:00:00Z; the warning is a week.
        let later = Time("2026-06-22T12:01:00Z".parse().unwrap());
        let t = token(|s| s.expires_at = Some(later.clone()));
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let p = plan(observe(&t, &ups, None, None, Token::mint()));
        let soon = |p: &Plan| {
            p.report.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == token::EXPIRING_SOON)
                    .map(|c| c.status.clone())
            })
        };
        assert_eq!(soon(&p).as_deref(), Some("False"));
        assert_eq!(p.requeue, Duration::from_secs(60), "at the warning instant");

        let close = token(|s| s.expires_at = Some(Time("2026-06-18T12:00:00Z".parse().unwrap())));
        let p = plan(observe(&close, &ups, None, None, Token::mint()));
        assert_eq!(soon(&p).as_deref(), Some("True"));
        assert_eq!(
            p.report.verdict.phase,
            Phase::Active,
            "a warning, not a refusal"
        );
        let reasons: Vec<_> = p.report.notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["Issued", "ExpiringSoon"]);
        let again = plan(observe(
            &applied(&close, &p),
            &ups,
            None,
            None,
            Token::mint(),
        ));
        assert!(
            !again
                .report
                .notices
                .iter()
                .any(|n| n.reason == "ExpiringSoon")
        );
    }

    #[test]
    fn a_secret_that_is_not_ours_is_never_written_and_the_record_withdrawn() {
        let t = token(|_| {});
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let foreign = Secret {
            metadata: ObjectMeta {
                name: Some("alice-strake".into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        let p = plan(observe(&t, &ups, Some(&foreign), None, Token::mint()));
        assert!(p.withdraw);
        assert_eq!(p.holder_secret, None);
        assert_eq!(p.report.verdict.reason, reason::SECRET_CONFLICT);
        assert_eq!(p.report.verdict.phase, Phase::Failed);
    }

    #[test]
    fn a_missing_upstream_is_pending_but_still_published() {
        let t = token(|s| s.upstreams.push(UpstreamName("anthropic".into())));
        let key = ready_key();
        let ups = [("openai", Some(&key)), ("anthropic", None)];
        let p = plan(observe(&t, &ups, None, None, Token::mint()));
        assert_eq!(p.report.verdict.phase, Phase::Pending);
        assert_eq!(p.report.verdict.reason, reason::UPSTREAM_NOT_FOUND);
        assert!(p.record_secret.is_some() && p.holder_secret.is_some());
    }

    #[test]
    fn a_renamed_secret_removes_only_our_old_one() {
        let t = token(|_| {});
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let first = plan(observe(&t, &ups, None, None, Token::mint()));
        let mut renamed = applied(&t, &first);
        renamed.spec.secret_name = Some("alice-new".into());
        let ours = ObjectMeta {
            owner_references: Some(vec![objects::owner_reference(&t)]),
            ..ObjectMeta::default()
        };
        let mut o = observe(&renamed, &ups, None, None, Token::mint());
        o.old_secret = Some(&ours);
        assert_eq!(plan(o).delete_old_secret.as_deref(), Some("alice-strake"));
        let theirs = ObjectMeta::default();
        let mut o = observe(&renamed, &ups, None, None, Token::mint());
        o.old_secret = Some(&theirs);
        assert_eq!(plan(o).delete_old_secret, None);
    }

    #[test]
    fn a_refused_write_reports_failed_and_keeps_what_was_issued() {
        let t = token(|_| {});
        let key = ready_key();
        let ups = [("openai", Some(&key))];
        let p = plan(observe(&t, &ups, None, None, Token::mint()));
        let issued = applied(&t, &p);
        let r = refused(
            &issued,
            "could not write Secret x: quota".into(),
            now(),
            Duration::ZERO,
        );
        assert_eq!(r.verdict.phase, Phase::Failed);
        let status = r.status.unwrap();
        assert_eq!(status.token_prefix, p.report.status.unwrap().token_prefix);
        assert!(r.notices.iter().any(|n| n.warning));
    }

    #[test]
    fn a_deleted_token_is_held_until_the_last_collection_then_released() {
        let mut t = token(|_| {});
        t.metadata.deletion_timestamp = Some(Time("2026-06-15T11:59:50Z".parse().unwrap()));
        let hold = Duration::from_secs(25);
        assert_eq!(
            revocation(&t, now(), hold),
            Revocation::Hold(Duration::from_secs(15))
        );
        assert!(matches!(
            revocation(&t, now(), Duration::from_secs(10)),
            Revocation::Release(_)
        ));
        // Usage not collected: nothing to wait for.
        assert!(matches!(
            revocation(&t, now(), Duration::ZERO),
            Revocation::Release(_)
        ));
    }
}
