//! Which proxy a request goes through: the rule of Go's `net/http`
//! (`ProxyFromEnvironment`), which the original tool follows, for the HTTP
//! clients and the watch streams alike.
//!
//! `HTTPS_PROXY` for `https://` targets, `HTTP_PROXY` for `http://` ones
//! (the upper-case name wins over the lower-case one); `ALL_PROXY` is not
//! read. `NO_PROXY` lists what goes direct, comma separated and trimmed:
//! `*`, an IP address, a CIDR (`10.0.0.0/8`), or a domain (`example.com`:
//! it and its subdomains; `.example.com` or `*.example.com`: its
//! subdomains only), each optionally with `:port`. `localhost` and
//! loopback addresses always go direct. Only `http://` proxies are
//! supported (a CONNECT tunnel, TLS inside it end to end); any other
//! scheme is refused at start.

use std::net::IpAddr;

/// A proxy: where it listens, and its credentials if the URL had any.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Its host (an IPv6 address without brackets).
    pub host: String,
    /// Its port (80 when the URL has none).
    pub port: u16,
    /// `user:password` for `Proxy-Authorization: Basic`, as the URL had it.
    pub userinfo: Option<String>,
}

impl Proxy {
    /// `http://[user:password@]host[:port]` (no password), for ureq and logs.
    pub fn url(&self, with_userinfo: bool) -> String {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match (&self.userinfo, with_userinfo) {
            (Some(userinfo), true) => format!("http://{userinfo}@{host}:{}", self.port),
            _ => format!("http://{host}:{}", self.port),
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url(false))
    }
}

/// One `NO_PROXY` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Direct {
    /// `*`: nothing is proxied.
    All,
    /// An address and how many leading bits must match (all for a plain
    /// address), and a port if one was given.
    Net(IpAddr, u8, Option<u16>),
    /// A domain with its leading dot; `itself`: the bare domain matches too.
    Domain {
        suffix: String,
        itself: bool,
        port: Option<u16>,
    },
}

/// The proxies of the environment and what goes direct.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxies {
    https: Option<Proxy>,
    http: Option<Proxy>,
    direct: Vec<Direct>,
    /// `ALL_PROXY` is set, and not used: worth a word at start.
    pub all_proxy_ignored: bool,
}

impl Proxies {
    /// The proxies `env` names; the error names a setting this does not
    /// support (a `socks5://` or `https://` proxy), which would otherwise be
    /// ignored or misused without a word.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Proxies, String> {
        let var = |upper: &str| {
            let lower = upper.to_ascii_lowercase();
            let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
            match set(upper) {
                Some(value) => Some((upper.to_string(), value)),
                None => set(&lower).map(|value| (lower.clone(), value)),
            }
        };
        let proxy = |upper: &str| -> Result<Option<Proxy>, String> {
            match var(upper) {
                None => Ok(None),
                Some((name, value)) => parse_proxy(value.trim())
                    .map(Some)
                    .map_err(|why| format!("{name}: {why}")),
            }
        };
        let direct = var("NO_PROXY")
            .map(|(_, value)| value)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(parse_direct)
            .collect();
        Ok(Proxies {
            https: proxy("HTTPS_PROXY")?,
            http: proxy("HTTP_PROXY")?,
            direct,
            all_proxy_ignored: var("ALL_PROXY").is_some(),
        })
    }

    /// The proxy requests to base URL `url` (`scheme://host[:port][/path]`)
    /// go through; `None`: direct, or a URL that does not parse (it fails
    /// where it is used).
    pub fn for_url(&self, url: &str) -> Option<&Proxy> {
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let origin = match url[after_scheme..].find('/') {
            Some(i) => &url[..after_scheme + i],
            None => url,
        };
        let addr = crate::policy::allow::Addr::parse(origin).ok()?;
        let host = addr.host.trim_start_matches('[').trim_end_matches(']');
        self.for_target(&addr.scheme, host, addr.port)
    }

    /// The proxy a request to `scheme://host:port` goes through; `None`:
    /// direct. `host` is lower case, an IPv6 address without brackets.
    pub fn for_target(&self, scheme: &str, host: &str, port: u16) -> Option<&Proxy> {
        let proxy = match scheme {
            "https" => self.https.as_ref()?,
            "http" => self.http.as_ref()?,
            _ => return None,
        };
        let ip = host.parse::<IpAddr>().ok();
        if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        let direct = self
            .direct
            .iter()
            .any(|entry| matches(entry, host, ip, port));
        (!direct).then_some(proxy)
    }
}

/// `http://[user:password@]host[:port][/]`, or the same without a scheme.
fn parse_proxy(text: &str) -> Result<Proxy, String> {
    let rest = match text.split_once("://") {
        None => text,
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "a {scheme}:// proxy is not supported (only http://, through which TLS goes end to end)"
            ))
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo.to_string()), hostport),
        None => (None, rest),
    };
    let (host, port) = split_port(hostport).ok_or("expected http://host[:port]")?;
    if host.is_empty() || hostport.contains('/') {
        return Err("expected http://host[:port]".into());
    }
    Ok(Proxy {
        host: host.to_ascii_lowercase(),
        port: port.unwrap_or(80),
        userinfo,
    })
}

