//! Which Vault addresses a workload may name (`--allowed-vault-addrs`).
//!
//! A workload's `vault-addr` annotation is tenant input, while the daemon
//! sends its service-account JWT (login) or its Vault token to the server it
//! asks. So an address is used only when it parses strictly and an entry of
//! the allowlist names it for the workload's namespace; `http` only when an
//! entry names `http://`. An entry may be for one namespace only
//! (`https://vault.team-a.svc:8200@team-a`), or name the workload's own
//! namespace in its host (`https://vault.{namespace}.svc`).

use std::fmt;

/// A Vault address reduced to what is compared and sent: no user info, path,
/// query or fragment can survive [`Addr::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name (lower case), IPv4 address, or bracketed IPv6 address.
    pub host: String,
    /// The port; the scheme's default when the address has none.
    pub port: u16,
}

/// Why an address or an allowlist entry cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not `http://` or `https://`.
    Scheme,
    /// The host is empty or holds characters a host name cannot.
    Host,
    /// The port is not a number from 1 to 65535.
    Port,
    /// Something follows the host and port (a path, query, user info).
    Trailing,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Scheme => "the scheme is not http:// or https://",
            Invalid::Host => "the host is not a host name or an address",
            Invalid::Port => "the port is not a number from 1 to 65535",
            Invalid::Trailing => "only scheme://host[:port] is allowed (no path, query or user)",
        })
    }
}

/// Splits `scheme://rest` (scheme required when `default_scheme` is `None`).
fn split_scheme<'a>(
    text: &'a str,
    default_scheme: Option<&'a str>,
) -> Result<(&'a str, &'a str), Invalid> {
    match text.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => Ok((scheme, rest)),
        Some(_) => Err(Invalid::Scheme),
        None => default_scheme.map(|s| (s, text)).ok_or(Invalid::Scheme),
    }
}

/// Splits `host[:port]`, allowing one trailing `/`.
fn split_host_port(rest: &str) -> Result<(&str, Option<u16>), Invalid> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@', '\\']) || rest.contains(char::is_whitespace) {
        return Err(Invalid::Trailing);
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (inner, after) = v6.split_once(']').ok_or(Invalid::Host)?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| Invalid::Host)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(Invalid::Trailing)?),
            };
            (&rest[..inner.len() + 2], port)
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err(Invalid::Port),
        },
        None => None,
    };
    Ok((host, port))
}

/// Whether `host` is a DNS name (letters, digits, `-`, `.`; no empty label).
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Addr {
    /// Parses `scheme://host[:port]` (an optional trailing `/`), nothing more.
    pub fn parse(text: &str) -> Result<Addr, Invalid> {
        let (scheme, rest) = split_scheme(text.trim(), None)?;
        let (host, port) = split_host_port(rest)?;
        if !host.starts_with('[') && !is_host_name(host) {
            return Err(Invalid::Host);
        }
        Ok(Addr {
            scheme: scheme.to_string(),
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(if scheme == "https" { 443 } else { 80 }),
        })
    }
}

/// Whether `host` (as [`Addr::host`] holds it) is this machine: `localhost`,
/// `127.0.0.0/8` or `[::1]`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a credential sent to `url` crosses a network in cleartext: it
/// is `http://` and its host is not clearly loopback (one that does not
/// parse is taken as not).
pub fn cleartext_off_host(url: &str) -> bool {
    let url = url.trim().to_ascii_lowercase();
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    split_host_port(authority).map_or(true, |(host, _)| !is_loopback(host))
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// One allowlist entry: `[scheme://]host[:port][@namespace]`, where host
/// may be a `*.suffix` pattern and may hold `{namespace}`; no scheme means
/// `https`, no port any port, no `@namespace` every namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    scheme: String,
    /// The exact host, or for a pattern the suffix with its leading dot;
    /// `{namespace}` stands for the workload's namespace.
    host: String,
    pattern: bool,
    port: Option<u16>,
    /// The only namespace whose workloads may name it.
    namespace: Option<String>,
}

/// The placeholder for the workload's namespace in an entry's host.
const NAMESPACE: &str = "{namespace}";

/// A label that stands for [`NAMESPACE`] while an entry's host is checked.
const MARKER: &str = "namespace-0placeholder0";

