//! Leader election on a `coordination.k8s.io/v1` Lease (the I/O half; the
//! decision is [`crate::core::lease`]). Writes are guarded by the Lease's
//! `resourceVersion`, so of two replicas racing for it exactly one wins.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::core::lease::{self, LEASE_DURATION, LeaseDecision, RENEW_DEADLINE, RETRY_PERIOD};
use crate::error::{Error, Result, is_conflict};

pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    /// The Lease's resourceVersion when we last saw it change, and when.
    observed: Option<(String, Instant)>,
}

/// This replica's holder identity: `$POD_NAME`, else hostname and pid.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "strake-operator".into());
    format!("{host}-{}", std::process::id())
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Retries until this replica leads (true) or `shutdown` fires (false).
    pub async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election attempt failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = sleep(RETRY_PERIOD) => {}
            }
        }
    }

    /// Renews until leadership is lost, and returns why. Only returns then.
    pub async fn keep(&mut self) -> Error {
        let mut renewed = Instant::now();
        loop {
            sleep(RETRY_PERIOD).await;
            // A hung request must not outlive the deadline: past it, a
            // standby may already lead.
            let left = RENEW_DEADLINE.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => return Error::LeadershipLost(renewed.elapsed()),
                Ok(Err(error)) => warn!(%error, "could not renew the Lease"),
                Err(_elapsed) => warn!("renewing the Lease timed out"),
            }
            if renewed.elapsed() >= RENEW_DEADLINE {
                return Error::LeadershipLost(renewed.elapsed());
            }
        }
    }

    /// Hands the Lease back on a clean shutdown so a standby takes over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut current)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = current.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released the Lease"),
            Err(error) => warn!(%error, "could not release the Lease"),
        }
    }

    /// One round: true when this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| self.error("reading", source))?;
        let Some(mut current) = current else {
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds(LEASE_DURATION)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &fresh).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(source) => Err(self.error("creating", source)),
            };
        };
        let unchanged_for = self.observe(&current);
        let spec = current.spec.get_or_insert_with(LeaseSpec::default);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(LEASE_DURATION);
        match lease::decide(
            spec.holder_identity.as_deref(),
            &self.identity,
            duration,
            unchanged_for,
        ) {
            LeaseDecision::Wait => return Ok(false),
            LeaseDecision::Renew => {}
            LeaseDecision::Acquire => {
                info!(lease = %self.name, previous = spec.holder_identity.as_deref(), "taking over the Lease");
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_seconds(LEASE_DURATION));
        // `current` carries the resourceVersion we read: if anyone wrote in
        // between, this replace fails with 409 and we do not lead.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(source) => Err(self.error("updating", source)),
        }
    }

    /// Notes the Lease's version; returns how long it has been unchanged.
    fn observe(&mut self, lease: &Lease) -> Duration {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        match &self.observed {
            Some((seen, since)) if *seen == version => since.elapsed(),
            _ => {
                self.observed = Some((version, Instant::now()));
                Duration::ZERO
            }
        }
    }

    fn error(&self, action: &'static str, source: kube::Error) -> Error {
        Error::Lease {
            action,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }
}

fn duration_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}
