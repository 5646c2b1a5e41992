//! What a pass asks of the loop between two of its steps. A step is one
//! unit of a pass's work: a list page, a lookup, a directory listed, one
//! workload decided and patched. Requests inside a step wait in
//! [`crate::io::reactor::wait_for`], which answers health checks and renews
//! the Lease; between steps the loop renews it too, reads the signals and
//! folds in the watch events, through this one interface.

use crate::collector::index::Index;
use crate::kube::Kube;

/// The loop, as a pass sees it.
pub trait Steps {
    /// Whether to take the next step: renews the Lease when due; `false`
    /// stops the pass now (shutdown, or leadership lost).
    fn keep_going(&mut self) -> bool;

    /// Applies to `index` the watch events that arrived since the last
    /// call, without a request (a watch that ended is reopened by the
    /// collector's own turn, not here). A reloader pass calls it between
    /// two steps, so that a workload created or edited during a long pass
    /// is decided as it is now.
    fn catch_up(&mut self, _kube: &mut Kube, _index: &mut Index) {}

    /// Whether the pass is still within its period. A reloader pass past
    /// it leaves each namespace's unasked secrets for the next pass, which
    /// is then due, so that one namespace's size never holds the others'
    /// next lookups back.
    fn in_time(&self) -> bool {
        true
    }
}

/// No loop to answer to: for a pass run on its own (tests, tools).
pub struct Unattended;

impl Steps for Unattended {
    fn keep_going(&mut self) -> bool {
        true
    }
}