/// Whether `name` is a Kubernetes namespace name (a DNS label).
fn is_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Entry {
    fn parse(text: &str) -> Result<Entry, Invalid> {
        let (text, namespace) = match text.rsplit_once('@') {
            Some((entry, ns)) if is_namespace(ns) => (entry, Some(ns.to_string())),
            Some(_) => return Err(Invalid::Trailing),
            None => (text, None),
        };
        let (scheme, rest) = split_scheme(text, Some("https"))?;
        // The placeholder is checked as the label standing in for it.
        let rest = rest.replace(NAMESPACE, MARKER);
        let (host, port) = split_host_port(&rest)?;
        let (pattern, name) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host),
        };
        let bracketed = name.starts_with('[') && !pattern;
        if !bracketed && !is_host_name(name) {
            return Err(Invalid::Host);
        }
        let name = name.to_ascii_lowercase().replace(MARKER, NAMESPACE);
        Ok(Entry {
            scheme: scheme.to_string(),
            host: if pattern { format!(".{name}") } else { name },
            pattern,
            port,
            namespace,
        })
    }

    fn allows(&self, addr: &Addr, namespace: &str) -> bool {
        let own = self.host.replace(NAMESPACE, namespace);
        let host = match self.pattern {
            // At least one label before the suffix: `*.x` does not match `x`.
            true => addr.host.len() > own.len() && addr.host.ends_with(&own),
            false => addr.host == own,
        };
        host && self.scheme == addr.scheme
            && self.port.is_none_or(|p| p == addr.port)
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// The Vault addresses workloads may name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Parses a comma-separated list; the error names the bad entry.
    pub fn parse(text: &str) -> Result<AllowList, String> {
        let entries = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Entry::parse(item).map_err(|why| format!("'{item}': {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowList { entries })
    }

    /// An allowlist of exactly these addresses (the configured servers).
    pub fn also(mut self, addr: &Addr) -> AllowList {
        self.entries.push(Entry {
            scheme: addr.scheme.clone(),
            host: addr.host.clone(),
            pattern: false,
            port: Some(addr.port),
            namespace: None,
        });
        self
    }

    /// Whether no entry was given.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries that let credentials go to a host that is not loopback
    /// over plain `http://`, as written (`http://host[:port]`).
    pub fn cleartext_entries(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.scheme == "http" && (e.pattern || !is_loopback(&e.host)))
            .map(|e| {
                let host = if e.pattern {
                    format!("*{}", e.host)
                } else {
                    e.host.clone()
                };
                match e.port {
                    Some(port) => format!("http://{host}:{port}"),
                    None => format!("http://{host}"),
                }
            })
            .collect()
    }

    /// Whether a workload in `namespace` may send the daemon's credentials
    /// to `addr`.
    pub fn allows(&self, addr: &Addr, namespace: &str) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.allows(addr, namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_is_http_to_a_host_that_is_not_loopback() {
        #[rustfmt::skip]
        let cases = [
            ("http://vault.corp:8200", true),
            ("http://10.0.0.7", true),
            ("http://[2001:db8::1]:8200/", true),
            ("http://kube.example/k8s/clusters/c-1", true),
            ("https://vault.corp:8200", false),
            ("http://127.0.0.1:8200", false),
            ("http://127.9.9.9", false),
            ("http://localhost:8080/", false),
            ("http://[::1]:8200", false),
            ("HTTP://Vault.corp", true),
            ("http://user@127.0.0.1", true),
            ("HTTP://LOCALHOST", false),
        ];
        for (url, want) in cases {
            assert_eq!(cleartext_off_host(url), want, "{url}");
        }
        let list = AllowList::parse(
            "http://vault.team.svc:8200,https://a.svc,http://127.0.0.1,http://*.vault.svc",
        )
        .unwrap();
        assert_eq!(
            list.cleartext_entries(),
            ["http://vault.team.svc:8200", "http://*.vault.svc"]
        );
    }

    #[test]
    fn addresses_parse_strictly() {
        let ok = [
            ("https://vault.team.svc:8200", "https://vault.team.svc:8200"),
            ("https://Vault.Example.COM", "https://vault.example.com:443"),
            ("http://127.0.0.1:8200/", "http://127.0.0.1:8200"),
            ("https://[::1]:8200", "https://[::1]:8200"),
        ];
        for (text, want) in ok {
            assert_eq!(
                Addr::parse(text).map(|a| a.to_string()),
                Ok(want.into()),
                "{text}"
            );
        }
        let bad = [
            ("vault:8200", Invalid::Scheme),
            ("ftp://vault", Invalid::Scheme),
            ("https://allowed.svc@evil.example:8200", Invalid::Trailing),
            ("https://vault.svc:8200/v1/../x", Invalid::Trailing),
            ("https://vault.svc:8200?x=1", Invalid::Trailing),
            ("https://vault.svc:8200#frag", Invalid::Trailing),
            ("https://", Invalid::Host),
            ("https://vault..svc", Invalid::Host),
            ("https://va_ult", Invalid::Host),
            ("https://[zz]:1", Invalid::Host),
            ("https://[::1]x", Invalid::Trailing),
            ("https://vault:0", Invalid::Port),
            ("https://vault:99999", Invalid::Port),
            ("https://vault:+80", Invalid::Port),
            ("https://vault:", Invalid::Port),
        ];
        for (text, want) in bad {
            assert_eq!(Addr::parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn the_allowlist_decides() {
        let list = AllowList::parse(
            "https://vault.team-a.svc:8200, *.vault.example.com, http://127.0.0.1:8201, \
             https://*.corp.example:8200",
        )
        .unwrap();
        let cases = [
            ("https://vault.team-a.svc:8200", true),
            ("https://vault.team-a.svc:8201", false),
            ("http://vault.team-a.svc:8200", false),
            ("https://vault.team-b.svc:8200", false),
            ("https://eu.vault.example.com:8200", true),
            ("https://a.b.vault.example.com", true),
            ("https://vault.example.com", false),
            ("https://evilvault.example.com", false),
            ("http://eu.vault.example.com:8200", false),
            ("http://127.0.0.1:8201", true),
            ("https://127.0.0.1:8201", false),
            ("http://127.0.0.1:8202", false),
            ("https://x.corp.example:8200", true),
            ("https://x.corp.example:443", false),
        ];
        for (addr, allowed) in cases {
            let addr = Addr::parse(addr).unwrap();
            assert_eq!(list.allows(&addr, "ns"), allowed, "{addr}");
        }
        assert!(!AllowList::default().allows(&Addr::parse("https://vault:8200").unwrap(), "ns"));
        let configured = Addr::parse("https://vault.infra.svc:8200").unwrap();
        assert!(AllowList::default()
            .also(&configured)
            .allows(&configured, "ns"));
    }

    #[test]
    fn an_entry_may_be_for_one_namespace_or_name_the_workloads_own() {
        let list = AllowList::parse(
            "https://vault.team-a.svc:8200@team-a, https://vault.{namespace}.svc, \
             https://*.{namespace}.corp.example@team-c",
        )
        .unwrap();
        #[rustfmt::skip]
        let cases = [
            ("https://vault.team-a.svc:8200", "team-a", true),
            ("https://vault.team-a.svc:8200", "team-b", false),
            ("https://vault.team-b.svc", "team-b", true),
            ("https://vault.team-b.svc:8200", "team-b", true),
            ("https://vault.team-b.svc", "team-a", false),
            ("https://vault.team-b.svc", "b", false),
            ("https://x.team-c.corp.example", "team-c", true),
            ("https://x.team-d.corp.example", "team-d", false),
            ("https://x.team-d.corp.example", "team-c", false),
        ];
        for (addr, namespace, allowed) in cases {
            let addr = Addr::parse(addr).unwrap();
            assert_eq!(
                list.allows(&addr, namespace),
                allowed,
                "{addr} from {namespace}"
            );
        }
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            AllowList::parse("https://ok.svc, ftp://x").unwrap_err(),
            "'ftp://x': the scheme is not http:// or https://"
        );
        assert!(AllowList::parse("https://a@B_x").is_err());
        assert!(AllowList::parse("https://a@").is_err());
        assert!(AllowList::parse("https://{name}.svc").is_err());
        assert!(AllowList::parse("*.").is_err());
        assert!(AllowList::parse(" , ").unwrap().is_empty());
    }
}
