//! The orphan sweep: proxy-namespace Secrets whose StrakeToken or UpstreamKey
//! no longer exists (deleted while the operator was down, or with its
//! finalizer removed by hand) are deleted, at startup and every `--resync`.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use strake_crds::contract::{self, Role, SourceRef, TokenRecord, UpstreamRecord};
use strake_crds::{StrakeToken, UpstreamKey};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{delete_secret, scoped};
use crate::cli::Settings;
use crate::core::objects;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

const PAGE: u32 = 500;

pub async fn run(
    client: Client,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(settings.resync);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match sweep(&client, &settings, &metrics).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "deleted orphaned proxy Secrets"),
            Err(error) => warn!(%error, "orphan sweep failed"),
        }
    }
}

/// One sweep; returns how many Secrets it deleted.
pub async fn sweep(client: &Client, settings: &Settings, metrics: &Metrics) -> Result<usize> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.proxy_namespace);
    // The published Secrets are listed before their sources: a source created
    // after this list has no Secret in it yet, so it cannot be mistaken for
    // missing.
    let published = list_all(
        &Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &settings.proxy_namespace),
        contract::PUBLISHED_SELECTOR,
        "published Secrets",
    )
    .await?;
    let mut candidates = Vec::new();
    for meta in published {
        let Some(secret_name) = meta.metadata.name.clone() else {
            continue;
        };
        let found = match objects::labelled_source(&meta.metadata) {
            Some(found) => Some(found),
            // The source's name was too long for a label: read the record.
            None => source_from_record(&secrets, &settings.proxy_namespace, &secret_name).await?,
        };
        let Some((role, source)) = found else {
            warn!(secret = %secret_name, "published Secret names no source; leaving it alone");
            continue;
        };
        let expected = match role {
            Role::Token => contract::token_secret_name(&source.namespace, &source.name),
            Role::Upstream => contract::upstream_secret_name(&source.namespace, &source.name),
        };
        if expected == secret_name && settings.covers(&source.namespace) {
            candidates.push((secret_name, role, source));
        }
    }
    if candidates.is_empty() {
        return Ok(0);
    }
    let tokens = existing::<StrakeToken>(client, settings, "StrakeTokens").await?;
    let upstreams = existing::<UpstreamKey>(client, settings, "UpstreamKeys").await?;
    let mut deleted = 0;
    for (secret_name, role, source) in candidates {
        let exists = match role {
            Role::Token => tokens.contains(&source),
            Role::Upstream => upstreams.contains(&source),
        };
        if !exists && delete_secret(&secrets, &settings.proxy_namespace, &secret_name).await? {
            info!(
                secret = %secret_name,
                role = role.as_str(),
                source_namespace = %source.namespace,
                source_name = %source.name,
                "deleted orphaned proxy Secret"
            );
            metrics.orphan_deleted(role.as_str());
            deleted += 1;
        }
    }
    Ok(deleted)
}

async fn source_from_record(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Option<(Role, SourceRef)>> {
    let Some(secret) = secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::GetSecret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        })?
    else {
        return Ok(None);
    };
    let role = Role::of(secret.metadata.labels.as_ref());
    Ok(match role {
        Some(Role::Token) => objects::read_record::<TokenRecord>(&secret)
            .and_then(|r| r.source)
            .map(|s| (Role::Token, s)),
        Some(Role::Upstream) => objects::read_record::<UpstreamRecord>(&secret)
            .and_then(|r| r.source)
            .map(|s| (Role::Upstream, s)),
        None => None,
    })
}

/// The `namespace/name` of every `K` in the watched namespaces.
async fn existing<K>(
    client: &Client,
    settings: &Settings,
    what: &'static str,
) -> Result<HashSet<SourceRef>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut names = HashSet::new();
    for scope in &settings.scopes {
        let api = scoped::<PartialObjectMeta<K>>(client, scope);
        for meta in list_all(&api, "", what).await? {
            names.insert(SourceRef {
                namespace: meta.metadata.namespace.unwrap_or_default(),
                name: meta.metadata.name.unwrap_or_default(),
            });
        }
    }
    Ok(names)
}

/// Lists metadata page by page, so that 100,000 objects never arrive in one response.
async fn list_all<K>(
    api: &Api<PartialObjectMeta<K>>,
    selector: &str,
    what: &'static str,
) -> Result<Vec<PartialObjectMeta<K>>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    if !selector.is_empty() {
        params = params.labels(selector);
    }
    loop {
        let page = api.list(&params).await.map_err(|source| Error::List {
            what,
            source: Box::new(source),
        })?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}
