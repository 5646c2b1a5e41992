//! ConfigMaps and Secrets as sources of references: the webhook injects the
//! `vault:` values a container takes from them (`envFrom`, `valueFrom`)
//! like its own. What is kept of one (only its values that may be
//! references, parsed: nothing else of a Secret), and the pure join of a
//! workload's own references with those of the objects it names.

use crate::policy::paths::AllowedPaths;
use crate::policy::refs::{self, Malformed, SecretRef};
use crate::policy::workload::{Entry, Named, Refused, Source, WorkloadId};
use base64::Engine;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The most values of one ConfigMap kept; a tenant's ConfigMap holding
/// more references is cut there, with a warning to its users.
pub const KEPT_VALUES: usize = 256;

/// A ConfigMap as listed or watched: what names it, and its values that
/// mention `vault:` or `bao:` (the others are dropped while decoding).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConfigMap {
    /// Name, namespace, resourceVersion.
    pub metadata: Meta,
    /// The values that may hold references, by key; at most [`KEPT_VALUES`].
    #[serde(deserialize_with = "reference_values")]
    pub data: Values,
    /// The `Status` code of a watch's ERROR event.
    pub code: Option<u16>,
}

/// A Secret as listed or watched (with `--follow-secret-refs`): what names
/// it, and its values that, decoded, mention `vault:` or `bao:`; the others
/// are dropped while decoding, never held.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct Secret {
    /// Name, namespace, resourceVersion.
    pub metadata: Meta,
    /// The values that may hold references, decoded, by key.
    #[serde(deserialize_with = "encoded_reference_values")]
    pub data: Values,
    /// The `Status` code of a watch's ERROR event.
    pub code: Option<u16>,
}

/// An object whose values may hold references.
pub trait Object {
    /// Which kind it is.
    const SOURCE: Source;
    /// What names it, and its values that may hold references.
    fn parts(self) -> (Meta, Values);
}

impl Object for ConfigMap {
    const SOURCE: Source = Source::ConfigMap;
    fn parts(self) -> (Meta, Values) {
        (self.metadata, self.data)
    }
}

impl Object for Secret {
    const SOURCE: Source = Source::Secret;
    fn parts(self) -> (Meta, Values) {
        (self.metadata, self.data)
    }
}

/// The metadata used of an object that is not a workload.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Meta {
    /// Object name.
    pub name: String,
    /// Object namespace.
    pub namespace: String,
    /// Its resourceVersion, for a watch to go on after it.
    pub resource_version: String,
}

/// Values kept of a ConfigMap, and how many more were dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Values {
    /// Key and value, in the order read.
    pub kept: Vec<(String, String)>,
    /// Reference values past [`KEPT_VALUES`].
    pub dropped: usize,
}

fn reference_values<'de, D: Deserializer<'de>>(d: D) -> Result<Values, D::Error> {
    d.deserialize_any(Filter { encoded: false })
}

fn encoded_reference_values<'de, D: Deserializer<'de>>(d: D) -> Result<Values, D::Error> {
    d.deserialize_any(Filter { encoded: true })
}

/// Keeps the values of a string map that may hold references, decoding
/// base64 first when `encoded` (a Secret's `data`).
struct Filter {
    encoded: bool,
}

impl<'de> Visitor<'de> for Filter {
    type Value = Values;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }
    fn visit_unit<E>(self) -> Result<Values, E> {
        Ok(Values::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Values, A::Error> {
        let mut values = Values::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value = map.next_value::<std::borrow::Cow<'de, str>>()?;
            let value = match self.encoded {
                false => Some(value.into_owned()),
                // Not base64 of text: the webhook finds no reference in it either.
                true => base64::engine::general_purpose::STANDARD
                    .decode(value.as_bytes())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok()),
            };
            let Some(value) = value else { continue };
            if !(value.contains("vault:") || value.contains("bao:")) {
                continue;
            }
            if values.kept.len() < KEPT_VALUES {
                values.kept.push((key.into_owned(), value));
            } else {
                values.dropped += 1;
            }
        }
        Ok(values)
    }
}

