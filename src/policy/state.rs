//! The observed-versions annotation: the versions a workload was last rolled
//! out with, stored on the workload itself so no restart or failover loses
//! or repeats a change.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Metadata annotation (not on the pod template, so writing it rolls nothing).
pub const ANNOTATION: &str = "secrets-reloader.security.bank-vaults.io/observed-versions";

/// The API server's limit on all of an object's annotations together, keys
/// and values: 256 KiB.
pub const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// The most the state takes on any workload: 64 KiB, about 600 secrets.
pub const MAX_BYTES: usize = 64 * 1024;

/// Room kept for the rollout times a renewal may add after the state was
/// cut to its budget, and for the cause of the last rollout.
const TIMES: usize = r#","r":18446744073709551615,"f":18446744073709551615"#.len()
    + r#","c":[]"#.len()
    + MAX_CAUSE * ",65535".len();

/// How many of the secrets whose change caused a rollout are recorded as its
/// cause (the health gate's "caused by the same secret version").
pub const MAX_CAUSE: usize = 10;

/// Room left for the other annotations to grow (a Deployment's revision,
/// a change cause), so the state never makes another writer's update fail.
pub const SLACK: usize = 4 * 1024;

/// The bytes the state may take on a workload whose other annotations take
/// `others` bytes: what the API server's limit leaves them, less
/// [`SLACK`], at most [`MAX_BYTES`].
pub fn budget(others: usize) -> usize {
    ANNOTATIONS_LIMIT
        .saturating_sub(others)
        .saturating_sub(ANNOTATION.len() + TIMES + SLACK)
        .min(MAX_BYTES)
}

/// One version of a secret. The creation time tells apart a secret deleted
/// and re-created whose number came back the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// KV v2 `current_version`.
    pub number: u64,
    /// That version's `created_time`, as Vault wrote it.
    pub created: String,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.number)
    }
}

/// What a workload was last rolled out with: for each secret key
/// (`vault:PATH`), its version, or `None` when the secret did not exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Secret key → observed version.
    pub versions: BTreeMap<String, Option<Version>>,
    /// When the reloader last rolled the workload out (Unix seconds), for
    /// any reason (a secret change or a dynamic-secret renewal): for the
    /// minimum reload interval and the renewal schedule.
    pub last_reload: Option<u64>,
    /// When a workload using dynamic secrets was first seen with no known
    /// last rollout (Unix seconds): its first-sight rollout is due from
    /// there, so a restart does not move it. Cleared by a rollout.
    pub first_seen: Option<u64>,
    /// The keys of the secrets whose new versions caused the last rollout
    /// (at most [`MAX_CAUSE`], each in `versions`): that rollout was for
    /// these keys at their recorded versions. Empty for a renewal.
    pub cause: Vec<String>,
}

/// The compact JSON form:
/// `{"v":{"vault:secret/data/x":[3,"2026-…Z"],"vault:gone":null},"r":1795851811}`,
/// or with `"f":1795851811` (first seen) instead of `r`, and `"c":[0]`: the
/// positions in `v` (in key order) of the cause of the last rollout.
/// Annotations written before `f` or `c` existed decode unchanged.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: BTreeMap<String, Option<(u64, String)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    c: Vec<u16>,
}

/// The annotation could not be read; the text says why, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable {ANNOTATION} annotation ({})", self.0)
    }
}

impl State {
    /// The annotation value.
    pub fn encode(&self) -> String {
        let wire = Wire {
            v: self
                .versions
                .iter()
                .map(|(key, version)| {
                    let pair = version.as_ref().map(|v| (v.number, v.created.clone()));
                    (key.clone(), pair)
                })
                .collect(),
            r: self.last_reload,
            f: self.first_seen,
            c: self
                .versions
                .keys()
                .enumerate()
                .filter(|(_, key)| self.cause.contains(key))
                .filter_map(|(at, _)| u16::try_from(at).ok())
                .take(MAX_CAUSE)
                .collect(),
        };
        serde_json::to_string(&wire).expect("a map of strings and numbers always serializes")
    }

