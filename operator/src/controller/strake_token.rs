//! The StrakeToken reconciler: mint, hand out, publish, report; revoke on delete.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use strake_crds::contract::{self, TokenRecord};
use strake_crds::token::Token;
use strake_crds::{Phase, StrakeToken, UpstreamKey};
use tracing::{info, warn};

use super::{
    Context, apply_secret, apply_status, delete_secret, gauge_key, object_key, reference,
    requeue_after_failure, settle_finalizer,
};
use crate::core::env::{self, EnvUpstream};
use crate::core::objects::{self, FINALIZER, ISSUED_AT_ANNOTATION, ROTATION_ANNOTATION, TOKEN_KEY};
use crate::core::token::{
    self, Facts, Held, Issued, Notice, Publish, TokenChoice, UpstreamState, Verdict, event, reason,
};
use crate::core::upstream;
use crate::error::{Error, Result};
use crate::metrics::STRAKE_TOKEN;

pub async fn reconcile(obj: Arc<StrakeToken>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(STRAKE_TOKEN);
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = object_key(obj.as_ref());
    let api: Api<StrakeToken> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(t) => apply(&t, &ctx).await,
            Finalizer::Cleanup(t) => revoke(&t, &ctx).await,
        }
    })
    .await;
    let action = settle_finalizer(action).map_err(|source| Error::Finalizer {
        kind: "StrakeToken",
        namespace,
        name,
        source: Box::new(source),
    })?;
    ctx.succeeded(&key);
    Ok(action)
}

pub fn error_policy(obj: Arc<StrakeToken>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_failure(STRAKE_TOKEN, obj.as_ref(), error, &ctx)
}

