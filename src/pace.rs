//! What a long pass owes the loop between two requests.

/// The loop's own work that must go on while a pass makes requests:
/// answering health checks, renewing the lease, noticing signals.
pub trait Duties {
    /// Called before each request of a pass; `false` means stop the pass now
    /// (shutdown, or leadership lost).
    fn keep_going(&mut self) -> bool;
}
