//! The executor: writes a workload's plan with one merge patch, reads the
//! workload again after a conflict, and hands what the API server stored
//! to the index.

use super::decide::{plan, Decision, LookupFn, Plan};
use super::{dynamic, unix_now};
use crate::collector::index::{Index, Update};
use crate::error::Error;
use crate::kube::Kube;
use crate::policy::workload::{self, WorkloadId};

/// How [`apply`] writes: not at all in a dry run, and the limits of the
/// workload it reads back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Patching<'a> {
    pub(super) dry_run: bool,
    pub(super) limits: &'a workload::Limits,
}

/// What [`apply`] did with a workload.
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// Its UID and the decision, when it was rolled out.
    pub(super) rolled: Option<(String, Decision)>,
    /// The secrets whose versions its state leaves out ([`Decision::left_out`]).
    pub(super) left_out: usize,
}

impl Applied {
    /// Not rolled out.
    fn kept(left_out: usize) -> Applied {
        Applied {
            rolled: None,
            left_out,
        }
    }
}

/// Carries out the [`plan`] for one workload (with its dynamic-secret
/// `renewal`, if any); on a conflict reads it again, plans again and
/// patches once more. When the API server refuses the annotations as too long anyway,
/// the patch goes again with a state of no versions: the rollout never
/// waits for the state to fit. In a dry run it only logs.
pub(super) fn apply(
    kube: &mut Kube,
    index: &mut Index,
    id: &WorkloadId,
    lookup: &LookupFn,
    renewal: Option<&dynamic::Renewal>,
    patching: Patching,
) -> Result<Applied, Error> {
    let mut fetched_again = false;
    let mut too_long = false;
    let mut renewed_again = None;
    loop {
        let Some(entry) = index.get(id) else {
            return Ok(Applied::default());
        };
        let budget = if too_long { 0 } else { entry.state_budget };
        let renewal = renewed_again.as_ref().or(renewal);
        let (plan, left_out) = plan(entry, lookup, renewal, budget, unix_now(), patching.dry_run);
        let (patch, rolled) = match plan {
            Plan::Nothing => return Ok(Applied::kept(left_out)),
            Plan::Hold(why) => {
                log::info!("{why}");
                return Ok(Applied::kept(left_out));
            }
            Plan::Record(patch) => (patch, None),
            Plan::Roll(patch, decision) => (patch, Some(decision)),
        };
        let result = kube.merge_patch(id.kind, &id.namespace, &id.name, &patch);
        let stored = match result {
            Ok(stored) => stored,
            Err(Error::Conflict) if !fetched_again => {
                fetched_again = true;
                log::debug!("{id} changed since it was collected; reading it again");
                refresh(kube, index, id, patching.limits)?;
                // Decided again on the workload as it is now, the renewal too.
                if let (Some(renewal), Some(fresh)) = (renewal, index.get(id)) {
                    renewed_again = Some(renewal.again(fresh, unix_now()));
                }
                continue;
            }
            Err(Error::AnnotationsTooLong) if !too_long => {
                too_long = true;
                log::warn!("{id}: the API server refused its annotations as too long; writing its state without versions");
                continue;
            }
            Err(Error::NotFound) => {
                index.apply(Update::Deleted(id.clone()));
                return Ok(Applied::default());
            }
            Err(e) => return Err(e),
        };
        let uid = stored.metadata.uid.clone();
        update(index, id, stored, patching.limits);
        let Some(decision) = rolled else {
            log::debug!("recorded the secret versions of {id}");
            return Ok(Applied::kept(left_out));
        };
        log::info!("reloaded {id}: {}", decision.summary());
        let rolled = Some((uid, decision));
        return Ok(Applied { rolled, left_out });
    }
}