/// `host[:port]` or `[v6][:port]` → the host (no brackets) and the port.
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match text.rsplit_once(':') {
        // A bare IPv6 address has colons and no port.
        Some((host, _)) if host.contains(':') => Some((text, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

fn parse_direct(item: &str) -> Direct {
    if item == "*" {
        return Direct::All;
    }
    let item = item.to_ascii_lowercase();
    if let Some((net, bits)) = item.split_once('/') {
        if let (Ok(ip), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u8>()) {
            return Direct::Net(ip, bits, None);
        }
    }
    let (host, port) = split_port(&item).unwrap_or((&item, None));
    if let Ok(ip) = host.parse::<IpAddr>() {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        return Direct::Net(ip, bits, port);
    }
    let host = host.strip_prefix('*').unwrap_or(host);
    let (suffix, itself) = match host.strip_prefix('.') {
        Some(_) => (host.to_string(), false),
        None => (format!(".{host}"), true),
    };
    Direct::Domain {
        suffix,
        itself,
        port,
    }
}

fn matches(entry: &Direct, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
    let port_ok = |want: &Option<u16>| want.is_none_or(|p| p == port);
    match entry {
        Direct::All => true,
        Direct::Net(net, bits, want) => {
            ip.is_some_and(|ip| in_net(ip, *net, *bits)) && port_ok(want)
        }
        Direct::Domain {
            suffix,
            itself,
            port: want,
        } => {
            (host.ends_with(suffix.as_str()) || (*itself && host == &suffix[1..])) && port_ok(want)
        }
    }
}

/// Whether `ip` is in `net`/`bits`.
fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u8)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u8),
        _ => return false,
    };
    let shift = u32::from(width - bits.min(width));
    // A shift by the whole width (a /0) would overflow: everything matches.
    shift >= 128 || (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(vars: &[(&str, &str)]) -> Result<Proxies, String> {
        Proxies::from_env(&|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn each_scheme_has_its_proxy_and_all_proxy_is_not_read() {
        let p = proxies(&[
            ("HTTPS_PROXY", "http://secure.proxy:3128"),
            ("http_proxy", "plain.proxy"),
            ("ALL_PROXY", "http://all.proxy:1"),
        ])
        .unwrap();
        let via = |scheme, host| p.for_target(scheme, host, 443).map(|p| p.url(false));
        assert_eq!(
            via("https", "vault.corp"),
            Some("http://secure.proxy:3128".into())
        );
        assert_eq!(
            via("http", "vault.corp"),
            Some("http://plain.proxy:80".into())
        );
        let none = proxies(&[("ALL_PROXY", "http://all.proxy:1")]).unwrap();
        assert_eq!(none.for_target("https", "vault.corp", 443), None);
        assert!(none.all_proxy_ignored && p.all_proxy_ignored);
        let upper_wins = proxies(&[
            ("HTTPS_PROXY", "http://upper"),
            ("https_proxy", "http://lower"),
        ])
        .unwrap();
        assert_eq!(upper_wins.https.unwrap().host, "upper");
    }

    #[test]
    fn no_proxy_is_trimmed_and_matches_domains_addresses_and_cidrs() {
        let p = proxies(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("NO_PROXY", "a.com, .svc ,*.cluster.local,10.0.0.0/8,192.168.1.7,[fd00::1]:8200,vault.corp:8200,fd00:ab::/32"),
        ])
        .unwrap();
        #[rustfmt::skip]
        let cases = [
            ("a.com", 443, true),
            ("x.a.com", 443, true),
            ("xa.com", 443, false),
            ("kubernetes.default.svc", 443, true),
            ("svc", 443, false),
            ("vault.cluster.local", 443, true),
            ("cluster.local", 443, false),
            ("10.3.4.5", 443, true),
            ("11.3.4.5", 443, false),
            ("192.168.1.7", 443, true),
            ("192.168.1.8", 443, false),
            ("fd00::1", 8200, true),
            ("fd00::1", 443, false),
            ("vault.corp", 8200, true),
            ("vault.corp", 443, false),
            ("fd00:ab:1::5", 443, true),
            ("localhost", 443, true),
            ("127.0.0.1", 443, true),
            ("::1", 443, true),
            ("api.example", 443, false),
        ];
        for (host, port, direct) in cases {
            assert_eq!(
                p.for_target("https", host, port).is_none(),
                direct,
                "{host}:{port}"
            );
        }
        let all = proxies(&[("HTTPS_PROXY", "http://proxy"), ("no_proxy", "*")]).unwrap();
        assert_eq!(all.for_target("https", "api.example", 443), None);
    }

    #[test]
    fn a_base_url_finds_its_proxy() {
        let p = proxies(&[("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", ".svc")]).unwrap();
        assert!(p
            .for_url("https://api.example:6443/k8s/clusters/c-1")
            .is_some());
        assert!(p.for_url("https://vault.vault.svc:8200").is_none());
        assert!(p.for_url("https://[fd00::1]:8200/").is_some());
        assert!(p.for_url("not a url").is_none());
    }

    #[test]
    fn unsupported_proxies_are_refused_by_name_and_credentials_kept_out_of_logs() {
        for (value, why) in [
            (
                "socks5://proxy:1080",
                "HTTPS_PROXY: a socks5:// proxy is not supported",
            ),
            (
                "https://proxy:443",
                "HTTPS_PROXY: a https:// proxy is not supported",
            ),
            (
                "http://proxy:port",
                "HTTPS_PROXY: expected http://host[:port]",
            ),
            (
                "http://proxy/path",
                "HTTPS_PROXY: expected http://host[:port]",
            ),
        ] {
            let error = proxies(&[("HTTPS_PROXY", value)]).unwrap_err();
            assert!(error.starts_with(why), "{value}: {error}");
        }
        let p = proxies(&[("HTTP_PROXY", "http://user:s3cret@[fd00::2]:3128/")]).unwrap();
        let proxy = p.http.as_ref().unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("fd00::2", 3128));
        assert_eq!(proxy.url(false), "http://[fd00::2]:3128");
        assert_eq!(proxy.url(true), "http://user:s3cret@[fd00::2]:3128");
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}
