//! strake-operator: for every StrakeToken, mints a token, hands it to its
//! holder in a Secret of the token's namespace, and publishes only its SHA-256
//! and policy to the proxy's namespace; for every UpstreamKey, publishes the
//! real key to the proxy's namespace. See `operator/README.md`.
//!
//! - [`core`]: the pure decisions (unit-tested without an API server);
//! - [`controller`]: the two controllers and the orphan sweep (kube calls);
//! - [`leader`], [`admin`], [`metrics`], [`cli`]: the process around them.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod controller;
pub mod core;
pub mod error;
pub mod leader;
pub mod metrics;

use std::sync::Arc;

use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::Health;
use crate::cli::{Cli, Settings};
use crate::error::{Error, Result};
use crate::leader::LeaderElector;
use crate::metrics::Metrics;

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(cli: Cli) -> Result<()> {
    let settings = Arc::new(cli.settings()?);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let listener = admin::bind(cli.admin_addr).await?;
    let admin = tokio::spawn(admin::serve(
        listener,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let client = Client::try_default()
        .await
        .map_err(|e| Error::Connect(Box::new(e)))?;
    info!(
        proxy_namespace = %settings.proxy_namespace,
        endpoint = %settings.endpoint,
        scopes = ?settings.scopes,
        resync = ?settings.resync,
        leader_elect = cli.leader_elect,
        "starting"
    );

    let outcome = if cli.leader_elect {
        let mut elector = LeaderElector::new(
            client.clone(),
            &cli.lease_namespace(),
            &cli.lease_name,
            leader::identity(),
        );
        lead_while_elected(&mut elector, client, settings, &metrics, &health, &shutdown).await;
        Ok(())
    } else {
        metrics.set_leader(true);
        controller::run(client, settings, metrics, health, shutdown.clone()).await;
        Ok(())
    };
    shutdown.cancel();
    if admin.await.is_err() {
        warn!("admin server task failed");
    }
    info!("stopped");
    outcome
}

/// Campaigns for the Lease and runs the controllers while this replica holds
/// it, until `shutdown`. A lost Lease (an API server outage longer than the
/// renewal deadline, or a standby that took over) stops the controllers at
/// once and sends this replica back to campaigning: the process stays, so a
/// pod is not restarted into CrashLoopBackOff by an outage.
async fn lead_while_elected(
    elector: &mut LeaderElector,
    client: Client,
    settings: Arc<Settings>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) {
    loop {
        health.set_standby();
        info!(identity = elector.identity(), "waiting for leadership");
        if !elector.acquire(shutdown).await {
            return;
        }
        info!(identity = elector.identity(), "leading");
        health.set_starting();
        metrics.set_leader(true);
        let controllers = controller::run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        );
        // Renewal continues while the controllers drain on shutdown. On a
        // lost Lease the controllers future is dropped, which stops every
        // reconcile before a standby may start (RENEW_DEADLINE < LEASE_DURATION).
        let lost = tokio::select! {
            () = controllers => None,
            lost = elector.keep() => Some(lost),
        };
        metrics.set_leader(false);
        match lost {
            None => {
                elector.release().await;
                return;
            }
            Some(error) => {
                metrics.leadership_lost();
                warn!(%error, "stopped the controllers; campaigning again");
            }
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        () = terminate => info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}