/// Brings the holder's Secret, the published record and the status in line
/// with the spec.
async fn apply(obj: &StrakeToken, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    let settings = &ctx.settings;
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let previous = obj.status.as_ref();
    if previous.and_then(|s| s.observed_generation) != obj.metadata.generation {
        // Its upstream list may have changed: the keys' token counts with it.
        ctx.recount_upstreams(&namespace);
    }

    // Fresh reads, not the cache: a key that just became Ready must count.
    let upstream_api: Api<UpstreamKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut found = Vec::with_capacity(obj.spec.upstreams.len());
    for upstream in &obj.spec.upstreams {
        let key =
            upstream_api
                .get_opt(&upstream.0)
                .await
                .map_err(|source| Error::GetUpstreamKey {
                    namespace: namespace.clone(),
                    name: upstream.0.clone(),
                    source: Box::new(source),
                })?;
        found.push((upstream.0.as_str(), key));
    }
    let states: Vec<(&str, UpstreamState)> = found
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
    let env_upstreams: Vec<EnvUpstream<'_>> = found
        .iter()
        .filter_map(|(n, uk)| {
            uk.as_ref().map(|uk| EnvUpstream {
                name: n,
                provider: uk.spec.provider,
            })
        })
        .collect();

    let proxy_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &settings.proxy_namespace);
    let proxy_name = contract::token_secret_name(&namespace, &name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = obj.secret_name();
    let mut facts = Facts {
        expires_at: obj.spec.expires_at.as_ref().map(|t| t.0),
        now,
        suspended: obj.spec.suspended,
        secret_conflict: None,
        upstreams: &states,
    };

    // Expired: the proxy forgets the token; the holder's Secret is left as
    // is, so extending expiresAt brings the same token back.
    let verdict = token::decide(&facts);
    if verdict.publish == Publish::Withdraw {
        delete_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await?;
        let issued = previous.and_then(|s| {
            s.token_prefix.clone().map(|prefix| Issued {
                prefix,
                at: s.issued_at.clone(),
            })
        });
        let endpoint = previous.and_then(|s| s.endpoint.clone());
        report(obj, ctx, &verdict, endpoint, issued, now, Vec::new()).await?;
        return Ok(Action::requeue(settings.resync));
    }

    let held_secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|source| Error::GetSecret {
            namespace: namespace.clone(),
            name: secret_name.clone(),
            source: Box::new(source),
        })?;
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    if held_secret
        .as_ref()
        .is_some_and(|s| !objects::controlled_by(&s.metadata, uid))
    {
        // Never overwrite (or garbage-collect) a Secret that is not ours.
        facts.secret_conflict = Some(&secret_name);
        let verdict = token::decide(&facts);
        delete_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await?;
        report(obj, ctx, &verdict, None, None, now, Vec::new()).await?;
        return Ok(Action::requeue(settings.resync));
    }

    let published =
        proxy_secrets
            .get_opt(&proxy_name)
            .await
            .map_err(|source| Error::GetSecret {
                namespace: settings.proxy_namespace.clone(),
                name: proxy_name.clone(),
                source: Box::new(source),
            })?;
    let published_hash = published
        .as_ref()
        .and_then(objects::read_record::<TokenRecord>)
        .map(|r| r.sha256);
    let held = held_secret.as_ref().map(|s| Held {
        token: s
            .data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .map(|b| b.0.as_slice()),
        rotation: s.annotations().get(ROTATION_ANNOTATION).map(String::as_str),
    });
    let issued_before = previous.is_some_and(|s| s.token_prefix.is_some());
    let (token, issued_at, minted) = match token::choose_token(
        held,
        obj.spec.rotation,
        published_hash.as_ref(),
        issued_before,
    ) {
        TokenChoice::Keep(token) => {
            let issued_at = held_secret
                .as_ref()
                .and_then(|s| s.annotations().get(ISSUED_AT_ANNOTATION))
                .and_then(|a| a.parse::<Timestamp>().ok())
                .map(Time)
                .or_else(|| previous.and_then(|s| s.issued_at.clone()))
                .unwrap_or(Time(now));
            (token, issued_at, None)
        }
        TokenChoice::Mint(why) => (Token::mint(), Time(token::whole_seconds(now)), Some(why)),
    };

    // 1. The holder's Secret first: a token is announced only once it is kept.
    let env = env::render(&settings.endpoint, &env_upstreams, token.expose());
    let desired = objects::plaintext_secret(obj, &token, &issued_at, env);
    let unchanged = held_secret
        .as_ref()
        .is_some_and(|s| objects::already_applied(s, &desired));
    if !unchanged {
        publish_or_fail(obj, ctx, now, apply_secret(&secrets, &desired)).await?;
    }
    drop(held_secret);
    // A renamed spec.secretName leaves the old Secret behind, holding a
    // token that no longer works: remove it.
    if let Some(old) = previous
        .and_then(|s| s.secret_name.as_deref())
        .filter(|old| *old != secret_name)
    {
        remove_old_secret(&secrets, &namespace, old, uid).await?;
    }

    // 2. The hashed record for the proxy.
    let record = token::record(obj, token.hash());
    let desired = objects::token_secret(&settings.proxy_namespace, &token::source(obj), &record);
    if !published
        .as_ref()
        .is_some_and(|s| objects::already_applied(s, &desired))
    {
        publish_or_fail(obj, ctx, now, apply_secret(&proxy_secrets, &desired)).await?;
    }

    // 3. Status and events.
    let mut notices = Vec::new();
    if let Some(why) = minted {
        let (reason, note) = why.event(&secret_name, token.display_prefix(), obj.spec.rotation);
        info!(%namespace, %name, prefix = token.display_prefix(), ?why, "minted a token");
        notices.push(Notice {
            warning: false,
            reason,
            note,
        });
    }
    let endpoint = env::base_urls(&settings.endpoint, &env_upstreams)
        .into_iter()
        .next()
        .unwrap_or_else(|| settings.endpoint.clone());
    let issued = Issued {
        prefix: token.display_prefix().to_string(),
        at: Some(issued_at),
    };
    report(
        obj,
        ctx,
        &verdict,
        Some(endpoint),
        Some(issued),
        now,
        notices,
    )
    .await?;
    Ok(Action::requeue(token::requeue_after(
        obj.spec.expires_at.as_ref(),
        now,
        settings.resync,
    )))
}

