//! Parsing of the secret references the Bank-Vaults secrets webhook injects.
//!
//! Pure functions over strings: no I/O, no allocation beyond the results, linear in the input,
//! and never a panic, whatever the value holds (values are user-controlled pod-template text).

use std::fmt;

/// Values longer than this are rejected unread, so a hostile manifest cannot make a pass slow.
const MAX_VALUE_LEN: usize = 64 * 1024;

/// Which secrets-webhook provider a reference is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// HashiCorp Vault, written `vault:` in references.
    Vault,
    /// OpenBao, written `bao:` in references.
    Bao,
}

impl Provider {
    /// The word before the `:` in a reference and in a key.
    fn label(self) -> &'static str {
        match self {
            Provider::Vault => "vault",
            Provider::Bao => "bao",
        }
    }
}

/// One watched secret: the provider plus the KV v2 API path exactly as the webhook reads it
/// (e.g. `secret/data/accounts/aws`).
///
/// Values produced by this module always carry a path that passes the module's path rules
/// (non-empty, no leading or trailing `/`, no empty or `..` segment, no whitespace, control
/// character, `#` or `?`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// The provider whose server holds the secret.
    pub provider: Provider,
    /// The KV v2 API path, e.g. `secret/data/accounts/aws`.
    pub path: String,
}

impl SecretRef {
    /// Stable text form used as a key in the state annotation: `vault:PATH` or `bao:PATH`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.provider.label(), self.path)
    }

    /// Inverse of `key`; None for anything `key` cannot have produced from a reference this
    /// module returned (unknown provider, or a path that breaks the path rules).
    pub fn from_key(key: &str) -> Option<SecretRef> {
        let (provider, path) = split_provider(key)?;
        check_path(path).ok()?;
        Some(SecretRef {
            provider,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for SecretRef {
    /// Writes `key()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider.label(), self.path)
    }
}

/// Why a value was not understood. Display gives a short lowercase phrase, never echoing the
/// value itself (values can be secrets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Nothing between the prefix and the first `#` (or the end).
    EmptyPath,
    /// The path breaks the path rules (leading or trailing `/`, empty or `..` segment,
    /// whitespace, control character or `?`).
    BadPath,
    /// A whole-value reference without `#KEY`.
    MissingKey,
    /// A `#` followed by nothing before the next `#` or the end.
    EmptyKey,
    /// The part after the last allowed `#` is not all ASCII digits.
    BadVersion,
    /// More `#`-separated parts than the format allows.
    TooManyParts,
    /// An inline `${vault:...` or `${bao:...` without its closing brace.
    Unterminated,
    /// The value is longer than 64 KiB and was not read.
    TooLong,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::EmptyPath => "empty path",
            Malformed::BadPath => "invalid path",
            Malformed::MissingKey => "no key after the path",
            Malformed::EmptyKey => "empty key after the path",
            Malformed::BadVersion => "version is not a number",
            Malformed::TooManyParts => "too many '#'-separated parts",
            Malformed::Unterminated => "no closing brace",
            Malformed::TooLong => "value longer than 64 KiB",
        })
    }
}

impl std::error::Error for Malformed {}

/// Every reference found in one env value of a container/initContainer, in order of appearance.
/// Returns Ok for each watched reference, Err for each malformed one; ignored forms (pinned
/// versions, `vault:login`, Transit ciphertexts, `>>` write-on-inject, ordinary text) produce
/// nothing. Duplicates are kept. A value over 64 KiB yields exactly `[Err(TooLong)]`.
pub fn scan_value(value: &str) -> Vec<Result<SecretRef, Malformed>> {
    if value.len() > MAX_VALUE_LEN {
        return vec![Err(Malformed::TooLong)];
    }
    if let Some((provider, rest)) = split_provider(value) {
        // A whole-value reference is only that: its key may hold `${...}` text of its own.
        return parse_whole(provider, rest).into_iter().collect();
    }
    if value.starts_with(">>") && split_provider(&value[2..]).is_some() {
        return Vec::new();
    }
    scan_inline(value)
}

