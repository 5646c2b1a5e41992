//! Whether a workload's rollout is still in progress, judged from its
//! status the way `kubectl rollout status` judges it, a function per kind.
//! Pure; only the fields it needs are decoded.

use serde::Deserialize;

/// The status fields used (all kinds in one: each reads its own).
#[derive(Debug, Default, Deserialize, Clone, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Status {
    /// The generation the controller has acted on (apps/v1 kinds; an Argo
    /// Rollout writes it as a string).
    #[serde(deserialize_with = "generation")]
    pub observed_generation: i64,
    /// Pods of any revision (Deployment, StatefulSet).
    pub replicas: i64,
    /// Pods of the current template (Deployment, StatefulSet).
    pub updated_replicas: i64,
    /// Ready pods (StatefulSet).
    pub ready_replicas: i64,
    /// Available pods (Deployment).
    pub available_replicas: i64,
    /// StatefulSet revisions: done when they are equal.
    pub current_revision: String,
    /// See `current_revision`.
    pub update_revision: String,
    /// Nodes that should run the DaemonSet's pod.
    pub desired_number_scheduled: i64,
    /// Nodes running its current template.
    pub updated_number_scheduled: i64,
    /// Nodes where it is available.
    pub number_available: i64,
    /// Argo Rollout phase (`Progressing` while it rolls).
    pub phase: String,
    /// A Deployment's `Progressing` condition is `False` with reason
    /// `ProgressDeadlineExceeded`: its rollout failed. Only that is kept of
    /// its conditions.
    #[serde(rename = "conditions", deserialize_with = "deadline_exceeded")]
    pub deadline_exceeded: bool,
}

/// A generation written as a number or as a string of one (Argo
/// Rollouts); anything else is 0, not seen.
fn generation<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written<'a> {
        Number(i64),
        #[serde(borrow)]
        Text(std::borrow::Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Written::deserialize(d)? {
        Written::Number(n) => n,
        Written::Text(text) => text.parse().unwrap_or(0),
        Written::Other(_) => 0,
    })
}

/// One status condition, as far as [`deadline_exceeded`] reads it (any
/// field may be missing).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Condition<'a> {
    #[serde(borrow, rename = "type")]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    reason: std::borrow::Cow<'a, str>,
}

/// Whether `conditions` say the progress deadline was exceeded.
fn deadline_exceeded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let conditions: Option<Vec<Condition>> = Deserialize::deserialize(d)?;
    Ok(conditions.unwrap_or_default().iter().any(|c| {
        c.kind == "Progressing" && c.status == "False" && c.reason == "ProgressDeadlineExceeded"
    }))
}

/// What the spec says about how the workload rolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec.replicas` (`None`: the API's default, 1).
    pub replicas: Option<i64>,
    /// `spec.updateStrategy.type` is `OnDelete` (StatefulSet, DaemonSet):
    /// pods change only when deleted, so a rollout never progresses by
    /// itself.
    pub on_delete: bool,
    /// A StatefulSet's `rollingUpdate.partition`, if set.
    pub partition: Option<i64>,
}

/// Whether a Deployment is still rolling out: the controller has not seen
/// its spec yet, new pods are missing or not available, or old ones remain.
pub fn deployment(strategy: &Strategy, status: &Status) -> bool {
    status.observed_generation < strategy.generation
        || status.updated_replicas < strategy.replicas.unwrap_or(1)
        || status.replicas > status.updated_replicas
        || status.available_replicas < status.updated_replicas
}

/// Whether a StatefulSet is still rolling out: not seen yet, a pod not
/// ready, the pods above its partition not updated or (without one) its
/// revisions not met. `OnDelete`: never by itself.
pub fn stateful_set(strategy: &Strategy, status: &Status) -> bool {
    let wanted = strategy.replicas.unwrap_or(1);
    !strategy.on_delete
        && (status.observed_generation < strategy.generation
            || status.ready_replicas < wanted
            || match strategy.partition {
                Some(partition) => status.updated_replicas < wanted.saturating_sub(partition),
                None => status.update_revision != status.current_revision,
            })
}

