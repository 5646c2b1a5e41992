//! Pure data and decisions, no I/O: what a reference, a workload, its state
//! annotation and the metrics are, and the rules that need no server
//! (allowed addresses and paths, renewal times). Tested in-process.

pub mod allow;
pub mod cost;
pub mod metrics;
pub mod paths;
pub mod progress;
pub mod refs;
pub mod renewal;
pub mod sources;
pub mod state;
pub mod time;
pub mod window;
pub mod workload;
