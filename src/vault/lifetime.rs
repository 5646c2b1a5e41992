//! How long credentials read from a dynamic secrets path (database, pki,
//! kubernetes, aws, …) live, computed as Vault computes a new lease's TTL
//! from the mount's and the role's settings, without creating a lease.
//! Pure: the Vault client (`vault.rs`) reads the answers, this module
//! decides.

use serde_json::Value;
use std::time::Duration;

/// Vault's and OpenBao's built-in default and maximum lease TTL (768h), used
/// where a mount says 0.
pub const SYSTEM_DEFAULT: Duration = Duration::from_secs(768 * 3600);

/// The longest TTL believed from a server answer: 100 years, so that later
/// arithmetic on instants stays far from overflow.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// TTLs as a mount or role states them; `None` = not set (0 in Vault's
/// answers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ttls {
    /// The TTL a new lease gets.
    pub default: Option<Duration>,
    /// The most renewals can reach.
    pub max: Option<Duration>,
}

/// Where the mount part came from (for messages and the Event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A role's own TTLs were read (with the mount's for what it leaves unset).
    Role,
    /// The mount's effective TTLs from `sys/mounts/MOUNT/tune`.
    Tune,
    /// The mount's own config from `sys/internal/ui/mounts/PATH` (0 there is
    /// taken as the built-in 768h, which a server config may have changed).
    MountConfig,
}

/// The lifetime of credentials read from one dynamic path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// What a new lease (or certificate) gets.
    pub ttl: Duration,
    /// The most renewals can reach.
    pub max: Duration,
    /// Whether the lease can be renewed: false for PKI certificates,
    /// Kubernetes tokens and AWS STS credentials, which daemon mode cannot
    /// extend.
    pub renewable: bool,
    /// `Role` when a role answered, else `Tune`, else `MountConfig`.
    pub source: Source,
}

impl Lifetime {
    /// What the workload's pods can count on: `max` in daemon mode when
    /// renewable (the webhook's daemon renews the lease up to it), else `ttl`.
    pub fn effective(&self, daemon_mode: bool) -> Duration {
        if daemon_mode && self.renewable {
            self.max
        } else {
            self.ttl
        }
    }
}

/// Vault's rule: max = mount max (unset → [`SYSTEM_DEFAULT`]) lowered by the
/// role max when set; ttl = role default, else mount default (unset →
/// [`SYSTEM_DEFAULT`]), capped at max.
///
/// PKI lets a role's `max_ttl` raise the mount's max; this rule then gives a
/// shorter TTL than the certificate gets, which only rolls out earlier.
pub fn combine(mount: Ttls, role: Option<Ttls>, renewable: bool, source: Source) -> Lifetime {
    let role = role.unwrap_or_default();
    let mount_max = mount.max.unwrap_or(SYSTEM_DEFAULT);
    let max = role.max.map_or(mount_max, |r| r.min(mount_max));
    let ttl = role
        .default
        .or(mount.default)
        .unwrap_or(SYSTEM_DEFAULT)
        .min(max);
    Lifetime {
        ttl,
        max,
        renewable,
        source,
    }
}

/// The role endpoint for a dynamic path under a mount of type `kind` at
/// `mount` (`"database/"`): `MOUNT/creds/R` → `MOUNT/roles/R` (`MOUNT/role/R`
/// for `ldap`/`openldap`); for `pki` also `MOUNT/issue/R` and `MOUNT/sign/R`.
/// `None` for other paths, and when R is not a name Vault accepts for a role
/// (word characters, `-` and `.` inside), so that the request can never
/// lead anywhere but a role (no `/`, `..`, `%`, `?`).
pub fn role_path(kind: &str, mount: &str, path: &str) -> Option<String> {
    let rest = path.strip_prefix(mount)?;
    let (action, role) = rest.split_once('/')?;
    let issues = kind == "pki" && (action == "issue" || action == "sign");
    if !(action == "creds" || issues) || !is_role_name(role) {
        return None;
    }
    let roles = match kind {
        "ldap" | "openldap" => "role",
        _ => "roles",
    };
    Some(format!("{mount}{roles}/{role}"))
}

/// Vault's `framework.GenericNameRegex`, `\w(([\w-.]+)?\w)?`, in ASCII.
fn is_role_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let inner = |c: char| word(c) || c == '-' || c == '.';
    name.starts_with(word) && name.ends_with(word) && name.chars().all(inner)
}

/// The TTLs in a role's answer (its `data` object), per engine: database
/// `default_ttl`/`max_ttl`, pki `ttl`/`max_ttl`, kubernetes
/// `token_default_ttl`/`token_max_ttl`, aws `default_sts_ttl`/`max_sts_ttl`,
/// others `default_ttl` or `ttl`, and `max_ttl`. Values are seconds (what
/// Vault and OpenBao send) or Go-duration strings; 0, absent or unreadable
/// fields are unset. `None` when the role sets neither.
pub fn role_ttls(kind: &str, data: &Value) -> Option<Ttls> {
    let (default, max): (&[&str], &str) = match kind {
        "database" => (&["default_ttl"], "max_ttl"),
        "pki" => (&["ttl"], "max_ttl"),
        "kubernetes" => (&["token_default_ttl"], "token_max_ttl"),
        "aws" => (&["default_sts_ttl"], "max_sts_ttl"),
        _ => (&["default_ttl", "ttl"], "max_ttl"),
    };
    let ttls = Ttls {
        default: default.iter().find_map(|f| seconds(data.get(*f)?)),
        max: data.get(max).and_then(seconds),
    };
    (ttls != Ttls::default()).then_some(ttls)
}

