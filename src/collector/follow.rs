//! How the collector follows one scope (a kind, in one namespace or all): a
//! pure state machine stepped by what happened to the scope's list and
//! watch. The collector does the requests and keeps the open watch; this
//! says where the scope stands and what comes next.

use std::time::Duration;

/// A watch that ends younger than this is not reopened at once but at the
/// next pass, so a server that ends every watch at once is not hammered.
pub const RESUME_AFTER: Duration = Duration::from_secs(1);

/// Forbidden watches in a row after which a scope is listed at every pass
/// instead: an API server that has just started denies everything until
/// its RBAC caches are filled, which must not turn a scope to lists for good.
pub const FORBIDDEN_TRIES: u8 = 3;

/// Watches failed in a row (a 5xx, a cut connection: anything but 403 and
/// 410) after which a scope is listed again at the next pass, in case a
/// proxy cuts every watch before it delivers: resuming alone would never
/// learn what changed meanwhile.
pub const FAILED_TRIES: u8 = 3;

/// Where a scope stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Standing {
    /// To be listed: never listed, or listed again after a 410 or a doubt.
    #[default]
    Unlisted,
    /// Known up to this resourceVersion, no watch open: watched from there.
    Listed(String),
    /// Followed by an open watch, which has delivered up to this
    /// resourceVersion.
    Watching(String),
    /// Watching is forbidden here (RBAC): listed at every pass instead.
    Polled,
}

/// A scope's standing and what it remembers of its watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Follow {
    /// Where it stands.
    pub standing: Standing,
    /// Brought up (listed if needed, watched) in this turn of the loop
    /// rather than at the next pass.
    pub resume: bool,
    /// Watches forbidden in a row, until one delivers something.
    forbidden: u8,
    /// Watches failed otherwise in a row, until one delivers something.
    failed: u8,
    /// Whether the relist after [`FAILED_TRIES`] failures was said, until
    /// a watch delivers something.
    said_failing: bool,
}

/// What happened to a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Happened<'a> {
    /// A full list succeeded at this resourceVersion.
    Listed(&'a str),
    /// Its watch was opened.
    Opened,
    /// Its watch delivered an event at this resourceVersion (empty: none
    /// given).
    Delivered(&'a str),
    /// Its watch ended, as the server does after its timeout, this long
    /// after it opened.
    Ended(Duration),
    /// Its watch stayed open long past its timeout: a dead connection.
    Outlived,
    /// Its watch answered 410: the version is too old.
    Gone,
    /// Its watch was forbidden (403).
    Forbidden,
    /// Its watch failed otherwise, this long after it opened.
    Failed(Duration),
    /// Following stopped (leadership lost): the index will be stale.
    Stopped,
}

/// What a step is worth saying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Say {
    /// Nothing (or nothing above debug).
    Nothing,
    /// 410: it is listed again at once.
    Gone,
    /// Forbidden, but not yet for good: listed and watched at the next pass.
    ForbiddenOnce,
    /// Forbidden again and again: listed at every pass from now on.
    Polled,
    /// Failed: resumed from the last version.
    Resuming,
    /// Failed [`FAILED_TRIES`] times in a row: listed at the next pass;
    /// `first` of this streak (a warning) or not (debug).
    Relisting { first: bool },
}

impl Follow {
    /// The resourceVersion a watch would start from, when it may be opened.
    pub fn since(&self) -> Option<&str> {
        match &self.standing {
            Standing::Listed(rv) | Standing::Watching(rv) => Some(rv),
            Standing::Unlisted | Standing::Polled => None,
        }
    }

    /// The scope after `happened`, and what is worth saying about it.
    pub fn step(&self, happened: Happened) -> (Follow, Say) {
        let mut next = self.clone();
        let rv = self.since().unwrap_or_default().to_string();
        let say = match happened {
            Happened::Listed(listed) => {
                if self.standing != Standing::Polled {
                    next.standing = Standing::Listed(listed.to_string());
                }
                Say::Nothing
            }
            Happened::Opened => {
                next.standing = Standing::Watching(rv);
                Say::Nothing
            }
            Happened::Delivered(at) => {
                next.delivered();
                if !at.is_empty() {
                    next.standing = Standing::Watching(at.to_string());
                }
                Say::Nothing
            }
            Happened::Ended(age) => {
                next.delivered();
                next.ended(Standing::Listed(rv), age >= RESUME_AFTER);
                Say::Nothing
            }
            Happened::Outlived => {
                next.ended(Standing::Listed(rv), true);
                Say::Nothing
            }
            Happened::Gone => {
                next.ended(Standing::Unlisted, true);
                Say::Gone
            }
            Happened::Forbidden => next.forbidden(),
            Happened::Failed(age) => next.failed(rv, age),
            Happened::Stopped => {
                if self.standing != Standing::Polled {
                    next.standing = Standing::Unlisted;
                }
                next.resume = false;
                Say::Nothing
            }
        };
        (next, say)
    }

    /// A watch delivered: the counts of failures in a row start again.
    fn delivered(&mut self) {
        (self.forbidden, self.failed, self.said_failing) = (0, 0, false);
    }

    /// The watch is over: `standing` next, brought up again in this turn
    /// when `resume`.
    fn ended(&mut self, standing: Standing, resume: bool) {
        self.standing = standing;
        self.resume = resume;
    }

    fn forbidden(&mut self) -> Say {
        self.forbidden = self.forbidden.saturating_add(1);
        if self.forbidden >= FORBIDDEN_TRIES {
            self.ended(Standing::Polled, false);
            return Say::Polled;
        }
        self.ended(Standing::Unlisted, false);
        Say::ForbiddenOnce
    }

