//! vault-secrets-reloader: rolls out Kubernetes workloads when the Vault or
//! OpenBao secrets they use get a new version. A synchronous,
//! single-threaded daemon; see docs/how-it-works.md for how it works.
//!
//! Folders by layer, each using only those before it:
//! `policy` (pure data and decisions) → `io` (the thread's waits, sockets,
//! HTTP) → `kube`, `vault` (the two clients) → `collector` (the index of
//! workloads) → `reloader` (the pass that rolls them out) → `daemon` (the
//! loop, its configuration and logs). `error` is shared by all.

pub mod collector;
pub mod daemon;
pub mod error;
pub mod io;
pub mod kube;
pub mod policy;
pub mod reloader;
pub mod vault;
