//! The workloads the reloader acts on: only the fields it uses, read straight
//! from the API server's JSON, and the pure step from such a workload to
//! what is watched.

use crate::policy::paths::AllowedPaths;
use crate::policy::progress;
use crate::policy::refs::{self, Provider, SecretRef};
use crate::policy::renewal::{self, FirstSight};
use crate::policy::state::{self, State};
use crate::policy::window::{self, Window};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The kinds that can be rolled out: all have a pod template at
/// `spec.template`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// argoproj.io/v1alpha1 Rollout (Argo Rollouts), when its API exists.
    Rollout,
}

impl Kind {
    /// The kinds every cluster has, in listing order.
    pub const BUILT_IN: [Kind; 3] = [Kind::Deployment, Kind::DaemonSet, Kind::StatefulSet];

    /// The resource name in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::DaemonSet => "daemonsets",
            Kind::StatefulSet => "statefulsets",
            Kind::Rollout => "rollouts",
        }
    }

    /// The API group and version.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Rollout => "argoproj.io/v1alpha1",
            _ => "apps/v1",
        }
    }

    /// The kind as Kubernetes spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::Rollout => "Rollout",
        }
    }
}

/// Which workload: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.name(), self.namespace, self.name)
    }
}

/// Opt-in annotation prefixes, newest first; the reload count is written
/// under the one the workload opted in with.
pub const PREFIXES: [&str; 2] = [
    "secrets-reloader.security.bank-vaults.io",
    "alpha.vault.security.banzaicloud.io",
];
const OPT_IN: &str = "/reload-on-secret-change";
/// On a workload's metadata: any new value asks for its secrets to be
/// checked at once.
pub const CHECK_NOW: &str = "/check-now";
/// On a workload's metadata, `"true"`: its secret changes are not rolled
/// out (they wait) until it goes. On the metadata, so that pausing and
/// resuming do not roll the pods themselves.
pub const PAUSED: &str = "/reload-paused";
/// On the pod template, a window spec ([`window`]): its secret changes are
/// rolled out only while the window is open (they wait, pending, outside).
pub const RELOAD_WINDOW: &str = "/reload-window";
/// On a workload's metadata, `"release"`: the rollouts held because a
/// rollout of the same secret version failed go ahead. Removed by the
/// rollout it releases, so it releases one hold, not every later one.
pub const ROLLOUT_HOLD: &str = "/rollout-hold";
const RELOAD_COUNT: &str = "/secret-reload-count";
const MIN_INTERVAL: &str = "/min-reload-interval";
/// `auto` or a duration: the workload's dynamic secrets are renewed by rollouts.
pub const MAX_AGE: &str = "/dynamic-secret-max-age";
const RENEWAL_PERCENT: &str = "/dynamic-secret-renewal-percent";
const FIRST_SIGHT: &str = "/dynamic-secret-first-sight";
/// The webhook's daemon mode (current and legacy names): it renews leases up
/// to their max TTL.
const DAEMON_MODE: [&str; 2] = [
    "secrets-webhook.security.bank-vaults.io/secret-init-daemon",
    "vault.security.banzaicloud.io/vault-env-daemon",
];
/// The shortest max-age accepted: below it a reloader period cannot keep up.
/// `--max-secrets-per-workload` by default: the largest real workloads use
/// a few dozen.
pub const MAX_SECRETS_DEFAULT: usize = 100;

/// What the operator lets one workload name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `--max-secrets-per-workload`.
    pub max_secrets: usize,
    /// `--allowed-secret-paths`; `None`: every path.
    pub allowed_paths: Option<AllowedPaths>,
    /// `--follow-secret-refs`: the Secrets a workload names are sources too.
    pub follow_secrets: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_secrets: MAX_SECRETS_DEFAULT,
            allowed_paths: None,
            follow_secrets: false,
        }
    }
}
const MIN_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);
const VAULT_ADDR: [&str; 2] = [
    "secrets-webhook.security.bank-vaults.io/vault-addr",
    "vault.security.banzaicloud.io/vault-addr",
];
const FROM_PATH: [(&str, Provider); 3] = [
    (
        "secrets-webhook.security.bank-vaults.io/vault-from-path",
        Provider::Vault,
    ),
    (
        "vault.security.banzaicloud.io/vault-env-from-path",
        Provider::Vault,
    ),
    (
        "secrets-webhook.security.bank-vaults.io/bao-from-path",
        Provider::Bao,
    ),
];

/// Whether a pod-template annotation can matter; the rest are not kept.
fn template_annotation_used(key: &str) -> bool {
    PREFIXES.iter().any(|prefix| {
        key.strip_prefix(prefix).is_some_and(|rest| {
            [
                OPT_IN,
                RELOAD_COUNT,
                MIN_INTERVAL,
                RELOAD_WINDOW,
                MAX_AGE,
                RENEWAL_PERCENT,
                FIRST_SIGHT,
            ]
            .contains(&rest)
        })
    }) || FROM_PATH.iter().any(|(name, _)| *name == key)
        || VAULT_ADDR.contains(&key)
        || DAEMON_MODE.contains(&key)
}

/// A workload as listed, holding only what the reloader uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Workload {
    /// Object metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Object spec.
    #[serde(deserialize_with = "null_as_default")]
    pub spec: Spec,
    /// Object status: whether a rollout is in progress.
    #[serde(deserialize_with = "null_as_default")]
    pub status: progress::Status,
}

/// An object that does not decode as a workload (a custom resource with a
/// loose schema, an env value that is a number): what names it, so that it
/// is skipped with a warning while the others are read.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Unreadable {
    /// Object name.
    pub name: String,
    /// Object namespace.
    pub namespace: String,
    /// Its resourceVersion, for a watch to go on after it.
    pub resource_version: String,
}

/// A listed object: a workload, or one that does not decode as one.
#[derive(Debug)]
pub struct Listed(pub Result<Workload, Unreadable>);

impl<'de> Deserialize<'de> for Listed {
    /// One item at a time is held whole, then read as a workload, so one
    /// bad item costs itself, not its page.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Listed, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(Listed(Workload::deserialize(&value).map_err(|_| {
            let metadata = value.get("metadata").unwrap_or(&serde_json::Value::Null);
            Unreadable::deserialize(metadata).unwrap_or_default()
        })))
    }
}

/// The metadata fields used.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Metadata {
    /// Object name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Object namespace.
    #[serde(deserialize_with = "null_as_default")]
    pub namespace: String,
    /// Version for optimistic concurrency.
    #[serde(deserialize_with = "null_as_default")]
    pub resource_version: String,
    /// The spec's generation, against the status's observed one.
    #[serde(deserialize_with = "null_as_default")]
    pub generation: i64,
    /// Object UID, for Events.
    #[serde(deserialize_with = "null_as_default")]
    pub uid: String,
    /// The observed-versions annotation, and the size of the others (they
    /// are dropped).
    #[serde(deserialize_with = "state_and_size_of_others")]
    pub annotations: MetaAnnotations,
}

