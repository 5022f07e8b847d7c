//! The revoker's thin loop: a metadata watch of StrakeTokens, the pure step
//! [`Revoker::observe`], and the delete of each due token's proxy record,
//! so a revocation never waits in the reconcile queue behind creations.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use strake_crds::{StrakeToken, contract};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Context, delete_secret, scoped};
use crate::cli::Scope;
use crate::core::revoker::{Revoker, Withdrawal};

/// Runs until `shutdown`, at most `--revocation-concurrency` deletes in
/// flight.
pub fn run(
    scope: &Scope,
    client: &Client,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut revoker = Revoker::default();
    let limit = usize::from(ctx.settings.revocation_concurrency);
    watcher(
        scoped::<PartialObjectMeta<StrakeToken>>(client, scope),
        watcher::Config::default(),
    )
    .backoff(strake_crds::watch::backoff())
    .take_until(shutdown.cancelled_owned())
    .filter_map(move |event| {
        let due = match event {
            Ok(event) => revoker.observe(event),
            // The backoff paces the retries; the controller's cleanup
            // still withdraws every deleted token meanwhile.
            Err(error) => {
                warn!(%error, "revoker: watching StrakeTokens failed; retrying");
                None
            }
        };
        futures::future::ready(due)
    })
    .for_each_concurrent(limit, move |due| withdraw(ctx.clone(), due))
}

/// Deletes the token's record in the proxy namespace; a failure is left to
/// the controller's cleanup, which withdraws it too.
pub(super) async fn withdraw(ctx: Arc<Context>, due: Withdrawal) {
    let proxy_namespace = &ctx.settings.proxy_namespace;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), proxy_namespace);
    let record = contract::token_secret_name(&due.namespace, &due.name);
    match delete_secret(&api, proxy_namespace, &record).await {
        Ok(existed) => {
            ctx.metrics.revoked_ahead(true);
            if existed {
                ctx.revoked_ahead(&due.uid);
                info!(namespace = %due.namespace, name = %due.name, "revoked: the proxies' record is withdrawn");
            }
        }
        Err(error) => {
            ctx.metrics.revoked_ahead(false);
            warn!(namespace = %due.namespace, name = %due.name, %error, "revoker: could not withdraw the record; the cleanup retries");
        }
    }
}
