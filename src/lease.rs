//! Leader election with a coordination.k8s.io/v1 Lease: only the holder acts.
//! Expiry is judged by the local clock from when a holder's record was last
//! seen to change, so clock skew between nodes does not matter.

use crate::error::Error;
use crate::kube::{Kube, Lease, LeaseMeta, LeaseSpec};
use std::time::{Duration, Instant, SystemTime};

/// How long a holder is trusted after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and a standby looks.
const RETRY: Duration = Duration::from_secs(2);
/// A holder that could not renew for this long stops acting, well before
/// a standby may take over.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// One candidate's view of the Lease.
pub struct Elector {
    kube: Kube,
    namespace: String,
    name: String,
    identity: String,
    leader: bool,
    last_renewal: Option<Instant>,
    /// The other holder's record (holder, renewTime) and when it was first seen.
    observed: Option<((String, String), Instant)>,
    next_check: Option<Instant>,
}

impl Elector {
    /// A candidate named `identity` for Lease `namespace/name`, using its own
    /// API client so it can renew while a pass holds the main one.
    pub fn new(kube: Kube, namespace: String, name: String, identity: String) -> Elector {
        Elector {
            kube,
            namespace,
            name,
            identity,
            leader: false,
            last_renewal: None,
            observed: None,
            next_check: None,
        }
    }

    /// Whether this candidate leads now. Sends a request only when one is
    /// due, so it can be called between any two requests of a pass.
    pub fn tick(&mut self) -> bool {
        let now = Instant::now();
        if self.next_check.is_none_or(|at| now >= at) {
            self.next_check = Some(now + RETRY);
            if let Err(e) = self.try_acquire_or_renew(now) {
                log::warn!(
                    "leader election: Lease {}/{}: {e}",
                    self.namespace,
                    self.name
                );
            }
        }
        if self.leader
            && self
                .last_renewal
                .is_none_or(|at| at.elapsed() > RENEW_DEADLINE)
        {
            self.leader = false;
            log::warn!(
                "could not renew Lease {}/{} in time: stopping work",
                self.namespace,
                self.name
            );
        }
        self.leader
    }

    fn record(&self, spec: LeaseSpec, resource_version: String) -> Lease {
        let now = crate::time::rfc3339(SystemTime::now(), 6);
        Lease {
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
            metadata: LeaseMeta {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                resource_version,
            },
            spec: LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as u32),
                renew_time: Some(now.clone()),
                acquire_time: spec.acquire_time.or(Some(now)),
                lease_transitions: spec.lease_transitions,
            },
        }
    }

    fn try_acquire_or_renew(&mut self, now: Instant) -> Result<(), Error> {
        let current = self.kube.get_lease(&self.namespace, &self.name)?;
        let Some(lease) = current else {
            let fresh = self.record(LeaseSpec::default(), String::new());
            return self.write(fresh, now);
        };
        let holder = lease.spec.holder_identity.clone().unwrap_or_default();
        if holder == self.identity {
            let renewed = self.record(lease.spec, lease.metadata.resource_version);
            return self.write(renewed, now);
        }
        if self.leader {
            self.leader = false;
            log::warn!(
                "Lease {}/{} is now held by {holder}: stopping work",
                self.namespace,
                self.name
            );
        }
        let record = (
            holder.clone(),
            lease.spec.renew_time.clone().unwrap_or_default(),
        );
        match &self.observed {
            Some((seen, _)) if *seen == record => {}
            _ => self.observed = Some((record, now)),
        }
        let duration = Duration::from_secs(lease.spec.lease_duration_seconds.unwrap_or(15).into());
        let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        if holder.is_empty() || now.duration_since(seen_at) > duration {
            let mut spec = lease.spec;
            spec.acquire_time = None;
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            let taken = self.record(spec, lease.metadata.resource_version);
            return self.write(taken, now);
        }
        Ok(())
    }

    fn write(&mut self, lease: Lease, now: Instant) -> Result<(), Error> {
        match self.kube.write_lease(&lease) {
            Ok(_) => {
                if !self.leader {
                    log::info!(
                        "became the leader (Lease {}/{}, identity {})",
                        self.namespace,
                        self.name,
                        self.identity
                    );
                }
                self.leader = true;
                self.last_renewal = Some(now);
                Ok(())
            }
            // Someone else wrote first; look again next time.
            Err(Error::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The API requests sent since the last call, by verb and status.
    pub fn take_requests(&mut self) -> crate::http::Counts {
        self.kube.take_requests()
    }

    /// Gives the Lease up so a standby takes over at once (on shutdown).
    pub fn release(&mut self) {
        if !self.leader {
            return;
        }
        self.leader = false;
        let result =
            self.kube
                .get_lease(&self.namespace, &self.name)
                .and_then(|lease| match lease {
                    Some(lease)
                        if lease.spec.holder_identity.as_deref() == Some(&self.identity) =>
                    {
                        let mut released = lease;
                        released.spec.holder_identity = None;
                        released.spec.lease_duration_seconds = Some(1);
                        released.spec.renew_time = Some(crate::time::rfc3339(SystemTime::now(), 6));
                        self.kube.write_lease(&released).map(|_| ())
                    }
                    _ => Ok(()),
                });
        match result {
            Ok(()) => log::info!("released Lease {}/{}", self.namespace, self.name),
            Err(e) => log::warn!(
                "releasing Lease {}/{} failed: {e}",
                self.namespace,
                self.name
            ),
        }
    }
}