/// What is kept of a workload's metadata annotations.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MetaAnnotations {
    /// The observed-versions annotation, if set.
    pub state: Option<String>,
    /// A digest of the check-now annotations (any prefix), if set: a new
    /// value is a new request, and a digest keeps a tenant's long value
    /// from costing memory.
    pub check_now: Option<u64>,
    /// The reload-paused annotation (any prefix) is `"true"`.
    pub paused: bool,
    /// The prefix of a rollout-hold annotation saying `"release"`.
    pub releases_hold: Option<&'static str>,
    /// The bytes of all the others, keys and values, as the API server
    /// counts them against its limit on an object's annotations.
    pub others: usize,
}

/// The spec fields used.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Spec {
    /// The pod template.
    #[serde(deserialize_with = "null_as_default")]
    pub template: Template,
    /// Desired pods (Deployment, StatefulSet); `None`: the default, 1.
    pub replicas: Option<i64>,
    /// How pods are replaced (StatefulSet, DaemonSet).
    #[serde(deserialize_with = "null_as_default")]
    pub update_strategy: UpdateStrategy,
}

/// `spec.updateStrategy` (StatefulSet, DaemonSet).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `RollingUpdate` (the default) or `OnDelete`.
    #[serde(rename = "type", deserialize_with = "null_as_default")]
    pub kind: String,
    /// Its rolling-update settings.
    #[serde(deserialize_with = "null_as_default")]
    pub rolling_update: RollingUpdate,
}

/// `spec.updateStrategy.rollingUpdate`: a StatefulSet's partition (a
/// Deployment's or DaemonSet's other fields are not used).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RollingUpdate {
    /// Pods below this ordinal keep the old revision.
    pub partition: Option<i64>,
}

/// The pod-template fields used.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Template {
    /// Template metadata.
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: TemplateMetadata,
    /// Template spec.
    #[serde(deserialize_with = "null_as_default")]
    pub spec: PodSpec,
}

/// The pod-template metadata used.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TemplateMetadata {
    /// The pod-template annotations that matter to the reloader.
    #[serde(deserialize_with = "only_used_annotations")]
    pub annotations: BTreeMap<String, String>,
}

/// The pod-spec fields used.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    /// Containers.
    #[serde(deserialize_with = "null_as_default")]
    pub containers: Vec<Container>,
    /// Init containers.
    #[serde(deserialize_with = "null_as_default")]
    pub init_containers: Vec<Container>,
}

/// A container: its name and the env values that may hold references.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    /// Container name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Env vars whose value mentions `vault:` or `bao:`, or that take their
    /// value from a ConfigMap key (others are dropped).
    #[serde(deserialize_with = "only_reference_env")]
    pub env: Vec<EnvVar>,
    /// Where whole ConfigMaps become env vars.
    #[serde(deserialize_with = "null_as_default")]
    pub env_from: Vec<EnvFrom>,
}

/// One env var that may hold references.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Its literal value.
    pub value: Option<String>,
    /// Where its value comes from otherwise.
    #[serde(deserialize_with = "null_as_default")]
    pub value_from: ValueFrom,
}

/// An env var's `valueFrom`, as far as it names a ConfigMap or Secret key.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ValueFrom {
    /// `configMapKeyRef`.
    pub config_map_key_ref: Option<KeyRef>,
    /// `secretKeyRef`.
    pub secret_key_ref: Option<KeyRef>,
}

/// A `configMapKeyRef` or `secretKeyRef`: which object, which key.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyRef {
    /// The object's name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// The key.
    #[serde(deserialize_with = "null_as_default")]
    pub key: String,
}

/// One `envFrom` source, as far as it names a ConfigMap or a Secret (its
/// `prefix` renames variables, not which secret they hold).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvFrom {
    /// `configMapRef`.
    pub config_map_ref: Option<ObjectRef>,
    /// `secretRef`.
    pub secret_ref: Option<ObjectRef>,
}

/// A reference to an object by name.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ObjectRef {
    /// The object's name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
}

/// The kinds of object a container takes env values from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Secret (with `--follow-secret-refs` only).
    Secret,
}

impl Source {
    /// The kind as Kubernetes spells it.
    pub fn name(self) -> &'static str {
        match self {
            Source::ConfigMap => "ConfigMap",
            Source::Secret => "Secret",
        }
    }
}

/// An object a workload takes values from: all of it (`envFrom`) or one key
/// (`valueFrom.configMapKeyRef`, `valueFrom.secretKeyRef`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Named {
    /// A ConfigMap or a Secret.
    pub source: Source,
    /// The object's name, in the workload's namespace.
    pub name: String,
    /// The key, or `None` for every key.
    pub key: Option<String>,
}

/// What a workload that names ConfigMaps (or Secrets) holds besides its entry's joined
/// references, so they can be joined again when a ConfigMap changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Sources {
    /// The ConfigMaps (and Secrets) it names, distinct and sorted.
    pub named: Vec<Named>,
    /// Its own references (env values, annotations), allowed, not capped.
    pub refs: Vec<SecretRef>,
    /// Its own write-on-inject references, not capped (dynamic only).
    pub written: Vec<SecretRef>,
    /// Where its own references name refused paths.
    pub refused: Refused,
    /// `--max-secrets-per-workload` when it was read: the cap of the join.
    pub max_secrets: usize,
    /// Set by the join: some object it names is not known now (never read
    /// yet), so `refs` may lack that object's references.
    pub unknown: bool,
}

/// The field's value, or its default when it is `null`: the API server
/// writes `null` for empty fields in places (a watch bookmark's object has
/// `"containers": null`), which `#[serde(default)]` alone refuses.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn state_and_size_of_others<'de, D: Deserializer<'de>>(d: D) -> Result<MetaAnnotations, D::Error> {
    struct Measure;
    impl<'de> Visitor<'de> for Measure {
        type Value = MetaAnnotations;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(MetaAnnotations::default())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = MetaAnnotations::default();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                let value = map.next_value::<std::borrow::Cow<'de, str>>()?;
                if key == state::ANNOTATION {
                    kept.state = Some(value.into_owned());
                    continue;
                }
                if PREFIXES
                    .iter()
                    .any(|p| key.strip_prefix(p) == Some(CHECK_NOW))
                {
                    let digest = digest(&key, &value);
                    kept.check_now = Some(kept.check_now.map_or(digest, |d| d ^ digest));
                }
                if PREFIXES.iter().any(|p| key.strip_prefix(p) == Some(PAUSED)) {
                    kept.paused |= value == "true";
                }
                let hold = PREFIXES
                    .into_iter()
                    .find(|p| key.strip_prefix(p) == Some(ROLLOUT_HOLD));
                if value == "release" {
                    kept.releases_hold = kept.releases_hold.or(hold);
                }
                kept.others = kept.others.saturating_add(key.len() + value.len());
            }
            Ok(kept)
        }
    }
    d.deserialize_any(Measure)
}

/// A digest of an annotation: the same for the same key and value.
fn digest(key: &str, value: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (key, value).hash(&mut hasher);
    hasher.finish()
}

