//! Reload windows ([`crate::policy::window`]): a workload whose window — its
//! own `<prefix>/reload-window`, else `--reload-window` — is closed when a
//! secret change would roll it out waits, pending like a paused one
//! (nothing is written to it, so a restart or a failover keeps it), with
//! one info line and one Normal Event `RolloutWaitsForWindow` saying when
//! the window opens; it is rolled out at the first pass after that.
//! Renewals of dynamic secrets wait too, until their deadline would pass
//! ([`Reloader::renewal_goes`]).

use super::waves::Wait;
use super::Reloader;
use crate::kube::Kube;
use crate::policy::window::Window;
use crate::policy::workload::Entry;
use std::time::{Duration, UNIX_EPOCH};

impl Reloader {
    /// The same reloader holding the secret changes of every workload
    /// without a window of its own to `window` (`--reload-window`; `None`:
    /// they roll out at any time).
    pub fn with_reload_window(mut self, window: Option<Window>) -> Reloader {
        self.window = window;
        self
    }

    /// The window `entry`'s rollouts wait for: its own, else the default.
    pub(super) fn window<'a>(&'a self, entry: &'a Entry) -> Option<&'a Window> {
        entry.window.as_deref().or(self.window.as_ref())
    }

    /// One info line and one Normal Event for a workload whose change waits
    /// for its window, which opens at `opens` (Unix seconds): once per
    /// opening, until it is rolled out.
    pub(super) fn report_window(&mut self, kube: &mut Kube, entry: &Entry, opens: Option<i64>) {
        if !self.said_window.news(entry.id.clone(), opens) {
            return;
        }
        let whose = match entry.window {
            Some(_) => "its reload-window annotation",
            None => "--reload-window",
        };
        let when = match opens {
            Some(at) => {
                let at = UNIX_EPOCH + Duration::from_secs(at.max(0).unsigned_abs());
                format!("opens at {}", crate::policy::time::rfc3339(at, 0))
            }
            None => "does not open in the next two weeks".to_string(),
        };
        let message = format!(
            "a secret it uses has a new version; its rollout waits for its reload window \
             ({whose}), which {when}"
        );
        let event = (false, "RolloutWaitsForWindow", message.as_str());
        super::notices::tell(kube, entry, event);
    }
}

/// What `window` makes a change wait for at `now` (Unix seconds): `None`
/// when it is open.
pub(super) fn closed(window: &Window, now: u64) -> Option<Wait> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let opens = window.opens_at(now);
    (opens != Some(now)).then_some(Wait::Window(opens))
}
