//! The StrakeToken reconciler: mint, hand out, publish, report; revoke on delete.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use strake_crds::contract;
use strake_crds::token::Token;
use strake_crds::{StrakeToken, UpstreamKey};
use tracing::{info, warn};

use kube::runtime::reflector::ObjectRef;

use super::{
    Context, apply_secret, apply_status, cache_ready, delete_secret, gauge_key, object_key,
    reference, requeue_after_failure, settle_finalizer,
};
use crate::core::objects::FINALIZER;
use crate::core::token::{self, Notice, event};
use crate::core::token_plan::{self, Observed, Report, Revocation};
use crate::error::{Error, Result};
use crate::metrics::STRAKE_TOKEN;

pub async fn reconcile(obj: Arc<StrakeToken>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(STRAKE_TOKEN);
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = object_key(obj.as_ref());
    let api: Api<StrakeToken> = Api::namespaced(ctx.client.clone(), &namespace);
    if obj.metadata.deletion_timestamp.is_some()
        && obj.finalizers().iter().any(|f| f == FINALIZER)
        && let Revocation::Hold(after) =
            token_plan::revocation(&obj, Timestamp::now(), final_collection(&ctx))
    {
        withdraw(&obj, &ctx).await?;
        ctx.succeeded(&key);
        return Ok(Action::requeue(after));
    }
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
/// with the spec: observe, [`token_plan::plan`], then do what it says.
async fn apply(obj: &StrakeToken, ctx: &Context) -> Result<Action> {
    let settings = &ctx.settings;
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();

    // Observe. UpstreamKeys from the token controller's own cache (a key
    // that just became Ready triggers its tokens after the cache has it);
    // the Secrets fresh, as they hold what was issued.
    cache_ready(&ctx.token_upstreams, "UpstreamKey").await?;
    let found: Vec<(&str, Option<Arc<UpstreamKey>>)> = obj
        .spec
        .upstreams
        .iter()
        .map(|u| {
            let key = ObjectRef::new(&u.0).within(&namespace);
            (u.0.as_str(), ctx.token_upstreams.get(&key))
        })
        .collect();
    let upstreams: Vec<(&str, Option<&UpstreamKey>)> =
        found.iter().map(|(n, uk)| (*n, uk.as_deref())).collect();
    let proxy_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &settings.proxy_namespace);
    let proxy_name = contract::token_secret_name(&namespace, &name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let held = get_secret(&secrets, &namespace, &obj.secret_name()).await?;
    let published = get_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await?;
    let old_secret = match obj
        .status
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
        .filter(|old| *old != obj.secret_name())
    {
        Some(old) => secrets
            .get_metadata_opt(old)
            .await
            .map_err(|source| Error::GetSecret {
                namespace: namespace.clone(),
                name: old.to_string(),
                source: Box::new(source),
            })?
            .map(|m| m.metadata),
        None => None,
    };
    let now = settings.clock.now();
    let plan = token_plan::plan(Observed {
        token: obj,
        now,
        endpoint: &settings.endpoint,
        proxy_namespace: &settings.proxy_namespace,
        resync: settings.resync,
        expiry_warning: settings.expiry_warning,
        cluster_issuer: &settings.cluster_issuer,
        collect_every: settings.usage.interval,
        upstreams: &upstreams,
        held: held.as_ref(),
        published: published.as_ref(),
        old_secret: old_secret.as_ref(),
        fresh: Token::mint(),
    });
    drop(held);

    // Act, in the plan's order.
    if plan.recount_upstreams {
        ctx.recount_upstreams(&namespace);
    }
    if plan.withdraw {
        delete_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await?;
    }
    let mut look_again = false;
    if let Some(desired) = &plan.holder_secret {
        look_again |= publish_or_fail(obj, ctx, now, write_secret(ctx, &secrets, desired)).await?;
    }
    if let Some(old) = &plan.delete_old_secret {
        delete_secret(&secrets, &namespace, old).await?;
        info!(%namespace, secret = %old, "deleted a holder's Secret whose token no longer works (an earlier spec.secretName, or the token turned keyless)");
    }
    if let Some(desired) = &plan.record_secret {
        look_again |=
            publish_or_fail(obj, ctx, now, write_secret(ctx, &proxy_secrets, desired)).await?;
    }
    if let Some((why, prefix)) = &plan.minted {
        info!(%namespace, %name, %prefix, ?why, "minted a token");
    }
    report(obj, ctx, &plan.report).await?;
    // A change held back during our write: its trigger is ours to replay.
    Ok(Action::requeue(if look_again {
        std::time::Duration::ZERO
    } else {
        plan.requeue
    }))
}

/// Applies `desired`, marking the write so that its watch event does not
/// bring another reconcile. True when someone else changed the Secret
/// meanwhile: look again.
async fn write_secret(ctx: &Context, api: &Api<Secret>, desired: &Secret) -> Result<bool> {
    let namespace = desired.metadata.namespace.as_deref().unwrap_or_default();
    let name = desired.metadata.name.as_deref().unwrap_or_default();
    ctx.echoes.writing(namespace, name);
    match apply_secret(api, desired).await {
        Ok(Some(version)) => Ok(ctx.echoes.wrote(namespace, name, &version)),
        // No version to recognise: its event wakes the controller as any would.
        Ok(None) => {
            ctx.echoes.failed(namespace, name);
            Ok(false)
        }
        Err(e) => {
            ctx.echoes.failed(namespace, name);
            Err(e)
        }
    }
}

async fn get_secret(api: &Api<Secret>, namespace: &str, name: &str) -> Result<Option<Secret>> {
    api.get_opt(name).await.map_err(|source| Error::GetSecret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source: Box::new(source),
    })
}