    fn failed(&mut self, rv: String, age: Duration) -> Say {
        self.failed = self.failed.saturating_add(1);
        if self.failed < FAILED_TRIES {
            self.ended(Standing::Listed(rv), age >= RESUME_AFTER);
            return Say::Resuming;
        }
        self.failed = 0;
        self.ended(Standing::Unlisted, false);
        let first = !std::mem::replace(&mut self.said_failing, true);
        Say::Relisting { first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Happened::*;

    const OLD: Duration = Duration::from_secs(300);
    const YOUNG: Duration = Duration::from_millis(200);

    fn listed(rv: &str) -> Standing {
        Standing::Listed(rv.into())
    }

    fn watching(rv: &str) -> Standing {
        Standing::Watching(rv.into())
    }

    /// A standing, its `resume` flag and what the step said.
    type After = (Standing, bool, Say);

    /// What comes after each of `steps` from a fresh scope.
    fn walk(steps: &[Happened]) -> Vec<After> {
        let mut follow = Follow::default();
        steps
            .iter()
            .map(|happened| {
                let (next, say) = follow.step(*happened);
                follow = next;
                (follow.standing.clone(), follow.resume, say)
            })
            .collect()
    }

    #[test]
    fn a_scope_is_listed_watched_and_resumed() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<Happened>, Vec<After>)> = vec![
            ("listed, watched, events, ended after its timeout: resumed at once from the last event",
             vec![Listed("5"), Opened, Delivered("7"), Delivered(""), Ended(OLD)],
             vec![(listed("5"), false, Say::Nothing), (watching("5"), false, Say::Nothing),
                  (watching("7"), false, Say::Nothing), (watching("7"), false, Say::Nothing),
                  (listed("7"), true, Say::Nothing)]),
            ("ended young: at the next pass",
             vec![Listed("5"), Opened, Ended(YOUNG)],
             vec![(listed("5"), false, Say::Nothing), (watching("5"), false, Say::Nothing),
                  (listed("5"), false, Say::Nothing)]),
            ("outlived its timeout: opened again at once",
             vec![Listed("5"), Opened, Outlived],
             vec![(listed("5"), false, Say::Nothing), (watching("5"), false, Say::Nothing),
                  (listed("5"), true, Say::Nothing)]),
            ("410: listed again at once",
             vec![Listed("5"), Opened, Gone],
             vec![(listed("5"), false, Say::Nothing), (watching("5"), false, Say::Nothing),
                  (Standing::Unlisted, true, Say::Gone)]),
            ("stopped: listed again when it leads again",
             vec![Listed("5"), Opened, Stopped],
             vec![(listed("5"), false, Say::Nothing), (watching("5"), false, Say::Nothing),
                  (Standing::Unlisted, false, Say::Nothing)]),
        ];
        for (name, steps, want) in cases {
            assert_eq!(walk(&steps), want, "{name}");
        }
    }

    #[test]
    fn forbidden_again_and_again_turns_to_lists() {
        let once = [Listed("5"), Opened, Forbidden];
        let steps: Vec<Happened> = once.iter().cycle().take(9).copied().collect();
        let says: Vec<Say> = walk(&steps).into_iter().map(|(_, _, say)| say).collect();
        let forbidden: Vec<&Say> = says.iter().skip(2).step_by(3).collect();
        assert_eq!(
            forbidden,
            [&Say::ForbiddenOnce, &Say::ForbiddenOnce, &Say::Polled]
        );
        let (last, ..) = walk(&steps).pop().unwrap();
        assert_eq!(last, Standing::Polled);
        // Polled stays polled: a list does not make it watchable.
        let (polled, _) = Follow::default()
            .step(Forbidden)
            .0
            .step(Forbidden)
            .0
            .step(Forbidden);
        assert_eq!(polled.step(Listed("9")).0.standing, Standing::Polled);
        assert_eq!(polled.step(Stopped).0.standing, Standing::Polled);
        assert_eq!(polled.since(), None);
        // One that delivers in between starts the count again.
        let mut steps = vec![
            Listed("5"),
            Opened,
            Forbidden,
            Listed("5"),
            Opened,
            Forbidden,
        ];
        steps.extend([Listed("5"), Opened, Delivered("6"), Forbidden]);
        let (last, _, say) = walk(&steps).pop().unwrap();
        assert_eq!((last, say), (Standing::Unlisted, Say::ForbiddenOnce));
    }

    #[test]
    fn failing_again_and_again_lists_again_and_says_so_once_per_streak() {
        let mut steps = vec![Listed("5")];
        for _ in 0..6 {
            steps.extend([Opened, Failed(OLD)]);
            if steps.len() == 7 {
                steps.push(Listed("8"));
            }
        }
        let says: Vec<After> = walk(&steps)
            .into_iter()
            .filter(|(_, _, say)| *say != Say::Nothing)
            .collect();
        assert_eq!(
            says,
            [
                (listed("5"), true, Say::Resuming),
                (listed("5"), true, Say::Resuming),
                (Standing::Unlisted, false, Say::Relisting { first: true }),
                (listed("8"), true, Say::Resuming),
                (listed("8"), true, Say::Resuming),
                (Standing::Unlisted, false, Say::Relisting { first: false }),
            ]
        );
        let young = walk(&[Listed("5"), Opened, Failed(YOUNG)]).pop().unwrap();
        assert_eq!(young, (listed("5"), false, Say::Resuming));
    }
}
