//! The operator's pure core: what should exist, given the resources and the
//! clock. Nothing here talks to the API server, so every decision is unit-tested
//! on plain values; [`crate::controller`] and [`crate::leader`] are the thin
//! shell that reads the cluster, calls these functions and writes the result.

pub mod budget;
pub mod condition;
pub mod echo;
pub mod env;
#[cfg(test)]
pub mod fixtures;
pub mod lease;
pub mod objects;
pub mod retry;
pub mod revoker;
pub mod token;
pub mod token_plan;
pub mod upstream;
pub mod upstream_hosts;
pub mod usage;
