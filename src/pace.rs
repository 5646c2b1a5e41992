//! What a long pass owes the loop between two requests.

/// The loop's own work that must go on while a pass makes requests:
/// answering health checks, renewing the lease, noticing signals. A pass
/// calls one of these before every request it sends, so a health answer
/// never waits longer than one request's timeout.
pub trait Duties {
    /// Answers the health checks waiting now.
    fn serve(&mut self);

    /// Does all the loop's duties; `false` means stop the pass now
    /// (shutdown, or leadership lost).
    fn keep_going(&mut self) -> bool;
}

/// No loop to serve: for a pass or a lookup run on its own (tests, tools).
pub struct Unattended;

impl Duties for Unattended {
    fn serve(&mut self) {}

    fn keep_going(&mut self) -> bool {
        true
    }
}
