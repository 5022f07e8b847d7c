//! Config sources: they drive a [`crate::index::TokenIndex`] and publish it.
//!
//! - [`file`]: one YAML file, polled and reloaded when it changes.
//! - [`kube`]: the operator's Secrets, watched by label selector.

pub mod file;
pub mod kube;
