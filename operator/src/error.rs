//! The crate's one error type. Each variant names the failure site; none ever
//! carries a token or a key (kube errors carry the API server's message, which
//! names objects, never Secret data).

use std::net::SocketAddr;
use std::time::Duration;

use kube::runtime::finalizer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret {namespace}/{name}: {source}")]
    GetSecret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("applying Secret {namespace}/{name}: {source}")]
    ApplySecret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("deleting Secret {namespace}/{name}: {source}")]
    DeleteSecret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("writing the status of {kind} {namespace}/{name}: {source}")]
    PatchStatus {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("{kind} {namespace}/{name}: {source}")]
    Finalizer {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<finalizer::Error<Error>>,
    },

    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("the {0} cache closed before it was filled")]
    StoreClosed(&'static str),

    #[error("leader election: {action} Lease {namespace}/{name}: {source}")]
    Lease {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("lost leadership: the Lease was not renewed for {0:?}")]
    LeadershipLost(Duration),

    #[error("connecting to the Kubernetes API: {0}")]
    Connect(#[source] Box<kube::Error>),

    #[error("admin server on {addr}: {source}")]
    AdminServer {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for the `reason` of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::GetSecret { .. } => "get_secret",
            Error::ApplySecret { .. } => "apply_secret",
            Error::DeleteSecret { .. } => "delete_secret",
            Error::PatchStatus { .. } => "patch_status",
            Error::Finalizer { source, .. } => match source.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_label()
                }
                _ => "finalizer",
            },
            Error::List { .. } => "list",
            Error::StoreClosed(_) => "store_closed",
            Error::Lease { .. } => "lease",
            Error::LeadershipLost(_) => "leadership_lost",
            Error::Connect(_) => "connect",
            Error::AdminServer { .. } => "admin_server",
            Error::Config(_) => "config",
        }
    }
}

/// True for a 404 from the API server.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// True for a 409 (a write lost an optimistic-concurrency race).
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}