/// Writes the status (when it changed), publishes the events, updates the gauge.
async fn report(
    obj: &StrakeToken,
    ctx: &Context,
    verdict: &Verdict,
    endpoint: Option<String>,
    issued: Option<Issued>,
    now: Timestamp,
    mut notices: Vec<Notice>,
) -> Result<()> {
    let status = token::status(obj, verdict, endpoint, issued, now);
    notices.extend(token::phase_notices(obj.status.as_ref(), verdict));
    if token::status_changed(obj.status.as_ref(), &status) {
        let api: Api<StrakeToken> =
            Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        apply_status(&api, obj, &status).await?;
        if obj.status.as_ref().and_then(|s| s.phase) != Some(verdict.phase) {
            info!(
                namespace = obj.namespace().as_deref(),
                name = %obj.name_any(),
                identity = %obj.spec.identity,
                phase = verdict.phase.as_str(),
                reason = verdict.reason,
                "StrakeToken phase"
            );
        }
    }
    let regarding = reference(obj);
    for notice in &notices {
        ctx.notify(&regarding, "Reconcile", notice).await;
    }
    ctx.metrics
        .set_token_phase(gauge_key(obj), Some(verdict.phase));
    Ok(())
}

/// Runs a write; if the API server refuses it, the token is reported Failed
/// before the error goes to the retry policy.
async fn publish_or_fail(
    obj: &StrakeToken,
    ctx: &Context,
    now: Timestamp,
    write: impl Future<Output = Result<()>>,
) -> Result<()> {
    let Err(error) = write.await else {
        return Ok(());
    };
    let refusal = match &error {
        Error::ApplySecret {
            source,
            namespace,
            name,
        } => match source.as_ref() {
            kube::Error::Api(status) => Some(format!(
                "could not write Secret {namespace}/{name}: {}",
                status.message
            )),
            _ => None,
        },
        _ => None,
    };
    if let Some(message) = refusal {
        let verdict = Verdict {
            phase: Phase::Failed,
            reason: reason::PUBLISH_FAILED,
            message,
            publish: Publish::Record,
        };
        let issued = obj.status.as_ref().and_then(|s| {
            s.token_prefix.clone().map(|prefix| Issued {
                prefix,
                at: s.issued_at.clone(),
            })
        });
        let endpoint = obj.status.as_ref().and_then(|s| s.endpoint.clone());
        if let Err(e) = report(obj, ctx, &verdict, endpoint, issued, now, Vec::new()).await {
            warn!(error = %e, "could not report the failure in status");
        }
    }
    Err(error)
}

async fn remove_old_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<()> {
    let old = secrets
        .get_metadata_opt(name)
        .await
        .map_err(|source| Error::GetSecret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        })?;
    if old.is_some_and(|s| objects::controlled_by(&s.metadata, uid)) {
        delete_secret(secrets, namespace, name).await?;
        info!(%namespace, secret = name, "deleted the Secret of a previous spec.secretName");
    }
    Ok(())
}

/// Deletion: the proxy forgets the token before the StrakeToken goes away.
/// Kubernetes garbage-collects the holder's Secret through its owner reference.
async fn revoke(obj: &StrakeToken, ctx: &Context) -> Result<Action> {
    let settings = &ctx.settings;
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let proxy_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &settings.proxy_namespace);
    let proxy_name = contract::token_secret_name(&namespace, &name);
    if delete_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await? {
        let lifetime = token::final_usage(obj);
        info!(%namespace, %name, identity = %obj.spec.identity, usage = %lifetime.note, "revoked");
        let notice = Notice {
            warning: false,
            reason: event::REVOKED,
            note: format!(
                "the proxy rejects the token from now on; Secret {} is deleted with the StrakeToken; {}",
                obj.secret_name(),
                lifetime.note
            ),
        };
        ctx.notify(&reference(obj), "Cleanup", &notice).await;
        ctx.metrics
            .set_final_usage(&gauge_key(obj), &obj.spec.identity, &lifetime.usage);
    }
    ctx.metrics.set_token_phase(gauge_key(obj), None);
    ctx.recount_upstreams(&namespace);
    Ok(Action::await_change())
}
