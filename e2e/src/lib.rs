//! The harness of Strake's end-to-end tests.
//!
//! The tests run against the local stack that `e2e/dev/up.sh` starts: a real
//! kube-apiserver and controller manager, the chart's ServiceAccounts and
//! RBAC, the operator and the proxy as local processes authenticated as
//! those ServiceAccounts, and the mock upstream. [`Stack`] reads the stack's
//! `env` file. Each test gets a fresh namespace ([`TestNs`]) and acts as a
//! user would: `kubectl` to apply, delete and wait; HTTP through the proxy
//! with the env keys from the token's Secret; and the mock's recording to see
//! what reached the provider.
//!
//! Every token and upstream key a test handles is appended to the run's
//! secrets file ([`leaks`]), so that the last test can prove none of them
//! reached a log.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod env;
pub mod http;
pub mod issuer;
pub mod leaks;
pub mod sdk;
pub mod stack;
pub mod wait;

pub use env::DevEnv;
pub use http::Reply;
pub use stack::{Issued, Stack, TestNs};
pub use wait::eventually;