/// Whether a DaemonSet is still rolling out: not seen yet, or a node not
/// running its new pod available. `OnDelete`: never by itself.
pub fn daemon_set(strategy: &Strategy, status: &Status) -> bool {
    !strategy.on_delete
        && (status.observed_generation < strategy.generation
            || status.updated_number_scheduled < status.desired_number_scheduled
            || status.number_available < status.desired_number_scheduled)
}

/// Whether an Argo Rollout is still rolling out: its phase says so.
pub fn rollout(status: &Status) -> bool {
    status.phase == "Progressing"
}

/// Whether the workload's own status says its rollout failed: a
/// Deployment past its progress deadline, an Argo Rollout `Degraded`. Only
/// once the controller has seen the spec at `generation`: until then the
/// status is the last rollout's, and a fix just written is not a failure.
/// Other kinds say nothing of the kind ([`timed_out`] judges them).
pub fn failed(generation: i64, status: &Status) -> bool {
    let says = status.deadline_exceeded || status.phase == "Degraded";
    says && status.observed_generation >= generation
}

/// Whether a rollout that began at `began` and is still in progress at
/// `now` (Unix seconds) has taken longer than `timeout` seconds. A start
/// more than `timeout` in the future (an edited state annotation; clocks
/// a little apart are allowed) counts as timed out too.
pub fn timed_out(began: u64, now: u64, timeout: u64) -> bool {
    now.saturating_sub(began) > timeout || began.saturating_sub(now) > timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(generation: i64, replicas: i64) -> Strategy {
        Strategy {
            generation,
            replicas: Some(replicas),
            on_delete: false,
            partition: None,
        }
    }

    #[test]
    fn a_deployment_rolls_until_its_new_pods_are_all_there_and_available() {
        let done = Status {
            observed_generation: 2,
            replicas: 2,
            updated_replicas: 2,
            available_replicas: 2,
            ..Status::default()
        };
        let rows: [(&str, Status, bool); 5] = [
            ("done", done.clone(), false),
            (
                "not observed yet",
                Status {
                    observed_generation: 1,
                    ..done.clone()
                },
                true,
            ),
            (
                "new pods missing",
                Status {
                    updated_replicas: 1,
                    ..done.clone()
                },
                true,
            ),
            (
                "old pods terminating",
                Status {
                    replicas: 3,
                    ..done.clone()
                },
                true,
            ),
            (
                "new pods not available",
                Status {
                    available_replicas: 1,
                    ..done.clone()
                },
                true,
            ),
        ];
        for (what, status, rolling) in rows {
            assert_eq!(deployment(&strategy(2, 2), &status), rolling, "{what}");
        }
        let none = Status {
            observed_generation: 2,
            ..Status::default()
        };
        assert!(!deployment(&strategy(2, 0), &none), "0 replicas");
    }

    #[test]
    fn a_statefulset_rolls_until_its_revisions_meet_or_its_partition_is_updated() {
        let done = Status {
            observed_generation: 3,
            replicas: 3,
            ready_replicas: 3,
            updated_replicas: 3,
            current_revision: "r2".into(),
            update_revision: "r2".into(),
            ..Status::default()
        };
        let partitioned = Strategy {
            partition: Some(2),
            ..strategy(3, 3)
        };
        let on_delete = Strategy {
            on_delete: true,
            ..strategy(4, 3)
        };
        let old = Status {
            update_revision: "r3".into(),
            ..done.clone()
        };
        let rows: [(&str, Strategy, Status, bool); 6] = [
            ("done", strategy(3, 3), done.clone(), false),
            ("revisions differ", strategy(3, 3), old.clone(), true),
            (
                "a pod not ready",
                strategy(3, 3),
                Status {
                    ready_replicas: 2,
                    ..done.clone()
                },
                true,
            ),
            (
                "partition: 1 of 1 updated",
                partitioned,
                Status {
                    updated_replicas: 1,
                    ..old.clone()
                },
                false,
            ),
            (
                "partition: none updated",
                partitioned,
                Status {
                    updated_replicas: 0,
                    ..old.clone()
                },
                true,
            ),
            ("OnDelete never progresses by itself", on_delete, old, false),
        ];
        for (what, strategy, status, rolling) in rows {
            assert_eq!(stateful_set(&strategy, &status), rolling, "{what}");
        }
        // The API server keeps these to int32 and a partition >= 0; an
        // impossible one never overflows here (it reads as not all updated).
        let huge = Strategy {
            partition: Some(i64::MIN),
            ..strategy(3, 3)
        };
        assert!(stateful_set(&huge, &done));
    }

    #[test]
    fn a_daemonset_rolls_until_every_node_runs_the_new_pod_available_and_a_rollout_by_phase() {
        let done = Status {
            observed_generation: 5,
            desired_number_scheduled: 3,
            updated_number_scheduled: 3,
            number_available: 3,
            ..Status::default()
        };
        let rows: [(&str, Status, bool); 4] = [
            ("done", done.clone(), false),
            (
                "not observed",
                Status {
                    observed_generation: 4,
                    ..done.clone()
                },
                true,
            ),
            (
                "a node not updated",
                Status {
                    updated_number_scheduled: 2,
                    ..done.clone()
                },
                true,
            ),
            (
                "a node not available",
                Status {
                    number_available: 2,
                    ..done.clone()
                },
                true,
            ),
        ];
        for (what, status, rolling) in rows {
            assert_eq!(daemon_set(&strategy(5, 1), &status), rolling, "{what}");
        }
        let on_delete = Strategy {
            on_delete: true,
            ..strategy(6, 1)
        };
        assert!(!daemon_set(&on_delete, &Status::default()));
        let phase = |p: &str| Status {
            phase: p.into(),
            ..Status::default()
        };
        assert!(rollout(&phase("Progressing")));
        assert!(!rollout(&phase("Healthy")));
    }

    #[test]
    fn only_a_progressing_condition_past_its_deadline_is_a_failure() {
        let status = |conditions: &str| -> Status {
            serde_json::from_str(&format!(r#"{{"conditions":{conditions}}}"#)).unwrap()
        };
        let condition = |kind: &str, value: &str, reason: &str| {
            format!(r#"{{"type":"{kind}","status":"{value}","reason":"{reason}"}}"#)
        };
        let rows = [
            (
                "past the deadline",
                condition("Progressing", "False", "ProgressDeadlineExceeded"),
                true,
            ),
            (
                "progressing",
                condition("Progressing", "True", "ReplicaSetUpdated"),
                false,
            ),
            (
                "another condition",
                condition("Available", "False", "ProgressDeadlineExceeded"),
                false,
            ),
            (
                "no reason",
                r#"{"type":"Progressing","status":"False"}"#.to_string(),
                false,
            ),
        ];
        for (what, condition, want) in rows {
            assert_eq!(
                failed(0, &status(&format!("[{condition}]"))),
                want,
                "{what}"
            );
        }
        assert!(!failed(0, &status("null")));
        let past = condition("Progressing", "False", "ProgressDeadlineExceeded");
        let mut stale = status(&format!("[{past}]"));
        stale.observed_generation = 3;
        assert!(!failed(4, &stale), "not seen by its controller yet");
        for (written, generation) in [("7", 7), (r#""7""#, 7), (r#""x""#, 0), ("{}", 0)] {
            let status: Status =
                serde_json::from_str(&format!(r#"{{"observedGeneration":{written}}}"#)).unwrap();
            assert_eq!(status.observed_generation, generation, "{written}");
        }
        let degraded = Status {
            phase: "Degraded".into(),
            ..Status::default()
        };
        assert!(failed(0, &degraded), "an Argo Rollout degraded");
        assert!(timed_out(100, 701, 600) && !timed_out(100, 700, 600) && timed_out(800, 700, 1));
        assert!(!timed_out(705, 700, 600) && timed_out(u64::MAX, 700, 600));
    }
}
