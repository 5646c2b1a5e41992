//! What a long pass owes the loop between two requests.

use crate::kube::Kube;
use crate::workload::Index;

/// The loop's own work that must go on while a pass makes requests:
/// answering health checks, renewing the lease, noticing signals. A pass
/// calls one of these before every request it sends; while a request
/// waits, its own wait answers health checks (see [`crate::transport`]).
pub trait Duties {
    /// Answers the health checks waiting now, and renews the Lease when
    /// due: called before every request.
    fn serve(&mut self);

    /// Does all the loop's duties; `false` means stop the pass now
    /// (shutdown, or leadership lost).
    fn keep_going(&mut self) -> bool;

    /// Folds into `index` what the collector's watch streams delivered
    /// since the last call, without waiting (reopening a stream that ended
    /// is a request). A reloader pass calls it between two requests, where
    /// the index may change, so that a workload created or edited during a
    /// long pass is known at once, not when the pass ends.
    fn refresh(&mut self, _kube: &mut Kube, _index: &mut Index) {}
}

/// No loop to serve: for a pass or a lookup run on its own (tests, tools).
pub struct Unattended;

impl Duties for Unattended {
    fn serve(&mut self) {}

    fn keep_going(&mut self) -> bool {
        true
    }
}