    /// This state cut so that [`State::encode`] takes at most `budget`
    /// bytes: the versions in key order while they fit, the others left
    /// out (how many is the second value). The same state and budget always
    /// keep the same versions, so a cut state is not written again every
    /// pass.
    pub fn within(mut self, budget: usize) -> (State, usize) {
        let all = std::mem::take(&mut self.versions);
        // The cause is counted in the room kept for it (TIMES).
        let cause = std::mem::take(&mut self.cause);
        let mut size = self.encode().len();
        let mut left_out = 0;
        for (key, version) in all {
            let comma = usize::from(!self.versions.is_empty());
            let entry = serde_json::to_string(&key).map_or(usize::MAX, |k| k.len())
                + 1
                + serde_json::to_string(&version.as_ref().map(|v| (v.number, &v.created)))
                    .map_or(usize::MAX, |v| v.len());
            match size.saturating_add(comma).saturating_add(entry) {
                grown if grown <= budget && left_out == 0 => {
                    size = grown;
                    self.versions.insert(key, version);
                }
                _ => left_out += 1,
            }
        }
        self.cause = cause
            .into_iter()
            .filter(|key| self.versions.contains_key(key))
            .collect();
        (self, left_out)
    }

    /// Reads an annotation value written by [`State::encode`].
    pub fn decode(text: &str) -> Result<State, Corrupt> {
        let wire: Wire = serde_json::from_str(text).map_err(|e| {
            // serde's message may quote the input; keep only where it failed.
            Corrupt(format!("invalid JSON at column {}", e.column()))
        })?;
        if wire
            .v
            .keys()
            .any(|key| crate::policy::refs::SecretRef::from_key(key).is_none())
        {
            return Err(Corrupt("an entry is not a secret key".into()));
        }
        let keys: Vec<&String> = wire.v.keys().collect();
        let cause = wire
            .c
            .iter()
            .map(|&at| keys.get(usize::from(at)).map(|key| (*key).clone()))
            .collect::<Option<Vec<String>>>()
            .filter(|cause| cause.len() <= MAX_CAUSE)
            .ok_or_else(|| Corrupt("a cause is not one of its secrets".into()))?;
        Ok(State {
            cause,
            versions: wire
                .v
                .into_iter()
                .map(|(key, pair)| {
                    let version = pair.map(|(number, created)| Version { number, created });
                    (key, version)
                })
                .collect(),
            last_reload: wire.r,
            first_seen: wire.f,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(number: u64, created: &str) -> Option<Version> {
        Some(Version {
            number,
            created: created.into(),
        })
    }

    #[test]
    fn round_trips_in_compact_form() {
        let mut state = State::default();
        state.versions.insert(
            "vault:secret/data/mysql".into(),
            v(3, "2026-11-28T07:43:31.1Z"),
        );
        state.versions.insert("bao:team/kv/data/app".into(), None);
        let text = state.encode();
        assert_eq!(
            text,
            r#"{"v":{"bao:team/kv/data/app":null,"vault:secret/data/mysql":[3,"2026-11-28T07:43:31.1Z"]}}"#
        );
        assert_eq!(State::decode(&text), Ok(state.clone()));
        state.last_reload = Some(1_795_851_811);
        let text = state.encode();
        assert!(text.ends_with(r#"]},"r":1795851811}"#), "{text}");
        assert_eq!(State::decode(&text), Ok(state));
    }

    #[test]
    fn first_sight_is_kept_and_old_annotations_still_decode() {
        let old = r#"{"v":{"vault:secret/data/a":[2,"t"]},"r":1795851811}"#;
        let state = State::decode(old).unwrap();
        assert_eq!(state.first_seen, None);
        assert_eq!(
            state.encode(),
            old,
            "an old annotation is written back unchanged"
        );
        let seen = State {
            first_seen: Some(1_795_851_800),
            ..State::default()
        };
        let text = seen.encode();
        assert_eq!(text, r#"{"v":{},"f":1795851800}"#);
        assert_eq!(State::decode(&text), Ok(seen));
        assert!(State::decode(r#"{"v":{},"f":-1}"#).is_err());
    }

    #[test]
    fn the_cause_of_a_rollout_is_kept_as_positions_of_its_secrets() {
        let mut state = State {
            last_reload: Some(1_795_851_811),
            cause: vec!["vault:secret/data/b".into()],
            ..State::default()
        };
        for key in ["vault:secret/data/a", "vault:secret/data/b"] {
            state.versions.insert(key.into(), v(2, "t"));
        }
        let text = state.encode();
        assert!(text.ends_with(r#","r":1795851811,"c":[1]}"#), "{text}");
        assert_eq!(State::decode(&text), Ok(state.clone()));
        let (cut, left_out) =
            state.within(r#"{"v":{"vault:secret/data/a":[2,"t"]},"r":1795851811}"#.len());
        assert_eq!(
            (cut.cause.len(), left_out),
            (0, 1),
            "no cause outside the state"
        );
        let beyond = r#"{"v":{"vault:secret/data/a":[2,"t"]},"c":[1]}"#;
        assert!(State::decode(beyond).is_err());
    }

    #[test]
    fn a_state_is_cut_to_its_budget_in_key_order() {
        let mut state = State {
            last_reload: Some(1_795_851_811),
            ..State::default()
        };
        for i in 0..50 {
            let key = format!("vault:secret/data/app/s{i:03}");
            let version = (i % 3 != 0).then(|| Version {
                number: i,
                created: format!("2026-11-28T07:43:{:02}.123456789Z", i % 60),
            });
            state.versions.insert(key, version);
        }
        let full = state.encode().len();
        assert_eq!(state.clone().within(full), (state.clone(), 0));
        for budget in [0, 10, 30, 100, 1000, full / 2, full - 1] {
            let (cut, left_out) = state.clone().within(budget);
            let text = cut.encode();
            assert!(
                text.len() <= budget.max(r#"{"v":{},"r":1795851811}"#.len()),
                "{budget}"
            );
            assert_eq!(cut.versions.len() + left_out, 50, "{budget}");
            assert!(left_out > 0, "{budget}");
            // The first keys are kept, and one more would not fit.
            let kept: Vec<&String> = cut.versions.keys().collect();
            let first: Vec<&String> = state.versions.keys().take(kept.len()).collect();
            assert_eq!(kept, first, "{budget}");
            let mut one_more = cut.clone();
            let (key, version) = state.versions.iter().nth(kept.len()).unwrap();
            one_more.versions.insert(key.clone(), version.clone());
            assert!(one_more.encode().len() > budget, "{budget}");
            assert_eq!(State::decode(&text), Ok(cut.clone()));
            assert_eq!(
                cut.clone().within(budget),
                (cut, 0),
                "cut once, kept as it is"
            );
        }
    }

    #[test]
    fn the_budget_leaves_room_for_the_other_annotations() {
        assert_eq!(budget(0), MAX_BYTES);
        assert_eq!(budget(100 * 1024), MAX_BYTES);
        assert_eq!(
            budget(250 * 1024),
            ANNOTATIONS_LIMIT - 250 * 1024 - ANNOTATION.len() - TIMES - SLACK
        );
        assert_eq!(budget(ANNOTATIONS_LIMIT), 0);
        assert_eq!(budget(usize::MAX), 0);
    }

    #[test]
    fn corrupt_values_are_reported_without_their_content() {
        for text in [
            "",
            "{",
            "[]",
            r#"{"v":{"vault:a/data/b":"3"}}"#,
            r#"{"v":{"vault:a/data/b":[-1,"t"]}}"#,
            r#"{"v":{},"extra":1}"#,
            r#"{"v":{"hunter2":[1,"t"]}}"#,
        ] {
            let error = State::decode(text).expect_err(text);
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }
}