fn only_used_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    filtered_map(d, template_annotation_used)
}

/// Reads a string map (or null), keeping only the keys `keep` accepts, so
/// large unrelated annotations are never held.
fn filtered_map<'de, D: Deserializer<'de>>(
    d: D,
    keep: fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Filter(fn(&str) -> bool);
    impl<'de> Visitor<'de> for Filter {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if (self.0)(&key) {
                    kept.insert(key.into_owned(), map.next_value::<String>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(kept)
        }
    }
    d.deserialize_any(Filter(keep))
}

fn only_reference_env<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EnvVar>, D::Error> {
    let all: Option<Vec<EnvVar>> = Option::deserialize(d)?;
    Ok(all
        .unwrap_or_default()
        .into_iter()
        .filter(|var| {
            var.value_from.config_map_key_ref.is_some()
                || var.value_from.secret_key_ref.is_some()
                || var
                    .value
                    .as_deref()
                    .is_some_and(|v| v.contains("vault:") || v.contains("bao:"))
        })
        .collect())
}

/// How the lifetime of a workload's dynamic secrets is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxAge {
    /// Asked of Vault for each dynamic reference (role, tune, mount config).
    Auto,
    /// Stated by the workload (at least 10s).
    Fixed(std::time::Duration),
}

/// A workload's dynamic-secret settings: present only when it carries the
/// `<prefix>/dynamic-secret-max-age` annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dynamic {
    /// `<prefix>/dynamic-secret-max-age`.
    pub max_age: MaxAge,
    /// `<prefix>/dynamic-secret-renewal-percent`: 1–90, default 67.
    pub percent: u8,
    /// `<prefix>/dynamic-secret-first-sight`: `rollout` (default) or `baseline`.
    pub first_sight: FirstSight,
    /// The webhook's daemon mode is on: renewable leases live up to their max TTL.
    pub daemon_mode: bool,
    /// The write-on-inject references (`>>vault:PATH#…`), distinct and sorted:
    /// always dynamic, never looked up as KV.
    pub written: Vec<SecretRef>,
}

/// Where a workload names secret paths outside `--allowed-secret-paths`:
/// how many places, and the first [`Refused::SHOWN`] of them by name (e.g.
/// `a reference in container app env DB`), so what is kept and said stays
/// small whatever the workload holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// How many places.
    pub count: usize,
    /// The first of them.
    pub first: Vec<String>,
    /// The last place added, so several references in one place count once.
    last: Option<String>,
}

impl Refused {
    /// How many places are named.
    pub const SHOWN: usize = 5;

    /// Counts `place`, once however many references it holds in a row.
    pub fn add(&mut self, place: String) {
        if self.last.as_ref() == Some(&place) {
            return;
        }
        self.count += 1;
        if self.first.len() < Refused::SHOWN {
            self.first.push(place.clone());
        }
        self.last = Some(place);
    }

    /// The places named, and how many more: `a, b and 3 more`.
    pub fn describe(&self) -> String {
        let mut text = self.first.join(", ");
        if self.count > self.first.len() {
            text.push_str(&format!(" and {} more", self.count - self.first.len()));
        }
        text
    }
}

/// An opted-in workload as the reloader needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Which workload.
    pub id: WorkloadId,
    /// The resourceVersion it was read at (patch precondition).
    pub resource_version: String,
    /// Its UID, for Events.
    pub uid: String,
    /// The opt-in annotation prefix; the reload count goes under it.
    pub prefix: &'static str,
    /// The current reload count (0 when missing or not a number).
    pub reload_count: u64,
    /// The distinct secrets it uses, sorted.
    pub refs: Vec<SecretRef>,
    /// No two rollouts closer than this (`<prefix>/min-reload-interval`).
    pub min_reload_interval: Option<std::time::Duration>,
    /// The workload's own Vault address (the webhook's `vault-addr`
    /// annotation), with a short host name qualified by its namespace.
    pub vault_addr: Option<String>,
    /// What it was last rolled out with; `None` on first sight or when the
    /// annotation was unreadable.
    pub state: Option<State>,
    /// The bytes its state annotation may take ([`state::budget`]).
    pub state_budget: usize,
    /// How many of the secrets it names are past the cap on secrets per
    /// workload, so not watched.
    pub unwatched: usize,
    /// Where it names secret paths outside `--allowed-secret-paths`:
    /// never asked about.
    pub refused: Refused,
    /// Its dynamic-secret settings, when it opted in to renewals.
    pub dynamic: Option<Dynamic>,
    /// A digest of its check-now annotation, when set.
    pub check_now: Option<u64>,
    /// Its rollouts are paused ([`PAUSED`]).
    pub paused: bool,
    /// Its own reload window ([`RELOAD_WINDOW`]); `None`: the default
    /// (`--reload-window`). Boxed: most workloads have none.
    pub window: Option<Box<Window>>,
    /// Its rollout is in progress ([`progress`]).
    pub rolling: bool,
    /// Its status says its rollout failed ([`progress::failed`]).
    pub failed: bool,
    /// The prefix of its rollout-hold annotation, when that releases held
    /// rollouts ([`ROLLOUT_HOLD`]).
    pub releases_hold: Option<&'static str>,
    /// What it takes from ConfigMaps, when it names any: then `refs`,
    /// `refused`, `unwatched` and the written references are the join of
    /// its own and theirs ([`crate::policy::sources::join`]).
    pub sources: Option<Box<Sources>>,
}

impl Entry {
    /// Whether `refs` may lack references of an object it names that is
    /// not known now: then what its state holds beyond `refs` is kept, as
    /// unknown is not missing.
    pub fn refs_unknown(&self) -> bool {
        self.sources.as_ref().is_some_and(|s| s.unknown)
    }
}

impl Workload {
    /// Whether a container or init container takes a whole Secret as env
    /// (`envFrom[].secretRef`).
    pub fn takes_secrets(&self) -> bool {
        let pod = &self.spec.template.spec;
        let mut containers = pod.init_containers.iter().chain(&pod.containers);
        containers.any(|c| c.env_from.iter().any(|from| from.secret_ref.is_some()))
    }

