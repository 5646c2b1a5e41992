//! Leader election with a coordination.k8s.io/v1 Lease: only the holder acts.
//! Expiry is judged by the local clock from when a holder's record was last
//! seen to change, so clock skew between nodes does not matter.
//!
//! What to do after each look at the Lease is decided by pure functions
//! ([`decide`], [`after_write`], [`leads`]); [`Elector`] only sends the
//! requests and logs.

use crate::error::Error;
use crate::kube::{Kube, Lease, LeaseMeta};
use std::mem::Discriminant;
use std::time::{Duration, Instant, SystemTime};

/// How long, in seconds, a holder is trusted after its last renewal.
const LEASE_SECONDS: u32 = 15;
/// How long a holder is trusted after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(LEASE_SECONDS as u64);
/// Time limit of each Lease request. A tick may read and then write the
/// Lease; both together stay within one API request's limit
/// ([`crate::kube::REQUEST_TIMEOUT`]), which bounds a health answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// How often the holder renews and a standby looks.
const RETRY: Duration = Duration::from_secs(2);
/// A holder that could not renew for this long stops acting, well before
/// a standby may take over.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// The longest another holder's own `leaseDurationSeconds` is respected, so
/// a stale record with an absurd duration blocks the election only this long.
const MAX_TRUSTED: Duration = Duration::from_secs(3600);

/// What the GET of the Lease returned.
#[derive(Debug)]
enum Observed {
    /// The Lease does not exist.
    Absent,
    /// The Lease as read.
    Present(Box<Lease>),
    /// The GET gave no usable answer.
    Failed,
}

/// Another holder's record (holder, renewTime) and when the local clock
/// first saw it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sighting {
    holder: String,
    renew_time: String,
    since: Instant,
}

/// This candidate's own state between two looks at the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    identity: String,
    leader: bool,
    /// When the last write naming us succeeded (the look's start).
    last_renewal: Option<Instant>,
    /// The other holder's record, while another holds the Lease.
    other: Option<Sighting>,
}

/// What to do after one look at the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// No Lease exists: create one naming us.
    Create,
    /// The Lease names us: renew it.
    Renew,
    /// The Lease is free or its holder expired: take it, with this
    /// `leaseTransitions`.
    TakeOver { transitions: u32 },
    /// Another holder's record is fresh: respect it, remembering it.
    Wait(Sighting),
    /// Another holder is on the Lease while we lead: stop acting now.
    StepDown(Sighting),
    /// The GET failed: write nothing; a leader lapses at [`RENEW_DEADLINE`].
    Retry,
}

/// How a write of the Lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Ok,
    /// 409: someone else wrote first.
    Conflict,
    /// Any other failure; the outcome is unknown.
    Failed,
}

/// What to do given what the GET returned, our state and the local clock.
fn decide(observed: &Observed, me: &Candidate, now: Instant) -> Action {
    let lease = match observed {
        Observed::Absent => return Action::Create,
        Observed::Failed => return Action::Retry,
        Observed::Present(lease) => lease,
    };
    let holder = lease.spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me.identity {
        return Action::Renew;
    }
    // The Lease is outside data: its counter may be anything.
    let transitions = lease.spec.lease_transitions.unwrap_or(0).saturating_add(1);
    if holder.is_empty() {
        return Action::TakeOver { transitions };
    }
    let seen = sighting(lease, me.other.as_ref(), now);
    if me.leader {
        return Action::StepDown(seen);
    }
    let unchanged = now.saturating_duration_since(seen.since);
    if unchanged > trusted_for(lease.spec.lease_duration_seconds) {
        return Action::TakeOver { transitions };
    }
    Action::Wait(seen)
}

/// The holder's record in `lease`, seen since `before.since` when it is the
/// record seen before, else since `now`.
fn sighting(lease: &Lease, before: Option<&Sighting>, now: Instant) -> Sighting {
    let holder = lease.spec.holder_identity.clone().unwrap_or_default();
    let renew_time = lease.spec.renew_time.clone().unwrap_or_default();
    let since = match before {
        Some(b) if b.holder == holder && b.renew_time == renew_time => b.since,
        _ => now,
    };
    Sighting {
        holder,
        renew_time,
        since,
    }
}

/// How long a holder's unchanged record is respected: its own
/// `leaseDurationSeconds`, ours when absent or 0 (invalid), at most
/// [`MAX_TRUSTED`].
fn trusted_for(seconds: Option<u32>) -> Duration {
    match seconds {
        None | Some(0) => LEASE_DURATION,
        Some(s) => Duration::from_secs(s.into()).min(MAX_TRUSTED),
    }
}