/// Replaces the entry with the workload as stored now (it may have opted out).
pub(super) fn refresh(
    kube: &mut Kube,
    index: &mut Index,
    id: &WorkloadId,
    limits: &workload::Limits,
) -> Result<(), Error> {
    match kube.get(id.kind, &id.namespace, &id.name) {
        Ok(current) => {
            update(index, id, current, limits);
            Ok(())
        }
        Err(Error::NotFound) => {
            index.apply(Update::Deleted(id.clone()));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub(super) fn update(
    index: &mut Index,
    id: &WorkloadId,
    current: workload::Workload,
    limits: &workload::Limits,
) {
    // Warnings about its values were already logged by the collector.
    let entry = current.into_entry(id.kind, limits, &mut Vec::new());
    index.apply(Update::Stored(id.clone(), entry));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::refs::SecretRef;
    use crate::policy::state::{self, State};
    use crate::reloader::fixtures::*;
    use crate::vault::Lookup;
    use std::time::Duration;

    #[test]
    fn annotations_refused_as_too_long_are_written_without_versions_and_it_rolls_out() {
        use crate::io::http::fake_server::{self, Reply};
        let too_long = r#"{"kind":"Status","code":422,"reason":"Invalid","details":{"causes":[
            {"reason":"FieldValueTooLong","message":"Too long","field":"metadata.annotations"}]}}"#;
        let stored = serde_json::json!({
            "metadata": {"name": "app", "namespace": "ns", "resourceVersion": "2", "uid": "u"},
            "spec": {"template": {"metadata": {"annotations": {
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}}}}
        })
        .to_string();
        let patches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&patches);
        let server = fake_server::start(move |r| {
            match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Reply::json(422, too_long),
                _ if r.method == "PATCH" => Reply::json(200, &stored),
                _ => Reply::json(500, "{}"),
            }
        });
        let (mut kube, _token) = crate::kube::tests::client(&server);
        let mut app = entry("app", &["s/data/a", "s/data/b"], None);
        app.state = Some(state(&[
            ("s/data/a", Some(version(1, "t1"))),
            ("s/data/b", Some(version(1, "t1"))),
        ]));
        let id = app.id.clone();
        let mut index: Index = [app].into_iter().collect();
        let found = lookups(vec![
            ("s/data/a", Lookup::Found(version(2, "t2"))),
            ("s/data/b", Lookup::Found(version(1, "t1"))),
        ]);
        let lookup = |s: &SecretRef| found.get(s);
        let applied = apply(
            &mut kube,
            &mut index,
            &id,
            &lookup,
            None,
            Patching {
                dry_run: false,
                limits: &workload::Limits::default(),
            },
        )
        .expect("rolled out on the second try");
        let (_, decision) = applied.rolled.expect("a rollout");
        assert_eq!(decision.changes.len(), 1);
        assert_eq!(applied.left_out, 2);
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        let bodies: Vec<serde_json::Value> = requests
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        let state_of = |body: &serde_json::Value| {
            State::decode(
                body["metadata"]["annotations"][state::ANNOTATION]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(state_of(&bodies[0]).versions.len(), 2);
        assert!(state_of(&bodies[1]).versions.is_empty());
        for body in &bodies {
            let count = &body["spec"]["template"]["metadata"]["annotations"]
                ["secrets-reloader.security.bank-vaults.io/secret-reload-count"];
            assert_eq!(count, "1", "both carry the rollout");
        }
    }

    #[test]
    fn a_renewal_another_leader_just_made_is_not_made_again_after_a_conflict() {
        use crate::io::http::fake_server::{self, Reply};
        let now = unix_now();
        let stored = |last: u64| {
            let state = State {
                last_reload: Some(last),
                ..State::default()
            };
            serde_json::json!({
                "metadata": {"name": "app", "namespace": "ns", "resourceVersion": "2",
                    "uid": "u", "annotations": {(state::ANNOTATION): state.encode()}},
                "spec": {"template": {"metadata": {"annotations": {
                    "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}}}}
            })
            .to_string()
        };
        let fresh = stored(now - 1);
        let server = fake_server::start(move |r| match r.method.as_str() {
            "PATCH" => Reply::json(409, r#"{"kind":"Status","code":409}"#),
            _ => Reply::json(200, &fresh),
        });
        let (mut kube, _token) = crate::kube::tests::client(&server);
        let mut app = entry("app", &[], None);
        app.state = Some(State {
            last_reload: Some(now - 15),
            ..State::default()
        });
        let settings = crate::policy::renewal::Settings {
            lifetime: Duration::from_secs(20),
            percent: 67,
            first_sight: crate::policy::renewal::FirstSight::Rollout,
            min_interval: None,
            jitter: 0,
        };
        let db = secret("database/creds/app");
        let (mut renewal, schedule, why) = dynamic::plan(&app, &settings, &db, now);
        assert!(schedule.due <= now);
        renewal.roll = Some(why);
        let id = app.id.clone();
        let mut index: Index = [app].into_iter().collect();
        let applied = apply(
            &mut kube,
            &mut index,
            &id,
            &|_| None,
            Some(&renewal),
            Patching {
                dry_run: false,
                limits: &workload::Limits::default(),
            },
        )
        .unwrap();
        assert!(applied.rolled.is_none(), "rolled twice: {applied:?}");
        let methods: Vec<String> = server.requests().into_iter().map(|r| r.method).collect();
        assert_eq!(methods, ["PATCH", "GET"], "nothing more to write");
    }
}