/// What one value of a ConfigMap or Secret refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRefs {
    /// The key.
    pub key: String,
    /// The secrets it watches, allowed ones only.
    pub refs: Vec<SecretRef>,
    /// Its write-on-inject reference, allowed, if any.
    pub written: Vec<SecretRef>,
    /// Why a part of it is not understood, if one is not.
    pub malformed: Option<Malformed>,
    /// It names a path outside `--allowed-secret-paths`.
    pub refused: bool,
}

/// What is kept of a ConfigMap or Secret some workload names: its references by key
/// (no value itself), in a form every workload naming it can join.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The keys whose values hold references (or malformed ones).
    pub keys: Vec<KeyRefs>,
    /// Reference values past [`KEPT_VALUES`], not read.
    pub dropped: usize,
}

impl Held {
    /// The references of the `values` of an object in `namespace`, within
    /// `allowed` paths; a value with nothing in it is not kept.
    pub fn read(values: Values, namespace: &str, allowed: Option<&AllowedPaths>) -> Held {
        let mut keys = Vec::new();
        for (key, value) in values.kept {
            let mut found = KeyRefs {
                key,
                refs: Vec::new(),
                written: Vec::new(),
                malformed: None,
                refused: false,
            };
            let written = refs::scan_write_on_inject(&value).map(|r| (true, r));
            let watched = refs::scan_value(&value).into_iter().map(|r| (false, r));
            for (is_written, result) in watched.chain(written) {
                match result {
                    Ok(secret) if allowed.is_none_or(|a| a.allows(namespace, &secret.path)) => {
                        match is_written {
                            true => found.written.push(secret),
                            false => found.refs.push(secret),
                        }
                    }
                    Ok(_) => found.refused = true,
                    Err(why) => found.malformed = found.malformed.or(Some(why)),
                }
            }
            let empty = found.refs.is_empty() && found.written.is_empty();
            if !empty || found.malformed.is_some() || found.refused {
                keys.push(found);
            }
        }
        Held {
            keys,
            dropped: values.dropped,
        }
    }
}

/// What a join gathers: references, where paths were refused, warnings.
struct Joined {
    refs: Vec<SecretRef>,
    written: Vec<SecretRef>,
    refused: Refused,
    warnings: Vec<String>,
}

impl Joined {
    /// Adds what workload `id` takes from `held`, the object `named` names.
    fn add(&mut self, id: &WorkloadId, named: &Named, held: &Held) {
        let keys = held.keys.iter();
        for k in keys.filter(|k| named.key.as_ref().is_none_or(|key| *key == k.key)) {
            let place = format!("key {} of {} {}", k.key, named.source.name(), named.name);
            if let Some(why) = k.malformed {
                self.warnings
                    .push(format!("{id}: skipping a reference in {place}: {why}"));
            }
            if k.refused {
                self.warnings.push(format!(
                    "{id}: {place} names a secret path outside --allowed-secret-paths; \
                     it is not checked"
                ));
                self.refused.add(place);
            }
            self.refs.extend(k.refs.iter().cloned());
            self.written.extend(k.written.iter().cloned());
        }
        if held.dropped > 0 && named.key.is_none() {
            self.warnings.push(format!(
                "{id}: {} {} holds more than {KEPT_VALUES} references; {} are not read",
                named.source.name(),
                named.name,
                held.dropped
            ));
        }
    }
}