/// Our state after a write of the Lease started at `now`. A 409 means the
/// write did not make us leader (nor keep us leader): look again next time.
/// Another failure changes nothing, so a leader lapses at the deadline.
fn after_write(me: &Candidate, written: Written, now: Instant) -> Candidate {
    let mut next = me.clone();
    match written {
        Written::Ok => {
            next.leader = true;
            next.last_renewal = Some(now);
            next.other = None;
        }
        Written::Conflict => {
            next.leader = false;
            next.other = None;
        }
        Written::Failed => {}
    }
    next
}

/// Whether `me` may act at `now`: it leads and renewed within
/// [`RENEW_DEADLINE`].
fn leads(me: &Candidate, now: Instant) -> bool {
    me.leader
        && me
            .last_renewal
            .is_some_and(|at| now.saturating_duration_since(at) <= RENEW_DEADLINE)
}

/// The Lease to write for a create, renew or take-over, built on `base`
/// (the Lease read, or an empty one to create), stamped with `wall`.
fn claim(base: Lease, identity: &str, action: &Action, wall: &str) -> Lease {
    let mut lease = base;
    lease.api_version = "coordination.k8s.io/v1".into();
    lease.kind = "Lease".into();
    lease.spec.holder_identity = Some(identity.into());
    lease.spec.lease_duration_seconds = Some(LEASE_SECONDS);
    lease.spec.renew_time = Some(wall.into());
    if let Action::TakeOver { transitions } = action {
        lease.spec.lease_transitions = Some(*transitions);
        lease.spec.acquire_time = None;
    }
    lease.spec.acquire_time.get_or_insert_with(|| wall.into());
    lease
}

/// The Lease given up by `identity`, so a standby takes it at once; `None`
/// when `identity` does not hold it.
fn released(lease: Lease, identity: &str, wall: &str) -> Option<Lease> {
    if lease.spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let mut lease = lease;
    lease.spec.holder_identity = None;
    lease.spec.lease_duration_seconds = Some(1);
    lease.spec.renew_time = Some(wall.into());
    Some(lease)
}

/// Whether a request got an answer from the API server: a success, 404 or
/// 409 does; no answer, a 5xx, or refused credentials (401/403) do not, nor
/// an answer that could not be read.
fn reached<T>(result: &Result<T, Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => matches!(e.status(), Some(code) if code < 500 && code != 401 && code != 403),
    }
}

/// A kind of failure, so a failure repeated every [`RETRY`] is logged once.
type Fault = (Discriminant<Error>, Option<u16>);

/// One candidate's view of the Lease.
pub struct Elector {
    kube: Kube,
    namespace: String,
    name: String,
    me: Candidate,
    next_check: Option<Instant>,
    reaches: bool,
    /// The kind of the last look's failure, while looks fail.
    fault: Option<Fault>,
}

impl Elector {
    /// A candidate named `identity` for Lease `namespace/name`, using its own
    /// API client so it can renew while a pass holds the main one.
    pub fn new(kube: Kube, namespace: String, name: String, identity: String) -> Elector {
        Elector {
            kube,
            namespace,
            name,
            me: Candidate {
                identity,
                leader: false,
                last_renewal: None,
                other: None,
            },
            next_check: None,
            reaches: false,
            fault: None,
        }
    }

    /// Whether this candidate leads now. Sends a request only when one is
    /// due (every 2 s), so it can be called between any two requests of a
    /// pass.
    pub fn tick(&mut self) -> bool {
        let now = Instant::now();
        if self.next_check.is_none_or(|at| now >= at) {
            self.next_check = Some(now + RETRY);
            let result = self.look(now);
            self.note(result);
        }
        if self.me.leader && !leads(&self.me, now) {
            self.me.leader = false;
            self.stopped("could not renew it in time");
        }
        self.me.leader
    }

    /// Whether the last Lease request got an answer from the API server
    /// (a 2xx, 404 or 409; not a transport error, 5xx, 401 or 403). This is
    /// what a standby's `/readyz` uses: a standby that can reach the API
    /// server is Ready, so it does not block a rolling update.
    pub fn reaches_api(&self) -> bool {
        self.reaches
    }

