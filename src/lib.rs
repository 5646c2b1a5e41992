//! vault-secrets-reloader: rolls out Kubernetes workloads when the Vault or
//! OpenBao secrets they use get a new version. A synchronous,
//! single-threaded daemon; see README.md for how it works.

pub mod allow;
pub mod collector;
pub mod config;
pub mod daemon;
pub mod error;
pub mod exchange;
pub mod follow;
pub mod http;
pub mod index;
pub mod kube;
pub mod kubeconfig;
pub mod lease;
pub mod lifetime;
pub mod lines;
pub mod listing;
pub mod logging;
pub mod metrics;
pub mod paths;
pub mod poll;
pub mod proxy;
pub mod reactor;
pub mod refs;
pub mod reloader;
pub mod renewal;
pub mod resolve;
pub mod serve;
pub mod settings;
pub mod state;
pub mod steps;
pub mod stream;
pub mod time;
pub mod transport;
pub mod vault;
pub mod watch;
pub mod workload;