/// Joins `entry`'s own references with those of the objects it names
/// (`held` gives each by kind and name: `Some(None)` when missing, skipped
/// as the webhook skips it; `None` when not known, never read), and caps
/// the whole at its `--max-secrets-per-workload`: sets `refs`, the written
/// references, `refused`, `unwatched` and whether some object is unknown
/// ([`Entry::refs_unknown`]). Returns the warnings about the join, each
/// naming the workload, the object and the key, never a value. An entry
/// naming none is left as it is.
pub fn join<'a>(
    entry: &mut Entry,
    held: impl Fn(Source, &str) -> Option<Option<&'a Held>>,
) -> Vec<String> {
    let Some(sources) = entry.sources.as_deref_mut() else {
        return Vec::new();
    };
    let mut joined = Joined {
        refs: sources.refs.clone(),
        written: sources.written.clone(),
        refused: sources.refused.clone(),
        warnings: Vec::new(),
    };
    sources.unknown = false;
    for named in &sources.named {
        match held(named.source, &named.name) {
            Some(Some(object)) => joined.add(&entry.id, named, object),
            Some(None) => {}
            None => sources.unknown = true,
        }
    }
    let sources = &*sources;
    let Joined {
        mut refs,
        mut written,
        refused,
        mut warnings,
    } = joined;
    for list in [&mut refs, &mut written] {
        list.sort();
        list.dedup();
    }
    let (max, id) = (sources.max_secrets, &entry.id);
    let total = refs.len() + entry.dynamic.as_ref().map_or(0, |_| written.len());
    refs.truncate(max);
    if let Some(dynamic) = entry.dynamic.as_mut() {
        written.truncate(max - refs.len());
        dynamic.written = written;
    }
    entry.unwatched = total.saturating_sub(max);
    if entry.unwatched > 0 {
        warnings.push(format!(
            "{id}: it names {total} secrets, more than --max-secrets-per-workload ({max}); \
             only the first {max} are watched"
        ));
    }
    entry.refs = refs;
    entry.refused = refused;
    warnings.sort();
    warnings.dedup();
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::refs::Provider;
    use crate::policy::workload::{Kind, Limits, Workload};
    use serde_json::json;

    fn vault(path: &str) -> SecretRef {
        SecretRef {
            provider: Provider::Vault,
            path: path.into(),
        }
    }

    fn config_map(data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "shared", "namespace": "ns", "resourceVersion": "7"},
            "data": data
        }))
        .unwrap()
    }

    /// A workload in namespace `ns` naming ConfigMap `shared` whole and
    /// key `ONE` of `keys`, with its own reference to `own`.
    fn entry(max_secrets: usize, dynamic: bool) -> Entry {
        let mut annotations = json!({
            "secrets-reloader.security.bank-vaults.io/reload-on-secret-change": "true"});
        if dynamic {
            annotations["secrets-reloader.security.bank-vaults.io/dynamic-secret-max-age"] =
                json!("1h");
        }
        let workload: Workload = serde_json::from_value(json!({
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": {"template": {"metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": "c",
                    "envFrom": [{"configMapRef": {"name": "shared"}}],
                    "env": [{"name": "OWN", "value": "vault:secret/data/own#k"},
                        {"name": "ONE", "valueFrom": {"configMapKeyRef": {"name": "keys", "key": "ONE"}}},
                        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "S"}}}]}]}}}
        }))
        .unwrap();
        let limits = Limits {
            max_secrets,
            allowed_paths: None,
            follow_secrets: true,
        };
        workload
            .into_entry(Kind::Deployment, &limits, &mut Vec::new())
            .unwrap()
    }

    #[test]
    fn a_config_map_keeps_only_its_references_by_key() {
        let values = config_map(json!({
            "PLAIN": "hello",
            "DB_PASS": "vault:secret/data/shared/db#password",
            "PINNED": "vault:secret/data/pinned#k#3",
            "URL": "postgres://${vault:secret/data/a#u}:${bao:kv/data/b#p}@db",
            "WRITTEN": ">>vault:database/creds/app#username",
            "BAD": "vault:#nothing-hunter2",
            "TRANSIT": "vault:v1:abcdef"
        }))
        .data;
        assert_eq!(values.kept.len(), 6, "PLAIN is dropped while decoding");
        let held = Held::read(values, "ns", None);
        let keys: Vec<_> = held.keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["BAD", "DB_PASS", "URL", "WRITTEN"]);
        assert!(held.keys[0].malformed.is_some());
        assert_eq!(held.keys[1].refs, [vault("secret/data/shared/db")]);
        assert_eq!(held.keys[2].refs.len(), 2);
        assert_eq!(held.keys[3].refs, []);
        assert_eq!(held.keys[3].written, [vault("database/creds/app")]);
        let text = format!("{held:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("postgres"),
            "{text}"
        );
    }

    #[test]
    fn a_secret_keeps_only_its_decoded_references_and_nothing_else() {
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds", "namespace": "ns", "resourceVersion": "3"},
            "data": {"PASSWORD": encode("hunter2"), "DB": encode("vault:secret/data/db#p"),
                "NOT_BASE64": "vault:secret/data/raw#p", "BINARY": encode("\u{0}\u{ff}")}
        }))
        .unwrap();
        let (meta, values) = secret.parts();
        assert_eq!(meta.name, "creds");
        let db = ("DB".to_string(), "vault:secret/data/db#p".to_string());
        assert_eq!((values.kept, values.dropped), (vec![db], 0));
    }

    #[test]
    fn a_config_map_with_too_many_references_is_cut() {
        let data: serde_json::Map<String, serde_json::Value> = (0..KEPT_VALUES + 5)
            .map(|i| (format!("K{i}"), json!(format!("vault:s/data/{i}#k"))))
            .collect();
        let values = config_map(serde_json::Value::Object(data)).data;
        assert_eq!((values.kept.len(), values.dropped), (KEPT_VALUES, 5));
    }

    #[test]
    fn paths_outside_the_allowed_ones_are_refused_by_key() {
        let allowed = AllowedPaths::parse("secret/data/{namespace}/*").unwrap();
        let values = config_map(json!({
            "MINE": "vault:secret/data/ns/db#p",
            "THEIRS": "vault:secret/data/other/db#p"
        }))
        .data;
        let held = Held::read(values, "ns", Some(&allowed));
        assert_eq!(held.keys[0].refs, [vault("secret/data/ns/db")]);
        assert!(held.keys[1].refs.is_empty() && held.keys[1].refused);
        let mut app = entry(100, false);
        let warnings = join(&mut app, |_, name| {
            (name == "shared").then_some(Some(&held))
        });
        assert_eq!(app.refused.count, 1);
        assert_eq!(
            warnings,
            [
                "Deployment ns/app: key THEIRS of ConfigMap shared names a secret path outside \
              --allowed-secret-paths; it is not checked"
            ]
        );
    }

    #[test]
    fn the_join_takes_whole_config_maps_and_named_keys_and_skips_missing_ones() {
        let shared = Held::read(
            config_map(json!({"DB_PASS": "vault:secret/data/shared/db#password",
                "BAD": "vault:#x"}))
            .data,
            "ns",
            None,
        );
        let keys = Held::read(
            config_map(json!({"ONE": "vault:secret/data/one#k", "TWO": "vault:secret/data/two#k"}))
                .data,
            "ns",
            None,
        );
        let mut app = entry(100, false);
        let warnings = join(&mut app, |_, _| None);
        assert_eq!(app.refs, [vault("secret/data/own")], "missing: skipped");
        assert!(warnings.is_empty());
        let creds = Held::read(
            config_map(json!({"S": "vault:secret/data/creds#k", "T": "vault:"})).data,
            "ns",
            None,
        );
        let warnings = join(&mut app, |source, name| match (source, name) {
            (Source::ConfigMap, "shared") => Some(Some(&shared)),
            (Source::ConfigMap, "keys") => Some(Some(&keys)),
            (Source::Secret, "creds") => Some(Some(&creds)),
            _ => None,
        });
        let want = [
            "secret/data/creds",
            "secret/data/one",
            "secret/data/own",
            "secret/data/shared/db",
        ];
        assert_eq!(app.refs, want.map(vault));
        assert_eq!(
            warnings,
            [
                "Deployment ns/app: skipping a reference in key BAD of ConfigMap shared: \
              empty path"
            ]
        );
    }

    #[test]
    fn the_cap_and_the_written_references_take_the_whole() {
        let shared = Held::read(
            config_map(
                json!({"A": "vault:secret/data/a#k", "B": "vault:secret/data/b#k",
                "W": ">>vault:database/creds/app#username"}),
            )
            .data,
            "ns",
            None,
        );
        let mut app = entry(2, true);
        let warnings = join(&mut app, |_, name| {
            (name == "shared").then_some(Some(&shared))
        });
        assert_eq!(app.refs, ["secret/data/a", "secret/data/b"].map(vault));
        assert_eq!(app.unwatched, 2, "own and the written one");
        assert!(app.dynamic.as_ref().unwrap().written.is_empty());
        assert_eq!(
            warnings,
            [
                "Deployment ns/app: it names 4 secrets, more than --max-secrets-per-workload (2); \
              only the first 2 are watched"
            ]
        );
        let mut app = entry(10, true);
        join(&mut app, |_, name| {
            (name == "shared").then_some(Some(&shared))
        });
        assert_eq!(app.refs.len(), 3);
        assert_eq!(app.dynamic.unwrap().written, [vault("database/creds/app")]);
    }
}