/// The secret a write-on-inject value names (`>>vault:PATH#…` or `>>bao:PATH#…`, e.g.
/// `>>vault:pki/issue/web#certificate#{"common_name":"a.example"}`): only its path matters, a
/// dynamic engine's endpoint whose credentials are made at pod start. None when the value is not
/// a write-on-inject reference; Err for a bad path, or `TooLong` for a value over 64 KiB.
pub fn scan_write_on_inject(value: &str) -> Option<Result<SecretRef, Malformed>> {
    let (provider, rest) = split_provider(value.strip_prefix(">>")?)?;
    if value.len() > MAX_VALUE_LEN {
        return Some(Err(Malformed::TooLong));
    }
    let (path, _) = split_hash(rest);
    Some(check_path(path).map(|()| SecretRef {
        provider,
        path: path.to_owned(),
    }))
}

/// Every path listed in a from-path annotation value (comma separated `PATH` or pinned
/// `PATH#VERSION`), for the given provider. Items are trimmed and empty items skipped; a pinned
/// item produces nothing. A value over 64 KiB yields exactly `[Err(TooLong)]`.
pub fn scan_from_path(value: &str, provider: Provider) -> Vec<Result<SecretRef, Malformed>> {
    if value.len() > MAX_VALUE_LEN {
        return vec![Err(Malformed::TooLong)];
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .filter_map(|item| {
            let (path, version) = split_hash(item);
            if version.is_some_and(|v| v.contains('#')) {
                return Some(Err(Malformed::TooManyParts));
            }
            if let Err(e) = check_path(path) {
                return Some(Err(e));
            }
            unless_pinned(provider, path, version).transpose()
        })
        .collect()
}

/// Finds each `${vault:...}` / `${bao:...}` in `value`; stops at the first unterminated one,
/// since everything after it belongs to that broken reference.
fn scan_inline(value: &str) -> Vec<Result<SecretRef, Malformed>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = value[from..].find("${") {
        let open = from + at + 2;
        let Some((provider, rest)) = split_provider(&value[open..]) else {
            from = open;
            continue;
        };
        let body = value.len() - rest.len();
        let Some(close) = closing_brace(value, body) else {
            found.push(Err(Malformed::Unterminated));
            break;
        };
        found.extend(parse_whole(provider, &value[body..close]));
        from = close + 1;
    }
    found
}