/// Writes the status (when it changed), publishes the events, updates the gauge.
async fn report(obj: &StrakeToken, ctx: &Context, report: &Report) -> Result<()> {
    let verdict = &report.verdict;
    if let Some(status) = &report.status {
        let api: Api<StrakeToken> =
            Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        apply_status(&api, obj, status).await?;
        if report.phase_changed {
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
    for notice in &report.notices {
        ctx.notify(&regarding, "Reconcile", notice).await;
    }
    ctx.metrics
        .set_token_phase(gauge_key(obj), Some(verdict.phase));
    ctx.metrics.set_token_expiry(
        gauge_key(obj),
        &obj.spec.identity,
        obj.spec.expires_at.as_ref().map(|t| t.0.as_second()),
    );
    Ok(())
}

/// Runs a write; if the API server refuses it, the token is reported Failed
/// before the error goes to the retry policy.
async fn publish_or_fail<T>(
    obj: &StrakeToken,
    ctx: &Context,
    now: Timestamp,
    write: impl Future<Output = Result<T>>,
) -> Result<T> {
    let error = match write.await {
        Ok(written) => return Ok(written),
        Err(error) => error,
    };
    if let Error::ApplySecret {
        source,
        namespace,
        name,
    } = &error
        && let kube::Error::Api(status) = source.as_ref()
    {
        let message = format!(
            "could not write Secret {namespace}/{name}: {}",
            status.message
        );
        if let Err(e) = report(
            obj,
            ctx,
            &token_plan::refused(obj, message, now, ctx.settings.expiry_warning),
        )
        .await
        {
            warn!(error = %e, "could not report the failure in status");
        }
    }
    Err(error)
}

/// How long a deleted token's finalizer waits for the replicas' last
/// counters: none when usage is not collected.
fn final_collection(ctx: &Context) -> std::time::Duration {
    let usage = &ctx.settings.usage;
    if usage.enabled() {
        usage.final_collection()
    } else {
        std::time::Duration::ZERO
    }
}

/// Deletes the token's record in the proxy namespace: the proxy refuses the
/// token once its watch sees it. Returns whether there was one.
async fn withdraw(obj: &StrakeToken, ctx: &Context) -> Result<bool> {
    let settings = &ctx.settings;
    let namespace = obj.namespace().unwrap_or_default();
    let proxy_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &settings.proxy_namespace);
    let proxy_name = contract::token_secret_name(&namespace, &obj.name_any());
    let deleted = delete_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await?;
    if deleted {
        info!(%namespace, name = %obj.name_any(), identity = %obj.spec.identity, "revoked; collecting its last usage");
    }
    Ok(deleted)
}

/// Deletion, once the last usage is in status: the proxy has forgotten the
/// token, the final lifetime usage goes into the Revoked event and the
/// chargeback metric, and the finalizer is removed. Kubernetes
/// garbage-collects the holder's Secret through its owner reference.
async fn revoke(obj: &StrakeToken, ctx: &Context) -> Result<Action> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    let deleted = withdraw(obj, ctx).await? | ctx.take_revoked_ahead(uid);
    // Held for the final collection: the record went then, not now.
    let held = final_collection(ctx) > std::time::Duration::ZERO;
    if deleted || held {
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
    ctx.metrics
        .set_token_expiry(gauge_key(obj), &obj.spec.identity, None);
    ctx.recount_upstreams(&namespace);
    Ok(Action::await_change())
}