    /// Which workload this is, once its kind is known.
    pub fn id(&self, kind: Kind) -> WorkloadId {
        WorkloadId {
            kind,
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }

    /// Whether its rollout is in progress, from its spec and status.
    fn rolling(&self, kind: Kind) -> bool {
        let strategy = progress::Strategy {
            generation: self.metadata.generation,
            replicas: self.spec.replicas,
            on_delete: self.spec.update_strategy.kind == "OnDelete",
            partition: self.spec.update_strategy.rolling_update.partition,
        };
        match kind {
            Kind::Deployment => progress::deployment(&strategy, &self.status),
            Kind::StatefulSet => progress::stateful_set(&strategy, &self.status),
            Kind::DaemonSet => progress::daemon_set(&strategy, &self.status),
            Kind::Rollout => progress::rollout(&self.status),
        }
    }

    /// The entry to watch, or `None` when the workload has not opted in.
    /// Bad values are skipped: each gives one warning naming the workload
    /// and where the value is, never the value. Within `limits`: paths
    /// outside its allowed ones are left out, and of the secrets it names
    /// only the first `max_secrets` are watched (in sorted order, the
    /// write-on-inject ones after the others), each with one warning.
    pub fn into_entry(
        self,
        kind: Kind,
        limits: &Limits,
        warnings: &mut Vec<String>,
    ) -> Option<Entry> {
        let id = self.id(kind);
        let rolling = self.rolling(kind);
        let annotations = &self.spec.template.metadata.annotations;
        let prefix = PREFIXES.into_iter().find(|prefix| {
            annotations
                .get(&format!("{prefix}{OPT_IN}"))
                .map(String::as_str)
                == Some("true")
        })?;
        let reload_count = reload_count(annotations, prefix, &id, warnings);
        let min_reload_interval = min_reload_interval(annotations, prefix, &id, warnings);
        let window = reload_window(annotations, &id, warnings);
        let vault_addr = VAULT_ADDR
            .iter()
            .find_map(|name| annotations.get(*name))
            .map(|addr| qualify_addr(addr.trim(), &id.namespace));
        let mut dynamic = dynamic_settings(annotations, prefix, &id, warnings);
        let (mut refs, refused) = self.references(
            &id,
            dynamic.as_mut(),
            limits.allowed_paths.as_ref(),
            warnings,
        );
        let max_secrets = limits.max_secrets;
        let sources = self.sources(limits, &refs, dynamic.as_ref(), &refused);
        let unwatched = cap_secrets(&mut refs, dynamic.as_mut(), max_secrets);
        // With ConfigMaps, the join counts (and warns about) the whole.
        if unwatched > 0 && sources.is_none() {
            warnings.push(format!(
                "{id}: it names {} secrets, more than --max-secrets-per-workload ({max_secrets}); \
                 only the first {max_secrets} are watched",
                unwatched + max_secrets
            ));
        }
        let state_budget = state::budget(self.metadata.annotations.others);
        let state = self.metadata.annotations.state.as_deref().and_then(|text| {
            State::decode(text)
                .map_err(|why| warnings.push(format!("{id}: {why}; recording a new baseline")))
                .ok()
        });
        Some(Entry {
            id,
            resource_version: self.metadata.resource_version,
            uid: self.metadata.uid,
            prefix,
            reload_count,
            refs,
            min_reload_interval,
            vault_addr,
            state,
            state_budget,
            unwatched,
            refused,
            dynamic,
            check_now: self.metadata.annotations.check_now,
            paused: self.metadata.annotations.paused,
            window,
            releases_hold: self.metadata.annotations.releases_hold,
            failed: progress::failed(self.metadata.generation, &self.status),
            rolling,
            sources,
        })
    }

    /// What it keeps to join its own references (`refs`, `dynamic`'s
    /// written ones, `refused`) with those of the objects it names; `None`
    /// when it names none.
    fn sources(
        &self,
        limits: &Limits,
        refs: &[SecretRef],
        dynamic: Option<&Dynamic>,
        refused: &Refused,
    ) -> Option<Box<Sources>> {
        let named = self.named(limits.follow_secrets)?;
        Some(Box::new(Sources {
            named,
            refs: refs.to_vec(),
            written: dynamic.map(|d| d.written.clone()).unwrap_or_default(),
            refused: refused.clone(),
            max_secrets: limits.max_secrets,
            unknown: false,
        }))
    }

    /// The ConfigMaps (and with `secrets` the Secrets) its containers and
    /// init containers name, distinct and sorted; `None` when there are none.
    fn named(&self, secrets: bool) -> Option<Vec<Named>> {
        let pod = &self.spec.template.spec;
        let containers = pod.init_containers.iter().chain(&pod.containers);
        let mut named = Vec::new();
        let mut add = |source, name: &str, key: Option<&str>| {
            if source == Source::ConfigMap || secrets {
                named.push(Named {
                    source,
                    name: name.to_string(),
                    key: key.map(String::from),
                })
            }
        };
        for container in containers {
            for from in &container.env_from {
                if let Some(r) = &from.config_map_ref {
                    add(Source::ConfigMap, &r.name, None);
                }
                if let Some(r) = &from.secret_ref {
                    add(Source::Secret, &r.name, None);
                }
            }
            for var in &container.env {
                if let Some(r) = &var.value_from.config_map_key_ref {
                    add(Source::ConfigMap, &r.name, Some(&r.key));
                }
                if let Some(r) = &var.value_from.secret_key_ref {
                    add(Source::Secret, &r.name, Some(&r.key));
                }
            }
        }
        named.sort();
        named.dedup();
        (!named.is_empty()).then_some(named)
    }

    /// The distinct secrets the workload names, sorted (the write-on-inject
    /// ones, into `dynamic` when it opted in to renewals), and where it
    /// names paths that `allowed` refuses, which are left out. Each
    /// malformed or refused reference gives a warning naming where it is,
    /// never its value.
    fn references(
        &self,
        id: &WorkloadId,
        dynamic: Option<&mut Dynamic>,
        allowed: Option<&AllowedPaths>,
        warnings: &mut Vec<String>,
    ) -> (Vec<SecretRef>, Refused) {
        let (mut refs, mut written) = (Vec::new(), Vec::new());
        let mut refused = Refused::default();
        let mut keep = |into: &mut Vec<SecretRef>,
                        found: Vec<Result<SecretRef, refs::Malformed>>,
                        place: &dyn Fn() -> String| {
            for result in found {
                match result {
                    Ok(secret) if allowed.is_none_or(|a| a.allows(&id.namespace, &secret.path)) => {
                        into.push(secret)
                    }
                    Ok(_) => refused.add(place()),
                    Err(why) => warnings.push(format!("{id}: skipping {}: {why}", place())),
                }
            }
        };
        let annotations = &self.spec.template.metadata.annotations;
        for (name, provider) in FROM_PATH {
            if let Some(value) = annotations.get(name) {
                keep(&mut refs, refs::scan_from_path(value, provider), &|| {
                    format!("an entry of annotation {name}")
                });
            }
        }
        let pod = &self.spec.template.spec;
        let containers = pod
            .init_containers
            .iter()
            .map(|c| ("initContainer", c))
            .chain(pod.containers.iter().map(|c| ("container", c)));
        for (role, container) in containers {
            for var in &container.env {
                let Some(value) = &var.value else { continue };
                let place = || format!("a reference in {role} {} env {}", container.name, var.name);
                keep(&mut refs, refs::scan_value(value), &place);
                if dynamic.is_some() {
                    let found = refs::scan_write_on_inject(value).into_iter().collect();
                    keep(&mut written, found, &place);
                }
            }
        }
        for list in [&mut refs, &mut written] {
            list.sort();
            list.dedup();
        }
        if let Some(dynamic) = dynamic {
            dynamic.written = written;
        }
        for place in &refused.first {
            warnings.push(format!(
                "{id}: {place} names a secret path outside --allowed-secret-paths; it is not checked"
            ));
        }
        if refused.count > refused.first.len() {
            let more = refused.count - refused.first.len();
            warnings.push(format!(
                "{id}: {more} more references name secret paths outside --allowed-secret-paths; \
                 they are not checked"
            ));
        }
        (refs, refused)
    }
}

/// The dynamic-secret settings of a workload opted in under `prefix`, when
/// it has the max-age annotation (without `written`). A bad value gives one
/// warning naming the workload and the annotation, never the value: a bad
/// max-age is taken as absent, other bad values as their default.
fn dynamic_settings(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    id: &WorkloadId,
    warnings: &mut Vec<String>,
) -> Option<Dynamic> {
    let get = |name: &str| {
        annotations
            .get(&format!("{prefix}{name}"))
            .map(|v| v.trim())
    };
    let max_age = match get(MAX_AGE)? {
        "auto" => MaxAge::Auto,
        text => match crate::policy::time::parse_duration(text) {
            Ok(age) if age >= MIN_MAX_AGE => MaxAge::Fixed(age),
            _ => {
                warnings.push(format!(
                    "{id}: annotation {prefix}{MAX_AGE} is not auto or a duration of at least \
                     10s like 12h; its dynamic secrets are not renewed"
                ));
                return None;
            }
        },
    };
    let percent = match get(RENEWAL_PERCENT).map(str::parse::<u8>) {
        None => renewal::DEFAULT_PERCENT,
        Some(Ok(percent @ 1..=renewal::DEADLINE_PERCENT)) => percent,
        Some(_) => {
            warnings.push(format!(
                "{id}: annotation {prefix}{RENEWAL_PERCENT} is not a whole number from 1 to 90; \
                 using {}",
                renewal::DEFAULT_PERCENT
            ));
            renewal::DEFAULT_PERCENT
        }
    };
    let first_sight = match get(FIRST_SIGHT) {
        None | Some("rollout") => FirstSight::Rollout,
        Some("baseline") => FirstSight::Baseline,
        Some(_) => {
            warnings.push(format!(
                "{id}: annotation {prefix}{FIRST_SIGHT} is not baseline or rollout; using rollout"
            ));
            FirstSight::Rollout
        }
    };
    let daemon_mode = DAEMON_MODE
        .iter()
        .any(|name| annotations.get(*name).map(|v| v.trim()) == Some("true"));
    Some(Dynamic {
        max_age,
        percent,
        first_sight,
        daemon_mode,
        written: Vec::new(),
    })
}

/// The write-on-inject references (`>>vault:PATH#…`) in the pod's env
/// values, distinct and sorted; a bad one gives a warning naming its place.
/// Keeps the first `max` of `refs` and then of `dynamic`'s write-on-inject
/// references; how many were dropped.
fn cap_secrets(refs: &mut Vec<SecretRef>, dynamic: Option<&mut Dynamic>, max: usize) -> usize {
    let written = dynamic.map(|d| &mut d.written);
    let total = refs.len() + written.as_ref().map_or(0, |w| w.len());
    refs.truncate(max);
    if let Some(written) = written {
        written.truncate(max - refs.len());
    }
    total.saturating_sub(max)
}

/// `https://vault:8200` in namespace `ns` → `https://vault.ns.svc:8200`, as
/// the webhook's pods resolve it: a host without a dot, that is not
/// `localhost` or an address, is a Service in the workload's namespace.
pub fn qualify_addr(addr: &str, namespace: &str) -> String {
    let (scheme, rest) = addr.split_once("://").unwrap_or(("https", addr));
    let host_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let short = !host.is_empty()
        && !host.contains('.')
        && host != "localhost"
        && !host.starts_with('[')
        && host.parse::<std::net::IpAddr>().is_err();
    if short {
        format!("{scheme}://{host}.{namespace}.svc{tail}")
    } else {
        format!("{scheme}://{rest}")
    }
}

/// The reload-count annotation key for an opt-in prefix.
pub fn reload_count_annotation(prefix: &str) -> String {
    format!("{prefix}{RELOAD_COUNT}")
}

/// The reload count of annotations under `prefix` (0 when missing). One
/// that is not a number is repaired like a missing one, and so is the
/// largest count, which could not be counted up (a rollout needs the value
/// to change).
fn reload_count(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    id: &WorkloadId,
    warnings: &mut Vec<String>,
) -> u64 {
    let Some(text) = annotations.get(&format!("{prefix}{RELOAD_COUNT}")) else {
        return 0;
    };
    match text.trim().parse::<u64>() {
        Ok(count) if count < u64::MAX => count,
        _ => {
            warnings.push(format!(
                "{id}: annotation {prefix}{RELOAD_COUNT} is not a number below \
                 18446744073709551615; the next reload sets it to 1"
            ));
            0
        }
    }
}

/// The reload window of annotations under any prefix (the newest first).
/// One that does not parse gives a warning naming the annotation and why
/// (quoting at most an excerpt) and means no window at all, as if it were
/// open at every instant: the default window does not apply either, so a
/// typo never holds a rollout for good, and the warning says so.
fn reload_window(
    annotations: &BTreeMap<String, String>,
    id: &WorkloadId,
    warnings: &mut Vec<String>,
) -> Option<Box<Window>> {
    let (key, text) = PREFIXES.iter().find_map(|prefix| {
        let key = format!("{prefix}{RELOAD_WINDOW}");
        annotations.get(&key).map(|text| (key, text))
    })?;
    let window = window::parse(text).unwrap_or_else(|why| {
        warnings.push(format!(
            "{id}: annotation {key} is not a reload window: {why}; its rollouts have no window"
        ));
        Window::always()
    });
    Some(Box::new(window))
}

/// The minimum reload interval of annotations under `prefix`; one that is
/// not a duration is ignored with a warning.
fn min_reload_interval(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    id: &WorkloadId,
    warnings: &mut Vec<String>,
) -> Option<std::time::Duration> {
    let text = annotations.get(&format!("{prefix}{MIN_INTERVAL}"))?;
    match crate::policy::time::parse_duration(text.trim()) {
        Ok(interval) => Some(interval),
        Err(_) => {
            warnings.push(format!(
                "{id}: annotation {prefix}{MIN_INTERVAL} is not a duration like 10m; ignoring it"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(template_annotations: serde_json::Value, env: serde_json::Value) -> Workload {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "app", "namespace": "ns", "resourceVersion": "42", "uid": "u-1",
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\":true}",
                    "deployment.kubernetes.io/revision": "3"
                }
            },
            "spec": {
                "replicas": 1,
                "template": {
                    "metadata": {"annotations": template_annotations, "labels": {"a": "b"}},
                    "spec": {
                        "initContainers": [{"name": "init", "image": "x", "env": [
                            {"name": "TOKEN", "value": "vault:secret/data/init#token"}
                        ]}],
                        "containers": [{"name": "main", "image": "x", "env": env}]
                    }
                }
            }
        }))
        .unwrap()
    }