/// Whether leases of an engine of type `kind` can be renewed, given the
/// role's answer when read: PKI certificates and Kubernetes service-account
/// tokens have a fixed end, as do AWS STS credentials (every AWS credential
/// type but `iam_user`; unknown counts as STS). Others: renewable.
pub fn renewable(kind: &str, role: Option<&Value>) -> bool {
    match kind {
        "pki" | "kubernetes" => false,
        "aws" => {
            let types = role.and_then(|r| r.get("credential_type"));
            // Older Vaults answer a list, newer ones a string.
            let all = match types {
                Some(Value::String(one)) => vec![one.as_str()],
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            !all.is_empty() && all.iter().all(|t| *t == "iam_user")
        }
        _ => true,
    }
}

/// A mount's TTLs from its config in `sys/internal/ui/mounts/PATH` or its
/// tune answer in `sys/mounts/MOUNT/tune`: `default_lease_ttl` and
/// `max_lease_ttl`, read as [`role_ttls`] reads a role's.
pub fn mount_ttls(config: &Value) -> Ttls {
    Ttls {
        default: config.get("default_lease_ttl").and_then(seconds),
        max: config.get("max_lease_ttl").and_then(seconds),
    }
}

/// A TTL field: a number of seconds or a Go duration (`"30s"`, `"1h"`; a
/// bare `"30"` is seconds). 0 and anything else: unset.
fn seconds(value: &Value) -> Option<Duration> {
    let duration = match value {
        Value::Number(n) => Duration::from_secs(n.as_u64()?),
        Value::String(s) => match s.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => crate::policy::time::parse_duration(s).ok()?,
        },
        _ => return None,
    };
    (!duration.is_zero()).then_some(duration.min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn ttls(default: u64, max: u64) -> Ttls {
        let set = |secs| (secs > 0).then(|| s(secs));
        Ttls {
            default: set(default),
            max: set(max),
        }
    }

    #[test]
    fn combine_follows_vaults_rule() {
        let sys = SYSTEM_DEFAULT.as_secs();
        #[rustfmt::skip]
        let cases: &[(&str, Ttls, Option<Ttls>, u64, u64)] = &[
            ("all unset: 768h both", ttls(0, 0), None, sys, sys),
            ("mount only", ttls(40, 120), None, 40, 120),
            ("role sets both", ttls(40, 120), Some(ttls(20, 60)), 20, 60),
            ("role over the mount's max is lowered to it", ttls(40, 120), Some(ttls(20, 600)), 20, 120),
            ("role default over the max is capped", ttls(0, 120), Some(ttls(300, 0)), 120, 120),
            ("role max only: the mount default, capped", ttls(40, 0), Some(ttls(0, 30)), 30, 30),
            ("role default only, mount unset", ttls(0, 0), Some(ttls(20, 0)), 20, sys),
            ("mount default over its max is capped", ttls(300, 120), None, 120, 120),
            ("role with nothing set is the mount", ttls(40, 120), Some(ttls(0, 0)), 40, 120),
        ];
        for (name, mount, role, ttl, max) in cases {
            let got = combine(*mount, *role, true, Source::Role);
            assert_eq!((got.ttl, got.max), (s(*ttl), s(*max)), "{name}");
        }
    }

    #[test]
    fn effective_lifetime() {
        let lifetime = |renewable| Lifetime {
            ttl: s(20),
            max: s(60),
            renewable,
            source: Source::Role,
        };
        #[rustfmt::skip]
        let cases: &[(bool, bool, u64)] = &[
            // (renewable, daemon mode, effective)
            (true, false, 20),
            (true, true, 60),
            (false, true, 20),
            (false, false, 20),
        ];
        for (renewable, daemon, want) in cases {
            assert_eq!(
                lifetime(*renewable).effective(*daemon),
                s(*want),
                "renewable {renewable}, daemon {daemon}"
            );
        }
    }

    #[test]
    fn role_paths_never_name_the_dynamic_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("database", "database/", "database/creds/app", Some("database/roles/app")),
            ("database", "team/db/", "team/db/creds/app-1.x", Some("team/db/roles/app-1.x")),
            ("database", "database/", "database/static-creds/app", None),
            ("database", "database/", "database/roles/app", None),
            ("pki", "pki/", "pki/issue/web", Some("pki/roles/web")),
            ("pki", "pki/", "pki/sign/web", Some("pki/roles/web")),
            ("pki", "pki/", "pki/creds/web", Some("pki/roles/web")),
            ("pki", "pki/", "pki/sign-verbatim/web", None),
            ("pki", "pki/", "pki/cert/ca", None),
            ("database", "database/", "database/issue/app", None),
            ("kubernetes", "kubernetes/", "kubernetes/creds/r", Some("kubernetes/roles/r")),
            ("aws", "aws/", "aws/creds/deploy", Some("aws/roles/deploy")),
            ("aws", "aws/", "aws/sts/deploy", None),
            ("openldap", "ldap/", "ldap/creds/r", Some("ldap/role/r")),
            ("ldap", "ldap/", "ldap/creds/r", Some("ldap/role/r")),
            ("consul", "consul/", "consul/creds/r", Some("consul/roles/r")),
            ("database", "database/", "other/creds/app", None),
            ("database", "database/", "database/creds", None),
            ("database", "database/", "database/creds/", None),
            ("database", "database/", "database/creds/a/b", None),
            ("database", "database/", "database/creds/.", None),
            ("database", "database/", "database/creds/%2e%2e", None),
            ("database", "database/", "database/creds/a?b", None),
            ("database", "database/", "database/creds/-a", None),
            ("database", "database/", "database/creds/a.", None),
            ("database", "database/", "database/creds/é", None),
        ];
        for (kind, mount, path, want) in cases {
            let got = role_path(kind, mount, path);
            assert_eq!(got.as_deref(), *want, "{kind} {path}");
            if let Some(got) = got {
                assert_ne!(&got, path);
                assert!(!["/creds/", "/issue/", "/sign/"]
                    .iter()
                    .any(|dynamic| got.contains(dynamic)));
            }
        }
    }

    #[test]
    fn role_ttls_per_engine() {
        // As OpenBao 2.7 and Vault 1.21 answer: numbers of seconds.
        let database = json!({"db_name": "none", "default_ttl": 20, "max_ttl": 60});
        let pki = json!({"ttl": 30, "max_ttl": 0, "not_before_duration": 30});
        let kubernetes = json!({"token_default_ttl": 900, "token_max_ttl": 3600});
        let aws =
            json!({"credential_type": "assumed_role", "default_sts_ttl": 900, "max_sts_ttl": 3600});
        let strings = json!({"default_ttl": "1h30m", "max_ttl": "7200"});
        #[rustfmt::skip]
        let cases: &[(&str, &Value, Option<Ttls>)] = &[
            ("database", &database, Some(ttls(20, 60))),
            ("pki", &pki, Some(ttls(30, 0))),
            ("kubernetes", &kubernetes, Some(ttls(900, 3600))),
            ("aws", &aws, Some(ttls(900, 3600))),
            ("database", &strings, Some(ttls(5400, 7200))),
            ("consul", &json!({"ttl": 60, "max_ttl": 120}), Some(ttls(60, 120))),
            ("terraform", &json!({"default_ttl": 60}), Some(ttls(60, 0))),
            ("database", &json!({"default_ttl": 0, "max_ttl": 0}), None),
            ("database", &json!({}), None),
            ("database", &json!({"default_ttl": -5, "max_ttl": "soon"}), None),
            ("database", &json!({"default_ttl": 1.5, "max_ttl": true}), None),
            ("pki", &database, Some(ttls(0, 60))),
            ("rabbitmq", &json!({"vhosts": "{}"}), None),
        ];
        for (kind, data, want) in cases {
            assert_eq!(role_ttls(kind, data), *want, "{kind} {data}");
        }
        let huge = role_ttls("database", &json!({"default_ttl": u64::MAX})).unwrap();
        assert_eq!(huge.default, Some(LONGEST));
    }

    #[test]
    fn mount_ttls_from_config_or_tune() {
        // OpenBao's ui/mounts config says 0 for unset; tune and Vault's
        // ui/mounts say the effective value.
        let openbao = json!({"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0});
        let tuned = json!({"default_lease_ttl": 40, "max_lease_ttl": 120, "description": ""});
        assert_eq!(mount_ttls(&openbao), Ttls::default());
        assert_eq!(mount_ttls(&tuned), ttls(40, 120));
        assert_eq!(mount_ttls(&json!(null)), Ttls::default());
    }

    #[test]
    fn which_leases_renew() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<Value>, bool)] = &[
            ("database", Some(json!({"default_ttl": 20})), true),
            ("database", None, true),
            ("consul", None, true),
            ("pki", Some(json!({"ttl": 30})), false),
            ("kubernetes", None, false),
            ("aws", Some(json!({"credential_type": "iam_user"})), true),
            ("aws", Some(json!({"credential_type": ["iam_user"]})), true),
            ("aws", Some(json!({"credential_type": "assumed_role"})), false),
            ("aws", Some(json!({"credential_type": ["iam_user", "federation_token"]})), false),
            ("aws", None, false),
        ];
        for (kind, role, want) in cases {
            assert_eq!(renewable(kind, role.as_ref()), *want, "{kind} {role:?}");
        }
    }
}