    /// One GET, a write when one is due, and our state after them. A 409
    /// is no failure: someone else was quicker.
    fn look(&mut self, now: Instant) -> Result<(), Error> {
        let read = self.kube.get_lease(&self.namespace, &self.name);
        self.reaches = reached(&read);
        let (observed, outcome) = match read {
            Ok(None) => (Observed::Absent, Ok(())),
            Ok(Some(lease)) => (Observed::Present(Box::new(lease)), Ok(())),
            Err(e) => (Observed::Failed, Err(e)),
        };
        match decide(&observed, &self.me, now) {
            Action::Retry => {}
            Action::Wait(seen) => self.me.other = Some(seen),
            Action::StepDown(seen) => {
                self.me.leader = false;
                self.stopped(&format!("it is now held by {}", seen.holder));
                self.me.other = Some(seen);
            }
            action => return self.write(observed, &action, now),
        }
        outcome
    }

    /// Writes the Lease for `action` and takes in the outcome.
    fn write(&mut self, observed: Observed, action: &Action, now: Instant) -> Result<(), Error> {
        let base = match observed {
            Observed::Present(lease) => *lease,
            Observed::Absent | Observed::Failed => self.empty_lease(),
        };
        let wall = crate::policy::time::rfc3339(SystemTime::now(), 6);
        let result = self
            .kube
            .write_lease(&claim(base, &self.me.identity, action, &wall));
        self.reaches = reached(&result);
        let (written, outcome) = match result {
            Ok(_) => (Written::Ok, Ok(())),
            Err(Error::Conflict) => (Written::Conflict, Ok(())),
            Err(e) => (Written::Failed, Err(e)),
        };
        let was_leader = self.me.leader;
        self.me = after_write(&self.me, written, now);
        match (was_leader, self.me.leader) {
            (false, true) => log::info!(
                "became the leader (Lease {}/{}, identity {})",
                self.namespace,
                self.name,
                self.me.identity
            ),
            (true, false) => self.stopped("another candidate wrote it first"),
            _ => {}
        }
        outcome
    }

    /// The Lease to create: only its name and namespace.
    fn empty_lease(&self) -> Lease {
        Lease {
            metadata: LeaseMeta {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                resource_version: String::new(),
            },
            ..Lease::default()
        }
    }

    /// Logs a look's failure when its kind differs from the last one, and
    /// the recovery once.
    fn note(&mut self, result: Result<(), Error>) {
        match result {
            Ok(()) if self.fault.take().is_some() => log::info!(
                "leader election: Lease {}/{} requests succeed again",
                self.namespace,
                self.name
            ),
            Ok(()) => {}
            Err(e) => {
                let fault = (std::mem::discriminant(&e), e.status());
                if self.fault.replace(fault) != Some(fault) {
                    log::warn!(
                        "leader election: Lease {}/{}: {e}",
                        self.namespace,
                        self.name
                    );
                }
            }
        }
    }

    /// Logs the end of leadership, once per change.
    fn stopped(&self, why: &str) {
        log::warn!(
            "stopped leading (Lease {}/{}): {why}; stopping work",
            self.namespace,
            self.name
        );
    }

    /// The API requests sent since the last call, by verb and status.
    pub fn take_requests(&mut self) -> crate::policy::metrics::Counts {
        self.kube.take_requests()
    }

