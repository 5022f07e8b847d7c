//! The UpstreamKey reconciler: read the real key, publish it to the proxy
//! namespace (or withdraw it), report; withdraw on delete.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use strake_crds::contract;
use strake_crds::{UpstreamKey, UpstreamKeyStatus};
use tracing::info;

use super::{
    Context, apply_secret, apply_status, cache_ready, delete_secret, gauge_key, object_key,
    reference, requeue_after_failure, settle_finalizer,
};
use crate::core::condition;
use crate::core::objects::{self, FINALIZER};
use crate::core::token::Notice;
use crate::core::upstream::{self, UpstreamVerdict, reason};
use crate::error::{Error, Result};
use crate::metrics::UPSTREAM_KEY;

/// Event reason when a key stops being published because it was deleted.
pub const WITHDRAWN: &str = "Withdrawn";

pub async fn reconcile(obj: Arc<UpstreamKey>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(UPSTREAM_KEY);
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = object_key(obj.as_ref());
    let api: Api<UpstreamKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(uk) => apply(&uk, &ctx).await,
            Finalizer::Cleanup(uk) => withdraw(&uk, &ctx).await,
        }
    })
    .await;
    let action = settle_finalizer(action).map_err(|source| Error::Finalizer {
        kind: "UpstreamKey",
        namespace,
        name,
        source: Box::new(source),
    })?;
    ctx.succeeded(&key);
    Ok(action)
}

pub fn error_policy(obj: Arc<UpstreamKey>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_failure(UPSTREAM_KEY, obj.as_ref(), error, &ctx)
}

/// Publishes the key when it is usable and withdraws it when it is not: the
/// proxy serves exactly the UpstreamKeys whose Ready condition is True.
async fn apply(obj: &UpstreamKey, ctx: &Context) -> Result<Action> {
    let settings = &ctx.settings;
    let now = settings.clock.now();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let secret_name = &obj.spec.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|source| Error::GetSecret {
            namespace: namespace.clone(),
            name: secret_name.clone(),
            source: Box::new(source),
        })?;
    let verdict = upstream::evaluate(obj, secret.as_ref(), &settings.allowed_upstream_hosts);
    drop(secret);
    let what = format!("UpstreamKey {namespace}/{name}");
    let budget = upstream::budget_plan(obj, now, settings.usage.interval, &what);

    let proxy_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &settings.proxy_namespace);
    match &verdict {
        UpstreamVerdict::Ready { record, key } => {
            let desired = objects::upstream_secret(
                &settings.proxy_namespace,
                &upstream::source(obj),
                record,
                key,
                budget.as_ref().map(|b| &b.record),
            );
            apply_secret(&proxy_secrets, &desired).await?;
        }
        UpstreamVerdict::NotReady { .. } => {
            let proxy_name = contract::upstream_secret_name(&namespace, &name);
            delete_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await?;
        }
    }

    cache_ready(&ctx.tokens, "StrakeToken").await?;
    let tokens = ctx.tokens.state();
    let count = upstream::tokens_naming(tokens.iter().map(AsRef::as_ref), &namespace, &name);
    let mut status = upstream::status(obj, &verdict, count, now);
    if let Some(b) = &budget {
        status.conditions.push(b.condition.clone());
        status.budget_alerts = Some(b.alerts.clone());
    }
    let previous_reason = obj
        .status
        .as_ref()
        .and_then(|s| condition::ready_reason(&s.conditions));
    let notice = match &verdict {
        UpstreamVerdict::Ready { record, .. } if previous_reason != Some(reason::PUBLISHED) => {
            Some(Notice {
                warning: false,
                reason: reason::PUBLISHED,
                note: format!("published to the proxy as {}", record.name),
            })
        }
        UpstreamVerdict::NotReady { reason, message } if previous_reason != Some(reason) => {
            Some(Notice {
                warning: true,
                reason,
                note: format!("{message}; the proxy does not use this key"),
            })
        }
        _ => None,
    };
    // Usage is the collector's: it is neither compared nor written here.
    let owned = obj.status.as_ref().map(|s| UpstreamKeyStatus {
        last_used_at: None,
        usage: None,
        budget: None,
        ..s.clone()
    });
    if owned.as_ref() != Some(&status) {
        let api: Api<UpstreamKey> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, obj, &status).await?;
    }
    if let Some(notice) = notice {
        info!(%namespace, %name, reason = notice.reason, "UpstreamKey readiness");
        ctx.notify(&reference(obj), "Reconcile", &notice).await;
    }
    for notice in budget.iter().flat_map(|b| &b.notices) {
        ctx.notify(&reference(obj), "Reconcile", notice).await;
    }
    let ready = matches!(verdict, UpstreamVerdict::Ready { .. });
    ctx.metrics.set_upstream_ready(gauge_key(obj), Some(ready));
    let requeue = budget
        .as_ref()
        .map_or(settings.resync, |b| b.requeue.min(settings.resync));
    Ok(Action::requeue(requeue))
}

async fn withdraw(obj: &UpstreamKey, ctx: &Context) -> Result<Action> {
    let settings = &ctx.settings;
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let proxy_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &settings.proxy_namespace);
    let proxy_name = contract::upstream_secret_name(&namespace, &name);
    if delete_secret(&proxy_secrets, &settings.proxy_namespace, &proxy_name).await? {
        info!(%namespace, %name, "UpstreamKey withdrawn");
        let notice = Notice {
            warning: false,
            reason: WITHDRAWN,
            note: "the proxy no longer uses this key".into(),
        };
        ctx.notify(&reference(obj), "Cleanup", &notice).await;
    }
    ctx.metrics.set_upstream_ready(gauge_key(obj), None);
    Ok(Action::await_change())
}