    fn vault(path: &str) -> SecretRef {
        SecretRef {
            provider: Provider::Vault,
            path: path.into(),
        }
    }

    fn limit(max_secrets: usize) -> Limits {
        Limits {
            max_secrets,
            allowed_paths: None,
            follow_secrets: false,
        }
    }

    #[test]
    fn the_config_maps_its_containers_name_are_kept_whatever_the_prefix() {
        let opted_in = json!({
            "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"
        });
        let mut w = workload(
            opted_in.clone(),
            json!([
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "keys", "key": "DB_PASS"}}},
                {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "C", "value": "plain"}
            ]),
        );
        let init = &mut w.spec.template.spec.init_containers[0];
        init.env_from = serde_json::from_value(json!([
            {"prefix": "X_", "configMapRef": {"name": "whole"}},
            {"configMapRef": {"name": "whole"}},
            {"secretRef": {"name": "not-followed"}}
        ]))
        .unwrap();
        assert!(w.takes_secrets());
        let mut warnings = Vec::new();
        let entry = w
            .into_entry(Kind::Deployment, &limit(100), &mut warnings)
            .unwrap();
        let sources = entry.sources.expect("it names ConfigMaps");
        let named = |list: &[(Source, &str, Option<&str>)]| -> Vec<Named> {
            let named = list.iter().map(|(source, name, key)| Named {
                source: *source,
                name: name.to_string(),
                key: key.map(String::from),
            });
            named.collect()
        };
        let config_maps = [
            (Source::ConfigMap, "keys", Some("DB_PASS")),
            (Source::ConfigMap, "whole", None),
        ];
        assert_eq!(
            sources.named,
            named(&config_maps),
            "no Secret without the flag"
        );
        assert_eq!(sources.refs, [vault("secret/data/init")]);
        assert_eq!(sources.max_secrets, 100);
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut w = workload(
            opted_in.clone(),
            json!([{"name": "K", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "K"}}}]),
        );
        w.spec.template.spec.init_containers[0].env_from =
            serde_json::from_value(json!([{"secretRef": {"name": "whole"}}])).unwrap();
        let follow = Limits {
            follow_secrets: true,
            ..limit(100)
        };
        let entry = w
            .into_entry(Kind::Deployment, &follow, &mut Vec::new())
            .unwrap();
        let secrets = [
            (Source::Secret, "creds", Some("K")),
            (Source::Secret, "whole", None),
        ];
        assert_eq!(entry.sources.unwrap().named, named(&secrets));
        // Without ConfigMaps nothing more is kept.
        let plain = workload(opted_in, json!([]))
            .into_entry(Kind::Deployment, &limit(100), &mut Vec::new())
            .unwrap();
        assert_eq!(plain.sources, None);
    }

    #[test]
    fn only_the_first_secrets_of_a_workload_are_watched() {
        let env: Vec<serde_json::Value> = (0..250)
            .map(|i| json!({"name": format!("S{i}"), "value": format!("vault:secret/data/s{i:03}#k")}))
            .chain([json!({"name": "DB", "value": ">>vault:database/creds/app#username"})])
            .collect();
        let opted_in = json!({
            "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true",
            "secrets-reloader.security.bank-vaults.io/dynamic-secret-max-age": "auto"
        });
        let mut warnings = Vec::new();
        let entry = workload(opted_in.clone(), json!(env))
            .into_entry(Kind::Deployment, &limit(100), &mut warnings)
            .unwrap();
        // 250 env values and the initContainer's: the first 100, sorted.
        assert_eq!(entry.refs.len(), 100);
        assert_eq!(entry.refs[0], vault("secret/data/init"));
        assert_eq!(entry.refs[99], vault("secret/data/s098"));
        assert!(entry.dynamic.unwrap().written.is_empty());
        assert_eq!(entry.unwatched, 152);
        assert_eq!(
            warnings,
            [
                "Deployment ns/app: it names 252 secrets, more than --max-secrets-per-workload \
              (100); only the first 100 are watched"
            ]
        );
        let entry = workload(opted_in, json!(env))
            .into_entry(Kind::Deployment, &limit(300), &mut Vec::new())
            .unwrap();
        assert_eq!((entry.refs.len(), entry.unwatched), (251, 0));
        assert_eq!(entry.dynamic.unwrap().written.len(), 1);
    }

    #[test]
    fn paths_outside_the_allowed_ones_are_left_out_with_where_they_are() {
        let opted_in = json!({
            "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true",
            "secrets-reloader.security.bank-vaults.io/dynamic-secret-max-age": "auto",
            "secrets-webhook.security.bank-vaults.io/vault-from-path":
                "secret/data/ns/a,secret/data/other-team/b"
        });
        let env = json!([
            {"name": "OWN", "value": "vault:secret/data/ns/db#pw"},
            {"name": "THEIRS", "value": "vault:secret/data/other-team/db#pw"},
            {"name": "DB", "value": ">>vault:database/creds/other#username"}
        ]);
        let limits = Limits {
            max_secrets: 100,
            allowed_paths: Some(AllowedPaths::parse("secret/data/{namespace}/**").unwrap()),
            follow_secrets: false,
        };
        let mut warnings = Vec::new();
        let entry = workload(opted_in, env)
            .into_entry(Kind::Deployment, &limits, &mut warnings)
            .unwrap();
        assert_eq!(
            entry.refs,
            [vault("secret/data/ns/a"), vault("secret/data/ns/db")]
        );
        assert!(entry.dynamic.unwrap().written.is_empty());
        let places = [
            "an entry of annotation secrets-webhook.security.bank-vaults.io/vault-from-path",
            "a reference in initContainer init env TOKEN",
            "a reference in container main env THEIRS",
            "a reference in container main env DB",
        ];
        assert_eq!(entry.refused.count, 4);
        assert_eq!(entry.refused.first, places);
        for (warning, place) in warnings.iter().zip(places) {
            assert_eq!(
                warning,
                &format!("Deployment ns/app: {place} names a secret path outside --allowed-secret-paths; it is not checked")
            );
            assert!(!warning.contains("other-team"), "{warning}");
        }
    }

    #[test]
    fn thousands_of_refused_references_cost_a_few_lines_and_a_few_names() {
        let opted_in =
            json!({"secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"});
        let env: Vec<serde_json::Value> = (0..2000)
            .map(|i| json!({"name": format!("S{i}"), "value": format!("vault:other/data/s{i}#k")}))
            .collect();
        let limits = Limits {
            max_secrets: 100,
            allowed_paths: Some(AllowedPaths::parse("secret/data/{namespace}/**").unwrap()),
            follow_secrets: false,
        };
        let mut warnings = Vec::new();
        let entry = workload(opted_in, json!(env))
            .into_entry(Kind::Deployment, &limits, &mut warnings)
            .unwrap();
        // The initContainer's reference and the 2000 of the container.
        assert_eq!(entry.refused.count, 2001);
        assert_eq!(entry.refused.first.len(), Refused::SHOWN);
        assert_eq!(warnings.len(), Refused::SHOWN + 1, "{warnings:?}");
        assert!(entry.refused.describe().ends_with(" and 1996 more"));
    }

    #[test]
    fn keeps_only_the_fields_used() {
        let w = workload(
            json!({"secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true",
                   "unrelated": "x"}),
            json!([{"name": "PLAIN", "value": "hello"},
                   {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                   {"name": "PW", "value": "vault:secret/data/mysql#pw"}]),
        );
        assert_eq!(w.metadata.resource_version, "42");
        assert_eq!(w.metadata.annotations.state, None);
        let others = "kubectl.kubernetes.io/last-applied-configuration{\"big\":true}\
                      deployment.kubernetes.io/revision3";
        assert_eq!(w.metadata.annotations.others, others.len());
        assert_eq!(
            (
                w.metadata.annotations.check_now,
                w.metadata.annotations.paused
            ),
            (None, false)
        );
        assert_eq!(w.spec.template.metadata.annotations.len(), 1);
        assert_eq!(w.spec.template.spec.containers[0].env.len(), 1);
    }

    #[test]
    fn check_now_and_pause_are_read_from_the_metadata_under_either_prefix() {
        let meta = |annotations: serde_json::Value| -> MetaAnnotations {
            let metadata: Metadata =
                serde_json::from_value(json!({"annotations": annotations})).unwrap();
            metadata.annotations
        };
        let paused = meta(json!({"alpha.vault.security.banzaicloud.io/reload-paused": "true"}));
        assert!(paused.paused);
        let not = meta(json!({"secrets-reloader.security.bank-vaults.io/reload-paused": "false"}));
        assert!(!not.paused);
        let hold = "alpha.vault.security.banzaicloud.io/rollout-hold";
        let release = meta(json!({hold: "release"}));
        assert_eq!(
            release.releases_hold,
            Some("alpha.vault.security.banzaicloud.io")
        );
        assert_eq!(meta(json!({hold: "keep"})).releases_hold, None);
        let key = "secrets-reloader.security.bank-vaults.io/check-now";
        let (one, two) = (meta(json!({key: "1"})), meta(json!({key: "2"})));
        assert!(one.check_now.is_some() && one.check_now != two.check_now);
        assert_eq!(
            one.check_now,
            meta(json!({key: "1"})).check_now,
            "the same value, the same request"
        );
        assert_eq!(
            one.others,
            key.len() + 1,
            "counted against the annotations' limit"
        );
    }

    #[test]
    fn collects_every_reference_once() {
        let w = workload(
            json!({
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true",
                "secrets-reloader.security.bank-vaults.io/secret-reload-count": "4",
                "secrets-reloader.security.bank-vaults.io/min-reload-interval": "1h30m",
                "secrets-webhook.security.bank-vaults.io/vault-from-path": "secret/data/a, secret/data/pinned#2",
                "secrets-webhook.security.bank-vaults.io/bao-from-path": "secret/data/a"
            }),
            json!([
                {"name": "PW", "value": "vault:secret/data/mysql#${.MYSQL_PASSWORD}"},
                {"name": "PW2", "value": "vault:secret/data/mysql#other"},
                {"name": "FIXED", "value": "vault:secret/data/fixed#k#1"},
                {"name": "URL", "value": "db://${vault:team/kv/data/db#user}@h"}
            ]),
        );
        let mut warnings = Vec::new();
        let entry = w
            .into_entry(Kind::Deployment, &Limits::default(), &mut warnings)
            .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(entry.prefix, PREFIXES[0]);
        assert_eq!(entry.reload_count, 4);
        assert_eq!(
            entry.min_reload_interval,
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            entry.refs,
            vec![
                vault("secret/data/a"),
                vault("secret/data/init"),
                vault("secret/data/mysql"),
                vault("team/kv/data/db"),
                SecretRef {
                    provider: Provider::Bao,
                    path: "secret/data/a".into()
                },
            ]
        );
        assert_eq!(entry.state, None);
    }

    #[test]
    fn only_opted_in_workloads_are_watched() {
        let mut warnings = Vec::new();
        for annotations in [
            json!({}),
            json!(null),
            json!({"secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "false"}),
            json!({"secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "yes"}),
        ] {
            let w = workload(annotations, json!([]));
            assert!(w
                .into_entry(Kind::Deployment, &Limits::default(), &mut warnings)
                .is_none());
        }
        let legacy = workload(
            json!({"alpha.vault.security.banzaicloud.io/reload-on-secret-change": "true"}),
            json!(null),
        );
        let entry = legacy
            .into_entry(Kind::StatefulSet, &Limits::default(), &mut warnings)
            .unwrap();
        assert_eq!(entry.prefix, "alpha.vault.security.banzaicloud.io");
        assert_eq!(entry.id.to_string(), "StatefulSet ns/app");
        assert!(warnings.is_empty());
    }

    #[test]
    fn a_reload_window_is_read_under_either_prefix_and_a_bad_one_means_none() {
        let entry = |window: Option<(&str, &str)>| {
            let mut annotations = json!({
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"});
            if let Some((prefix, value)) = window {
                annotations[format!("{prefix}{RELOAD_WINDOW}")] = json!(value);
            }
            let mut warnings = Vec::new();
            let entry = workload(annotations, json!([]))
                .into_entry(Kind::Deployment, &Limits::default(), &mut warnings)
                .unwrap();
            (entry.window, warnings)
        };
        assert_eq!(entry(None), (None, vec![]));
        let spec = "Sat,Sun 00:00-24:00 UTC";
        let (window, warnings) = entry(Some((PREFIXES[1], spec)));
        assert_eq!(window.as_deref(), Some(&window::parse(spec).unwrap()));
        assert!(warnings.is_empty(), "{warnings:?}");
        let bad = format!("Mon 10:00-11:00 {}", "Z".repeat(5000));
        let (window, warnings) = entry(Some((PREFIXES[0], &bad)));
        assert_eq!(window.as_deref(), Some(&Window::always()), "no window");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with(
                "Deployment ns/app: annotation \
                 secrets-reloader.security.bank-vaults.io/reload-window is not a reload window: "
            ),
            "{warnings:?}"
        );
        assert!(warnings[0].len() < 300, "a capped excerpt: {warnings:?}");
    }

    #[test]
    fn bad_values_warn_with_their_place_not_their_content() {
        let w = workload(
            json!({
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true",
                "secrets-reloader.security.bank-vaults.io/secret-reload-count": "many",
                "secrets-reloader.security.bank-vaults.io/min-reload-interval": "soon",
                "vault.security.banzaicloud.io/vault-env-from-path": "secret/data/ok,bad path#x"
            }),
            json!([{"name": "PW", "value": "vault:s3cr3t-without-key"},
                   {"name": "GOOD", "value": "vault:secret/data/good#k"}]),
        );
        let mut warnings = Vec::new();
        let mut raw = w;
        raw.metadata.annotations.state = Some("{not json".into());
        let entry = raw
            .into_entry(Kind::DaemonSet, &Limits::default(), &mut warnings)
            .unwrap();
        assert_eq!(entry.reload_count, 0);
        assert_eq!(
            entry.refs,
            vec![
                vault("secret/data/good"),
                vault("secret/data/init"),
                vault("secret/data/ok")
            ]
        );
        assert_eq!(entry.state, None);
        assert_eq!(entry.min_reload_interval, None);
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.starts_with("DaemonSet ns/app: ")));
        assert!(warnings.iter().any(|w| w.contains("container main env PW")));
        assert!(warnings.iter().all(|w| !w.contains("s3cr3t")));
    }

    #[test]
    fn reload_counts_that_cannot_count_up_are_repaired() {
        let cases = [
            (Some("4"), 4, false),
            (None, 0, false),
            (Some(" 7 "), 7, false),
            (Some("18446744073709551614"), u64::MAX - 1, false),
            (Some("18446744073709551615"), 0, true),
            (Some("18446744073709551616"), 0, true),
            (Some("-1"), 0, true),
            (Some("1e3"), 0, true),
        ];
        for (count, want, warned) in cases {
            let mut annotations = json!({
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"
            });
            if let Some(count) = count {
                annotations["secrets-reloader.security.bank-vaults.io/secret-reload-count"] =
                    json!(count);
            }
            let mut warnings = Vec::new();
            let entry = workload(annotations, json!([]))
                .into_entry(Kind::Deployment, &Limits::default(), &mut warnings)
                .unwrap();
            assert_eq!(entry.reload_count, want, "{count:?}");
            assert_eq!(
                warnings.len(),
                usize::from(warned),
                "{count:?}: {warnings:?}"
            );
        }
    }

    #[test]
    fn short_vault_hosts_are_services_in_the_workloads_namespace() {
        let cases = [
            ("https://vault:8200", "https://vault.apps.svc:8200"),
            ("http://vault", "http://vault.apps.svc"),
            ("vault:8200", "https://vault.apps.svc:8200"),
            (
                "https://vault.infra.svc:8200",
                "https://vault.infra.svc:8200",
            ),
            ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
            ("http://localhost:8200", "http://localhost:8200"),
            ("https://[::1]:8200", "https://[::1]:8200"),
        ];
        for (addr, qualified) in cases {
            assert_eq!(qualify_addr(addr, "apps"), qualified, "{addr}");
        }
    }

    #[test]
    fn reads_the_state_annotation() {
        let text = r#"{"v":{"vault:secret/data/a":[2,"t"]}}"#;
        let w: Workload = serde_json::from_value(json!({
            "metadata": {"annotations": {(state::ANNOTATION): text}},
            "spec": {"template": {"metadata": {"annotations": {
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"}}}}
        }))
        .unwrap();
        let entry = w
            .into_entry(Kind::Deployment, &Limits::default(), &mut Vec::new())
            .unwrap();
        assert_eq!(entry.state, Some(State::decode(text).unwrap()));
    }

    #[test]
    fn dynamic_secret_annotations() {
        use std::time::Duration;
        let on = |extra: serde_json::Value| {
            let mut annotations = json!({
                "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"
            });
            for (key, value) in extra.as_object().unwrap() {
                annotations[key] = value.clone();
            }
            annotations
        };
        let env = json!([
            {"name": "DB", "value": "vault:database/creds/app#username"},
            {"name": "CERT", "value": ">>vault:pki/issue/web#certificate#{\"common_name\":\"a.example\"}"},
            {"name": "KEY", "value": ">>vault:pki/issue/web#private_key#{\"common_name\":\"a.example\"}"},
            {"name": "BAD", "value": ">>bao:pki//x#k"}
        ]);
        let pki = vec![vault("pki/issue/web")];
        let p = "secrets-reloader.security.bank-vaults.io/dynamic-secret-";
        let auto = |percent, first_sight, daemon_mode, written: &Vec<SecretRef>| Dynamic {
            max_age: MaxAge::Auto,
            percent,
            first_sight,
            daemon_mode,
            written: written.clone(),
        };
        // name, annotations, dynamic settings, warnings
        type Case = (&'static str, serde_json::Value, Option<Dynamic>, usize);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("without max-age nothing is renewed, >> is not read", on(json!({})), None, 0),
            ("auto with defaults", on(json!({format!("{p}max-age"): "auto"})),
             Some(auto(67, FirstSight::Rollout, false, &pki)), 1),
            ("all set", on(json!({
                format!("{p}max-age"): " 1h30m ",
                format!("{p}renewal-percent"): "50",
                format!("{p}first-sight"): "baseline",
                "secrets-webhook.security.bank-vaults.io/secret-init-daemon": "true"})),
             Some(Dynamic { max_age: MaxAge::Fixed(Duration::from_secs(5400)), percent: 50,
                 first_sight: FirstSight::Baseline, daemon_mode: true, written: pki.clone() }), 1),
            ("legacy daemon mode", on(json!({format!("{p}max-age"): "auto",
                "vault.security.banzaicloud.io/vault-env-daemon": "true"})),
             Some(auto(67, FirstSight::Rollout, true, &pki)), 1),
            ("too short a max-age is absent", on(json!({format!("{p}max-age"): "9s"})), None, 1),
            ("not a duration", on(json!({format!("{p}max-age"): "soon"})), None, 1),
            ("bad percent and first sight take the defaults", on(json!({
                format!("{p}max-age"): "auto",
                format!("{p}renewal-percent"): "91",
                format!("{p}first-sight"): "never"})),
             Some(auto(67, FirstSight::Rollout, false, &pki)), 3),
            ("percent 0 is refused", on(json!({format!("{p}max-age"): "auto",
                format!("{p}renewal-percent"): "0"})),
             Some(auto(67, FirstSight::Rollout, false, &pki)), 2),
        ];
        for (name, annotations, want, warned) in cases {
            let mut warnings = Vec::new();
            let entry = workload(annotations, env.clone())
                .into_entry(Kind::Deployment, &Limits::default(), &mut warnings)
                .unwrap();
            assert_eq!(entry.dynamic, want, "{name}");
            assert_eq!(warnings.len(), warned, "{name}: {warnings:?}");
            assert!(warnings.iter().all(|w| !w.contains("soon")), "{name}");
            assert!(
                entry.refs.contains(&vault("database/creds/app")),
                "{name}: a dynamic env reference stays a reference"
            );
        }
    }

    #[test]
    fn dynamic_secret_annotations_follow_the_opt_in_prefix() {
        let w = workload(
            json!({
                "alpha.vault.security.banzaicloud.io/reload-on-secret-change": "true",
                "alpha.vault.security.banzaicloud.io/dynamic-secret-max-age": "30s",
                "secrets-reloader.security.bank-vaults.io/dynamic-secret-renewal-percent": "10"
            }),
            json!([]),
        );
        let entry = w
            .into_entry(Kind::Deployment, &Limits::default(), &mut Vec::new())
            .unwrap();
        let dynamic = entry.dynamic.unwrap();
        assert_eq!(
            dynamic.max_age,
            MaxAge::Fixed(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            dynamic.percent, 67,
            "another prefix's annotation is not read"
        );
    }
}