    /// Gives the Lease up so a standby takes over at once (on shutdown).
    /// Sends requests only when this candidate held the Lease at some time,
    /// and writes only when the Lease still names it.
    pub fn release(&mut self) {
        self.me.leader = false;
        if self.me.last_renewal.is_none() {
            return;
        }
        let wall = crate::policy::time::rfc3339(SystemTime::now(), 6);
        let identity = &self.me.identity;
        let result = self
            .kube
            .get_lease(&self.namespace, &self.name)
            .and_then(
                |read| match read.and_then(|l| released(l, identity, &wall)) {
                    Some(lease) => self.kube.write_lease(&lease).map(|_| true),
                    None => Ok(false),
                },
            );
        match result {
            Ok(true) => log::info!("released Lease {}/{}", self.namespace, self.name),
            Ok(false) => {}
            Err(e) => log::warn!(
                "releasing Lease {}/{} failed: {e}",
                self.namespace,
                self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::LeaseSpec;

    fn lease(holder: &str, renew: &str, duration: Option<u32>, transitions: Option<u32>) -> Lease {
        Lease {
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
            metadata: LeaseMeta {
                name: "l".into(),
                namespace: "ns".into(),
                resource_version: "7".into(),
            },
            spec: LeaseSpec {
                holder_identity: (!holder.is_empty()).then(|| holder.into()),
                lease_duration_seconds: duration,
                renew_time: Some(renew.into()),
                acquire_time: Some("a".into()),
                lease_transitions: transitions,
            },
        }
    }

    fn present(lease: Lease) -> Observed {
        Observed::Present(Box::new(lease))
    }

    fn held(holder: &str, renew: &str, duration: Option<u32>) -> Observed {
        present(lease(holder, renew, duration, Some(3)))
    }

    fn candidate(
        leader: bool,
        last_renewal: Option<Instant>,
        other: Option<Sighting>,
    ) -> Candidate {
        Candidate {
            identity: "me".into(),
            leader,
            last_renewal,
            other,
        }
    }

    fn seen(holder: &str, renew: &str, since: Instant) -> Sighting {
        Sighting {
            holder: holder.into(),
            renew_time: renew.into(),
            since,
        }
    }

    #[test]
    fn decide_table() {
        let t0 = Instant::now();
        let t = |s: u64| t0 + Duration::from_secs(s);
        let standby = candidate(false, None, None);
        let leader = candidate(true, Some(t0), None);
        // A standby that has watched holder b's record r1 since t0.
        let watching = candidate(false, None, Some(seen("b", "r1", t0)));
        let take = |transitions| Action::TakeOver { transitions };
        let max = Some(u32::MAX);
        #[rustfmt::skip]
        let rows: Vec<(&str, &Candidate, Observed, u64, Action)> = vec![
            ("no Lease: create", &standby, Observed::Absent, 0, Action::Create),
            ("released (holder empty): take at once", &standby,
             present(lease("", "r1", Some(1), Some(3))), 0, take(4)),
            ("released, no counter yet", &standby,
             present(lease("", "r1", Some(1), None)), 0, take(1)),
            ("released with u32::MAX transitions: saturates", &standby,
             present(lease("", "r1", Some(1), max)), 0, take(u32::MAX)),
            ("our own: renew", &leader, held("me", "r1", Some(15)), 2, Action::Renew),
            ("our own after a restart: renew", &standby, held("me", "r1", Some(15)), 0, Action::Renew),
            ("another holder first seen: wait from now", &standby,
             held("b", "r1", Some(15)), 5, Action::Wait(seen("b", "r1", t(5)))),
            ("unchanged for the full duration: still wait", &watching,
             held("b", "r1", Some(15)), 15, Action::Wait(seen("b", "r1", t0))),
            ("unchanged for longer: take over", &watching, held("b", "r1", Some(15)), 16, take(4)),
            ("expired with u32::MAX transitions: saturates", &watching,
             present(lease("b", "r1", Some(15), max)), 16, take(u32::MAX)),
            ("renewed since: wait from the new record", &watching,
             held("b", "r2", Some(15)), 30, Action::Wait(seen("b", "r2", t(30)))),
            ("a new holder with the same renewTime: wait from now", &watching,
             held("c", "r1", Some(15)), 30, Action::Wait(seen("c", "r1", t(30)))),
            ("a short duration of its own: take over after it", &watching,
             held("b", "r1", Some(5)), 6, take(4)),
            ("duration absent: ours, 15 s", &watching, held("b", "r1", None), 15,
             Action::Wait(seen("b", "r1", t0))),
            ("duration absent: expired after 15 s", &watching, held("b", "r1", None), 16, take(4)),
            ("duration 0: ours, 15 s", &watching, held("b", "r1", Some(0)), 5,
             Action::Wait(seen("b", "r1", t0))),
            ("duration 0: expired after 15 s", &watching, held("b", "r1", Some(0)), 16, take(4)),
            ("duration u32::MAX: respected for now", &watching, held("b", "r1", max), 600,
             Action::Wait(seen("b", "r1", t0))),
            ("duration u32::MAX: at most an hour", &watching, held("b", "r1", max), 3601, take(4)),
            ("another holder on our Lease: step down", &leader,
             held("b", "r9", Some(15)), 2, Action::StepDown(seen("b", "r9", t(2)))),
            ("Lease deleted under us: create again", &leader, Observed::Absent, 2, Action::Create),
            ("GET failed while leading: retry", &leader, Observed::Failed, 2, Action::Retry),
            ("GET failed while standing by: retry", &watching, Observed::Failed, 60, Action::Retry),
        ];
        for (name, me, observed, at, want) in rows {
            assert_eq!(decide(&observed, me, t(at)), want, "{name}");
        }
    }

    #[test]
    fn writes_make_or_unmake_the_leader() {
        let t0 = Instant::now();
        let t2 = t0 + RETRY;
        let leader = candidate(true, Some(t0), None);
        let watching = candidate(false, None, Some(seen("b", "r1", t0)));
        let rows = [
            (
                "won: leads from the look",
                &watching,
                Written::Ok,
                candidate(true, Some(t2), None),
            ),
            (
                "renewed",
                &leader,
                Written::Ok,
                candidate(true, Some(t2), None),
            ),
            (
                "409 on a take-over: not leader",
                &watching,
                Written::Conflict,
                candidate(false, None, None),
            ),
            (
                "409 on a renewal: not leader, look again",
                &leader,
                Written::Conflict,
                candidate(false, Some(t0), None),
            ),
            (
                "failed renewal: unchanged, lapses later",
                &leader,
                Written::Failed,
                leader.clone(),
            ),
            (
                "failed take-over: unchanged",
                &watching,
                Written::Failed,
                watching.clone(),
            ),
        ];
        for (name, me, written, want) in rows {
            assert_eq!(after_write(me, written, t2), want, "{name}");
        }
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_before_a_standby_may_take_over() {
        let t0 = Instant::now();
        let t = |s: u64| t0 + Duration::from_secs(s);
        let leader = candidate(true, Some(t0), None);
        assert!(leads(&leader, t(0)));
        assert!(leads(&leader, t(10)));
        assert!(!leads(&leader, t(11)));
        assert!(!leads(&candidate(false, Some(t0), None), t(0)));
        assert!(!leads(&candidate(true, None, None), t(0)));
        // Checked every tick, a leader stops at most one retry after the
        // deadline; a standby waits a full lease duration.
        assert!(RENEW_DEADLINE + RETRY < LEASE_DURATION);
    }

    #[test]
    fn claims_name_us_and_count_transitions_only_on_take_over() {
        let read = lease("b", "r1", Some(1), Some(3));
        let taken = claim(
            read.clone(),
            "me",
            &Action::TakeOver { transitions: 4 },
            "w",
        );
        assert_eq!(taken.metadata, read.metadata);
        assert_eq!(
            taken.spec,
            LeaseSpec {
                holder_identity: Some("me".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some("w".into()),
                acquire_time: Some("w".into()),
                lease_transitions: Some(4),
            }
        );
        let renewed = claim(
            lease("me", "r1", Some(15), Some(3)),
            "me",
            &Action::Renew,
            "w",
        );
        assert_eq!(renewed.spec.acquire_time.as_deref(), Some("a"));
        assert_eq!(renewed.spec.lease_transitions, Some(3));
        assert_eq!(renewed.spec.renew_time.as_deref(), Some("w"));
        let created = claim(Lease::default(), "me", &Action::Create, "w");
        assert_eq!(created.kind, "Lease");
        assert_eq!(created.spec.acquire_time.as_deref(), Some("w"));
        assert!(created.metadata.resource_version.is_empty());
    }

    #[test]
    fn only_our_own_lease_is_released() {
        let ours = released(lease("me", "r1", Some(15), Some(3)), "me", "w").unwrap();
        assert_eq!(ours.spec.holder_identity, None);
        assert_eq!(ours.spec.lease_duration_seconds, Some(1));
        assert_eq!(ours.spec.renew_time.as_deref(), Some("w"));
        assert_eq!(ours.metadata.resource_version, "7");
        assert_eq!(released(lease("b", "r1", Some(15), None), "me", "w"), None);
        assert_eq!(released(lease("", "r1", Some(1), None), "me", "w"), None);
    }

    #[test]
    fn reaching_the_api_server_means_an_answer_from_it() {
        let status = |code| Error::Status {
            code,
            message: String::new(),
        };
        let rows: [(Result<(), Error>, bool); 10] = [
            (Ok(()), true),
            (Err(Error::NotFound), true),
            (Err(Error::Conflict), true),
            (Err(status(422)), true),
            (Err(status(500)), false),
            (Err(status(503)), false),
            (Err(Error::Denied(401)), false),
            (Err(Error::Denied(403)), false),
            (Err(Error::Transport("refused".into())), false),
            (Err(Error::Decode("eof".into())), false),
        ];
        for (result, want) in rows {
            assert_eq!(reached(&result), want, "{result:?}");
        }
    }

    #[test]
    fn a_tick_fits_in_one_api_request() {
        // Read and write of one tick, then the health checks are served.
        assert!(REQUEST_TIMEOUT * 2 <= crate::kube::REQUEST_TIMEOUT);
        // A renewal that timed out still leaves time to try again in time.
        assert!(REQUEST_TIMEOUT + RETRY < RENEW_DEADLINE);
    }
}