/// Byte index of the `}` that closes a `${` opened just before `start`, counting nested braces
/// (keys may be templates like `${.X}`). Braces are ASCII, so the index is a char boundary.
fn closing_brace(value: &str, start: usize) -> Option<usize> {
    let mut depth = 1usize;
    for (i, b) in value.bytes().enumerate().skip(start) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses the text after `vault:` / `bao:`: None for the forms that are not watched
/// (login, Transit ciphertext, pinned version).
fn parse_whole(provider: Provider, rest: &str) -> Option<Result<SecretRef, Malformed>> {
    if rest == "login" || is_transit(rest) {
        return None;
    }
    let (path, tail) = split_hash(rest);
    let Some(tail) = tail else {
        // Report a bad path before the missing key: it is the first thing wrong.
        return Some(check_path(path).and(Err(Malformed::MissingKey)));
    };
    let (key, version) = split_hash(tail);
    if version.is_some_and(|v| v.contains('#')) {
        return Some(Err(Malformed::TooManyParts));
    }
    if let Err(e) = check_path(path) {
        return Some(Err(e));
    }
    if key.is_empty() {
        return Some(Err(Malformed::EmptyKey));
    }
    unless_pinned(provider, path, version).transpose()
}

/// The reference for an already checked `path`, None when `version` pins it, Err when the
/// version is not a number.
fn unless_pinned(
    provider: Provider,
    path: &str,
    version: Option<&str>,
) -> Result<Option<SecretRef>, Malformed> {
    match version {
        None => Ok(Some(SecretRef {
            provider,
            path: path.to_owned(),
        })),
        Some(v) if is_number(v) => Ok(None),
        Some(_) => Err(Malformed::BadVersion),
    }
}

/// Transit ciphertexts look like `v1:BASE64` and never contain `#`.
fn is_transit(rest: &str) -> bool {
    let Some(after_v) = rest.strip_prefix('v') else {
        return false;
    };
    let digits = after_v.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && after_v[digits..].starts_with(':') && !rest.contains('#')
}

/// Splits off a leading `vault:` or `bao:`.
fn split_provider(text: &str) -> Option<(Provider, &str)> {
    if let Some(rest) = text.strip_prefix("vault:") {
        Some((Provider::Vault, rest))
    } else {
        text.strip_prefix("bao:").map(|rest| (Provider::Bao, rest))
    }
}

/// Splits at the first `#`, if any.
fn split_hash(text: &str) -> (&str, Option<&str>) {
    match text.split_once('#') {
        Some((head, tail)) => (head, Some(tail)),
        None => (text, None),
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The path rules: a relative API path the webhook could read, and safe to put in a URL and a
/// log line as is.
fn check_path(path: &str) -> Result<(), Malformed> {
    if path.is_empty() {
        return Err(Malformed::EmptyPath);
    }
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '#' || c == '?';
    // Splitting on `/` turns a leading, trailing or doubled slash into an empty segment.
    if path.chars().any(bad_char) || path.split('/').any(|s| s.is_empty() || s == "..") {
        return Err(Malformed::BadPath);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Malformed::*;
    use Provider::{Bao, Vault};

    fn r(provider: Provider, path: &str) -> Result<SecretRef, Malformed> {
        Ok(SecretRef {
            provider,
            path: path.to_owned(),
        })
    }

    #[test]
    fn scan_value_table() {
        let cases: Vec<(&str, Vec<Result<SecretRef, Malformed>>)> = vec![
            // The original tool's examples.
            (
                "vault:secret/data/accounts/aws#AWS_SECRET_ACCESS_KEY",
                vec![r(Vault, "secret/data/accounts/aws")],
            ),
            ("vault:secret/data/mysql#${.MYSQL_PASSWORD}#1", vec![]),
            (
                "vault:secret/data/mysql#${.MYSQL_PASSWORD}",
                vec![r(Vault, "secret/data/mysql")],
            ),
            // Mounts with slashes, keys with odd text, non-ASCII paths.
            (
                "vault:team/kv/data/app#password",
                vec![r(Vault, "team/kv/data/app")],
            ),
            (
                "vault:secret/data/x#${ .a }-${ .b }",
                vec![r(Vault, "secret/data/x")],
            ),
            ("vault:secret/data/x#k y", vec![r(Vault, "secret/data/x")]),
            ("vault:sécret/dâta/€#k", vec![r(Vault, "sécret/dâta/€")]),
            ("vault:secret/data/x#k#007", vec![]),
            // OpenBao.
            ("bao:secret/data/db#user", vec![r(Bao, "secret/data/db")]),
            ("bao:secret/data/db#user#3", vec![]),
            ("bao:login", vec![]),
            ("bao:v2:abcd==", vec![]),
            ("bao:secret", vec![Err(MissingKey)]),
            // Not watched.
            ("vault:login", vec![]),
            (
                "vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==",
                vec![],
            ),
            ("vault:v10:abc", vec![]),
            (">>vault:secret/data/out#key", vec![]),
            (">>bao:secret/data/out#key", vec![]),
            (">>vault:secret/data/out#${vault:secret/data/in#k}", vec![]),
            ("${>>vault:secret/data/out#key}", vec![]),
            ("plain value", vec![]),
            ("", vec![]),
            ("http://vault:8200", vec![]),
            ("https://bao:8200/v1", vec![]),
            ("myvault:secret/data/x#k", vec![]),
            ("Vault:secret/data/x#k", vec![]),
            (" vault:secret/data/x#k", vec![]),
            ("${vault", vec![]),
            ("$${{vault:}", vec![]),
            // Near misses of the Transit and login forms are ordinary references.
            ("vault:v1:abc#k", vec![r(Vault, "v1:abc")]),
            ("vault:login#k", vec![r(Vault, "login")]),
            ("vault:v:abc", vec![Err(MissingKey)]),
            ("vault:vx1:abc", vec![Err(MissingKey)]),
            ("vault:logins", vec![Err(MissingKey)]),
            // Malformed whole values.
            ("vault:", vec![Err(EmptyPath)]),
            ("vault:#", vec![Err(EmptyPath)]),
            ("vault:#key", vec![Err(EmptyPath)]),
            ("vault:#key#1", vec![Err(EmptyPath)]),
            ("vault:secret/data/x", vec![Err(MissingKey)]),
            ("vault:secret/data/x#", vec![Err(EmptyKey)]),
            ("vault:secret/data/x##1", vec![Err(EmptyKey)]),
            ("vault:secret/data/x#k#", vec![Err(BadVersion)]),
            ("vault:secret/data/x#k#v1", vec![Err(BadVersion)]),
            ("vault:secret/data/x#k#-1", vec![Err(BadVersion)]),
            ("vault:secret/data/x#k#١", vec![Err(BadVersion)]),
            ("vault:secret/data/x#k#1#2", vec![Err(TooManyParts)]),
            ("vault:a#b#c#d#e", vec![Err(TooManyParts)]),
            ("vault:/secret/data/x#k", vec![Err(BadPath)]),
            ("vault:secret/data/x/#k", vec![Err(BadPath)]),
            ("vault:secret//data/x#k", vec![Err(BadPath)]),
            ("vault:secret/../x#k", vec![Err(BadPath)]),
            ("vault:..#k", vec![Err(BadPath)]),
            ("vault:secret/data/x?version=1#k", vec![Err(BadPath)]),
            ("vault:secret/data x#k", vec![Err(BadPath)]),
            ("vault:secret/data\tx#k", vec![Err(BadPath)]),
            ("vault:secret/data/x\n#k", vec![Err(BadPath)]),
            ("vault:secret/data/\u{0}#k", vec![Err(BadPath)]),
            ("vault:secret/data/\u{a0}#k", vec![Err(BadPath)]),
            ("vault:/", vec![Err(BadPath)]),
            // `.` and `...` segments are not `..`.
            ("vault:a/.../b#k", vec![r(Vault, "a/.../b")]),
            // A whole value is not also scanned for inline references.
            (
                "vault:secret/data/a#${vault:secret/data/b}",
                vec![r(Vault, "secret/data/a")],
            ),
            // `#` splits the parts as the webhook splits them, even inside a key template.
            (
                "vault:secret/data/a#${vault:secret/data/b#k}",
                vec![Err(BadVersion)],
            ),
            // Inline forms.
            (
                "postgres://${vault:secret/data/db#user}:${vault:secret/data/db#pass}@host",
                vec![r(Vault, "secret/data/db"), r(Vault, "secret/data/db")],
            ),
            (
                "${vault:secret/data/a#k}${bao:kv/data/b#k}",
                vec![r(Vault, "secret/data/a"), r(Bao, "kv/data/b")],
            ),
            (
                "pw=${vault:secret/data/mysql#${.MYSQL_PASSWORD}} end",
                vec![r(Vault, "secret/data/mysql")],
            ),
            (
                "${vault:secret/data/a#${ .x }${ .y }}/${vault:team/kv/data/b#k}",
                vec![r(Vault, "secret/data/a"), r(Vault, "team/kv/data/b")],
            ),
            ("x ${vault:secret/data/a#k#2} y", vec![]),
            (
                "${vault:secret/data/a#k#2}${vault:secret/data/b#k}",
                vec![r(Vault, "secret/data/b")],
            ),
            ("${vault:login} ${vault:v1:abc} ${bao:v3:xyz}", vec![]),
            ("${vault:secret/data/a}", vec![Err(MissingKey)]),
            ("a ${vault:} b", vec![Err(EmptyPath)]),
            (
                "${vault:secret/data/a#k#x} ${vault:secret/data/b#k}",
                vec![Err(BadVersion), r(Vault, "secret/data/b")],
            ),
            (
                "${vault:secret/data/a#k} ${vault:secret/data/b#k",
                vec![r(Vault, "secret/data/a"), Err(Unterminated)],
            ),
            (
                "${vault:secret/data/a#${.k} ${vault:secret/data/b#k}",
                vec![Err(Unterminated)],
            ),
            (
                "${${vault:secret/data/a#k}}",
                vec![r(Vault, "secret/data/a")],
            ),
            ("é${vault:€/data/🙂#é}€", vec![r(Vault, "€/data/🙂")]),
            ("${ vault:secret/data/a#k}", vec![]),
            ("${VAULT:secret/data/a#k}", vec![]),
        ];
        for (input, want) in cases {
            assert_eq!(scan_value(input), want, "input {input:?}");
        }
    }

    #[test]
    fn scan_write_on_inject_table() {
        let long = format!(">>vault:pki/issue/web#c#{}", "x".repeat(MAX_VALUE_LEN));
        let cases: Vec<(&str, Option<Result<SecretRef, Malformed>>)> = vec![
            (
                r#">>vault:pki/issue/web#certificate#{"common_name":"a.example"}"#,
                Some(r(Vault, "pki/issue/web")),
            ),
            (
                ">>bao:database/creds/app#username",
                Some(r(Bao, "database/creds/app")),
            ),
            (
                ">>vault:aws/creds/deploy",
                Some(r(Vault, "aws/creds/deploy")),
            ),
            (">>vault:#k", Some(Err(EmptyPath))),
            (">>vault:pki//issue#k", Some(Err(BadPath))),
            (">>vault:pki/issue/a b#k", Some(Err(BadPath))),
            (&long, Some(Err(TooLong))),
            ("vault:pki/issue/web#certificate", None),
            (">>other:pki/issue/web#k", None),
            ("text >>vault:pki/issue/web#k", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(scan_write_on_inject(value), want, "{value}");
        }
    }

    #[test]
    fn scan_from_path_table() {
        let cases: Vec<(&str, Vec<Result<SecretRef, Malformed>>)> = vec![
            ("", vec![]),
            (" , ,", vec![]),
            ("secret/data/a", vec![r(Vault, "secret/data/a")]),
            (
                "secret/data/a, team/kv/data/b ,secret/data/a",
                vec![
                    r(Vault, "secret/data/a"),
                    r(Vault, "team/kv/data/b"),
                    r(Vault, "secret/data/a"),
                ],
            ),
            (
                "secret/data/a#3,secret/data/b",
                vec![r(Vault, "secret/data/b")],
            ),
            ("secret/data/a#", vec![Err(BadVersion)]),
            ("secret/data/a#x", vec![Err(BadVersion)]),
            ("secret/data/a#1#2", vec![Err(TooManyParts)]),
            ("#1", vec![Err(EmptyPath)]),
            ("/secret/data/a", vec![Err(BadPath)]),
            ("secret/data/a/", vec![Err(BadPath)]),
            ("secret//a", vec![Err(BadPath)]),
            ("secret/../a", vec![Err(BadPath)]),
            ("secret/da ta", vec![Err(BadPath)]),
            ("secret/a?x=1", vec![Err(BadPath)]),
            (
                "bad path,secret/data/ok",
                vec![Err(BadPath), r(Vault, "secret/data/ok")],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(scan_from_path(input, Vault), want, "input {input:?}");
        }
        assert_eq!(scan_from_path("kv/data/x", Bao), vec![r(Bao, "kv/data/x")]);
    }

    #[test]
    fn length_limit() {
        let at_limit = format!("vault:secret/data/a#{}", "k".repeat(MAX_VALUE_LEN - 20));
        assert_eq!(at_limit.len(), MAX_VALUE_LEN);
        assert_eq!(scan_value(&at_limit), vec![r(Vault, "secret/data/a")]);
        let over = format!("{at_limit}k");
        assert_eq!(scan_value(&over), vec![Err(TooLong)]);
        assert_eq!(
            scan_value(&"x".repeat(MAX_VALUE_LEN + 1)),
            vec![Err(TooLong)]
        );
        assert_eq!(scan_from_path(&over, Bao), vec![Err(TooLong)]);
    }

    #[test]
    fn worst_case_values_stay_linear() {
        // Each would take seconds if any step rescanned the rest of the value per occurrence.
        let n = MAX_VALUE_LEN / 8;
        assert_eq!(scan_value(&"${".repeat(n * 4)), vec![]);
        let nested = format!("${{vault:a#{}", "{".repeat(MAX_VALUE_LEN - 20));
        assert_eq!(scan_value(&nested), vec![Err(Unterminated)]);
        let many = "${vault:a#k}".repeat(MAX_VALUE_LEN / 12);
        assert_eq!(scan_value(&many).len(), MAX_VALUE_LEN / 12);
        let commas = ",".repeat(MAX_VALUE_LEN);
        assert_eq!(scan_from_path(&commas, Vault), vec![]);
    }

    #[test]
    fn key_round_trip() {
        for (provider, path, key) in [
            (
                Vault,
                "secret/data/accounts/aws",
                "vault:secret/data/accounts/aws",
            ),
            (Bao, "team/kv/data/app", "bao:team/kv/data/app"),
            (Vault, "v1:x/é🙂", "vault:v1:x/é🙂"),
        ] {
            let reference = SecretRef {
                provider,
                path: path.to_owned(),
            };
            assert_eq!(reference.key(), key);
            assert_eq!(reference.to_string(), key);
            assert_eq!(SecretRef::from_key(key), Some(reference));
        }
    }

    #[test]
    fn from_key_rejects_what_key_cannot_produce() {
        for bad in [
            "",
            "vault:",
            "bao:",
            "secret/data/a",
            "Vault:secret/data/a",
            "openbao:secret/data/a",
            ":secret/data/a",
            "vault:/secret/data/a",
            "vault:secret/data/a/",
            "vault:secret//a",
            "vault:secret/../a",
            "vault:secret/data/a#k",
            "vault:secret/data/a?x",
            "vault:secret/data a",
            "bao:secret/data/\u{1b}",
        ] {
            assert_eq!(SecretRef::from_key(bad), None, "key {bad:?}");
        }
    }

    #[test]
    fn malformed_display_is_short_fixed_lowercase() {
        let all = [
            EmptyPath,
            BadPath,
            MissingKey,
            EmptyKey,
            BadVersion,
            TooManyParts,
            Unterminated,
            TooLong,
        ];
        let texts: Vec<String> = all.iter().map(ToString::to_string).collect();
        for text in &texts {
            assert!(text.len() < 40, "{text:?}");
            assert!(
                text.starts_with(|c: char| c.is_ascii_lowercase()),
                "{text:?}"
            );
        }
        let mut unique = texts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), texts.len());
        // The error is the same whatever secret-looking text caused it.
        assert_eq!(scan_value("vault:hunter2/p4ss"), vec![Err(MissingKey)]);
    }

    /// splitmix64: a few lines, good enough spread for input generation.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The path rules restated independently of `check_path`.
    fn follows_path_rules(path: &str) -> bool {
        !path.is_empty()
            && !path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && !path.split('/').any(|s| s == "..")
            && !path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "#?".contains(c))
    }

    fn check_results(input: &str, results: &[Result<SecretRef, Malformed>]) {
        for reference in results.iter().flatten() {
            assert!(follows_path_rules(&reference.path), "input {input:?}");
            assert!(input.contains(&reference.path), "input {input:?}");
            assert_eq!(
                SecretRef::from_key(&reference.key()).as_ref(),
                Some(reference)
            );
        }
    }

    #[test]
    fn fuzz_never_panics_and_paths_follow_rules() {
        const PIECES: &[&str] = &[
            "vault:", "bao:", "${", "}", "{", "#", "/", ">>", "0", "1", "9", "a", "Z", "secret",
            "data", "v1:", "login", " ", "\t", "\n", "\u{0}", "\u{7f}", "\u{85}", "é", "€", "🙂",
            "..", ".", ",", "?", "$", ":",
        ];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut input = String::new();
        let mut watched = 0usize;
        for _ in 0..100_000 {
            input.clear();
            // Start a third of the inputs with a prefix so whole-value forms get coverage too.
            match rng.below(6) {
                0 => input.push_str("vault:"),
                1 => input.push_str("bao:"),
                _ => {}
            }
            for _ in 0..rng.below(16) {
                input.push_str(PIECES[rng.below(PIECES.len())]);
            }
            let found = scan_value(&input);
            check_results(&input, &found);
            watched += found.iter().flatten().count();
            if !input.contains("vault:") && !input.contains("bao:") {
                assert!(found.is_empty(), "input {input:?}");
            }
            for provider in [Vault, Bao] {
                let listed = scan_from_path(&input, provider);
                check_results(&input, &listed);
                assert!(listed.iter().flatten().all(|r| r.provider == provider));
            }
        }
        // Guards against a generator that never reaches the accepting paths.
        assert!(
            watched > 1_000,
            "only {watched} watched references generated"
        );
    }
}
