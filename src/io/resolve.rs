//! Name resolution for the HTTP clients. ureq asks its resolver before every
//! request, also one sent on a kept-alive connection, and its default
//! resolver starts a thread to bound each lookup by the request's timeout:
//! a thread per Vault request, about a third of a millisecond each. This
//! resolver answers an IP address without any lookup and remembers a host
//! name's addresses for [`KEEP`], so the thread (and the lookup) happen only
//! when a name is looked up again. The watch streams resolve through it too
//! ([`Cached::addrs`]), so no lookup of theirs waits without a bound.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a host name's addresses are used before it is looked up again:
/// a moved server (a new Service IP, a failover) is reached within this
/// time by new connections; kept-alive ones do not need an address.
pub const KEEP: Duration = Duration::from_secs(30);

/// Addresses looked up by `inner` (ureq's default resolver in the clients),
/// remembered per `host:port` for [`KEEP`]; IP addresses are never looked up.
#[derive(Debug)]
pub struct Cached<R = DefaultResolver> {
    inner: R,
    known: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Cached {
    /// A resolver over ureq's default one.
    pub fn new() -> Cached {
        Cached::over(DefaultResolver::default())
    }
}

impl Default for Cached {
    fn default() -> Cached {
        Cached::new()
    }
}

impl<R: Resolver> Cached<R> {
    /// A resolver asking `inner` for host names.
    pub fn over(inner: R) -> Cached<R> {
        Cached {
            inner,
            known: Mutex::new(HashMap::new()),
        }
    }
}

impl<R: Resolver> Cached<R> {
    /// The addresses of `host` (a name, an IPv4 address or an IPv6 one
    /// without brackets) on `port`, a lookup ending after `timeout`: for a
    /// client that is not ureq's (the watch streams).
    pub fn addrs(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let authority = match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        let uri: Uri = format!("http://{authority}/")
            .parse()
            .map_err(|_| ureq::Error::BadUri(authority))?;
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::Exact(timeout),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let addrs = self.resolve(&uri, &Config::default(), timeout)?;
        Ok(addrs.iter().copied().collect())
    }
}

#[cfg(test)]
impl<R> Cached<R> {
    /// Whether addresses of `host:port` are remembered.
    pub(crate) fn remembers(&self, host_port: &str) -> bool {
        self.known.lock().unwrap().contains_key(host_port)
    }
}

/// The host and port `uri` names (the scheme's port when it has none), or
/// `None` when it names neither.
fn host_port(uri: &Uri) -> Option<(&str, u16)> {
    let authority = uri.authority()?;
    let port = match authority.port_u16() {
        Some(port) => port,
        None => match uri.scheme_str()? {
            "https" => 443,
            "http" => 80,
            _ => return None,
        },
    };
    Some((authority.host(), port))
}

impl<R: Resolver> Resolver for Cached<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let Some((host, port)) = host_port(uri) else {
            return self.inner.resolve(uri, config, timeout);
        };
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        let key = format!("{host}:{port}");
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(&key) {
            Some((at, addrs)) if at.elapsed() < KEEP => return Ok(addrs.clone()),
            _ => {}
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        known.retain(|_, (at, _)| at.elapsed() < KEEP);
        known.insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts lookups and answers 10.1.2.3 on the URI's port.
    #[derive(Debug)]
    struct Counting(Arc<AtomicUsize>);

    impl Resolver for Counting {
        fn resolve(
            &self,
            uri: &Uri,
            _: &Config,
            _: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let mut addrs = self.empty();
            let port = host_port(uri).map_or(0, |(_, port)| port);
            addrs.push(SocketAddr::from(([10, 1, 2, 3], port)));
            Ok(addrs)
        }
    }

    fn resolve(resolver: &Cached<Counting>, uri: &str) -> Vec<SocketAddr> {
        let uri: Uri = uri.parse().unwrap();
        let config = Config::default();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::Exact(Duration::from_secs(1)),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let addrs = resolver.resolve(&uri, &config, timeout).unwrap();
        addrs.iter().copied().collect()
    }

    #[test]
    fn an_ip_address_is_never_looked_up() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolver = Cached::over(Counting(Arc::clone(&lookups)));
        let cases = [
            ("http://127.0.0.1:8200/v1/x", "127.0.0.1:8200"),
            ("https://127.0.0.1/v1/x", "127.0.0.1:443"),
            ("http://[::1]:8200/", "[::1]:8200"),
            ("http://10.0.0.7/", "10.0.0.7:80"),
        ];
        for (uri, want) in cases {
            let got = resolve(&resolver, uri);
            assert_eq!(got, [want.parse::<SocketAddr>().unwrap()], "{uri}");
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_host_name_is_looked_up_once_per_host_and_port() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolver = Cached::over(Counting(Arc::clone(&lookups)));
        for _ in 0..3 {
            let got = resolve(
                &resolver,
                "https://vault.vault.svc:8200/v1/secret/metadata/a",
            );
            assert_eq!(got, ["10.1.2.3:8200".parse::<SocketAddr>().unwrap()]);
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        resolve(&resolver, "https://vault.vault.svc/v1/sys/health");
        resolve(&resolver, "https://other.svc:8200/");
        assert_eq!(lookups.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_client_other_than_ureq_asks_by_host_and_port() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolver = Cached::over(Counting(Arc::clone(&lookups)));
        let second = Duration::from_secs(1);
        let v6 = resolver.addrs("::1", 6443, second).unwrap();
        assert_eq!(v6, ["[::1]:6443".parse::<SocketAddr>().unwrap()]);
        for _ in 0..2 {
            let named = resolver
                .addrs("kubernetes.default.svc", 443, second)
                .unwrap();
            assert_eq!(named, ["10.1.2.3:443".parse::<SocketAddr>().unwrap()]);
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_remembered_name_is_looked_up_again_after_a_while() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolver = Cached::over(Counting(Arc::clone(&lookups)));
        resolve(&resolver, "https://vault.svc:8200/");
        let old = Instant::now().checked_sub(KEEP + Duration::from_secs(1));
        for (at, _) in resolver.known.lock().unwrap().values_mut() {
            *at = old.unwrap();
        }
        resolve(&resolver, "https://vault.svc:8200/");
        assert_eq!(lookups.load(Ordering::SeqCst), 2);
    }
}
