//! Reading the versions of many KV v2 secrets of one directory with a few
//! requests instead of one each (`--list-secret-metadata`): OpenBao answers
//! `LIST MOUNT/detailed-metadata/DIR` with the metadata of every key in DIR,
//! a page at a time, in byte order. Pure — which directories to list, the
//! page queries, and which wanted keys a listing has settled — so that every
//! case is tested in-process; `vault` does the requests.

use std::collections::BTreeSet;
use std::time::Duration;

/// Keys asked for per page. A page of ordinary metadata is about 80 KiB,
/// well inside the answer limit; one past it fails the listing, and the
/// directory's secrets are read one by one.
pub const PAGE: usize = 200;
/// The fewest secrets in use in one directory for a listing to be tried:
/// below that, reading each costs no more.
pub const MIN_WANTED: usize = 3;
/// Single reads a page is worth: a page of 200 keys costs the server about
/// what 20 metadata reads do (OpenBao 2.7 on the benchmark machine: a
/// listing of 2,000 keys took 0.3 s, 2,000 reads 3 s), so a listing takes at
/// most one page per 20 secrets in use (at least one): keys named in
/// workloads never make it cost much more than reading them would.
pub const PAGE_WORTH: usize = 20;
/// How long a directory whose listing failed (refused, not offered, or not
/// cheaper than reading its secrets) is read one secret at a time before a
/// listing is tried again.
pub const PAUSE: Duration = Duration::from_secs(10 * 60);

/// Where the KV v2 data path `path` under the mount at `mount_path` is
/// listed: the list path `MOUNT/detailed-metadata/DIR/` and the key; `None`
/// when `path` is not `MOUNT/data/...`.
pub fn place(mount_path: &str, path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix(mount_path)?.strip_prefix("data/")?;
    let (dir, key) = match rest.rfind('/') {
        Some(i) => rest.split_at(i + 1),
        None => ("", rest),
    };
    (!key.is_empty()).then(|| {
        (
            format!("{mount_path}detailed-metadata/{dir}"),
            key.to_string(),
        )
    })
}

/// The keys of one directory in use, and how far a listing of it has got.
/// A listing starts just before the first wanted key and stops at the page
/// that passes the last one, at the end of the directory, or after one
/// page per [`PAGE_WORTH`] wanted keys.
#[derive(Debug)]
pub struct Walk {
    wanted: BTreeSet<String>,
    pages_left: usize,
    /// Pages read so far.
    pages: usize,
    /// Where the next page starts: after this key (`None`: at the first).
    after: Option<String>,
    /// Every key up to this one has been listed.
    settled_up_to: Option<String>,
    /// The whole directory has been listed.
    complete: bool,
}

impl Walk {
    /// A listing for `wanted` keys, not begun. It starts after the first
    /// wanted key without its last character, which sorts before it and
    /// before few other keys (the server takes any string as `after`).
    pub fn new(wanted: BTreeSet<String>) -> Walk {
        let pages_left = (wanted.len() / PAGE_WORTH).max(1);
        let after = wanted.first().and_then(|first| {
            let mut before = first.clone();
            before.pop();
            (!before.is_empty()).then_some(before)
        });
        Walk {
            wanted,
            pages_left,
            pages: 0,
            after,
            settled_up_to: None,
            complete: false,
        }
    }

    /// The query of the next page: `?list=true&limit=…[&after=…]`.
    pub fn query(&self) -> String {
        let mut query = format!("?list=true&limit={PAGE}");
        if let Some(after) = &self.after {
            query.push_str("&after=");
            query.push_str(&percent_encode(after));
        }
        query
    }

    /// Whether no page has been read yet.
    pub fn at_start(&self) -> bool {
        self.pages == 0
    }

    /// Takes the keys of the page just read (none: nothing after the last
    /// page, which the server answers with 404); whether to read another.
    pub fn take(&mut self, keys: &[String]) -> bool {
        self.pages += 1;
        let last = match keys.last() {
            Some(last) if keys.len() >= PAGE => last,
            _ => {
                self.complete = true;
                return false;
            }
        };
        self.settled_up_to = Some(last.clone());
        self.pages_left = self.pages_left.saturating_sub(1);
        let past_wanted = self.wanted.last().is_none_or(|max| max <= last);
        self.after = Some(last.clone());
        !past_wanted && self.pages_left > 0
    }

    /// Whether the listing has answered for `key`: it was listed, or its
    /// absence is certain.
    pub fn settled(&self, key: &str) -> bool {
        self.complete
            || self
                .settled_up_to
                .as_deref()
                .is_some_and(|up_to| key <= up_to)
    }

    /// Whether every wanted key is settled.
    pub fn covered(&self) -> bool {
        self.wanted.iter().all(|key| self.settled(key))
    }

    /// The wanted keys.
    pub fn wanted(&self) -> &BTreeSet<String> {
        &self.wanted
    }
}

/// `text` with every byte outside RFC 3986's unreserved set as `%XX`, for a
/// query value (a key may hold any character).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| k.to_string()).collect()
    }

    fn walk(wanted: &[&str]) -> Walk {
        Walk::new(wanted.iter().map(|k| k.to_string()).collect())
    }

    /// A full page whose keys are `prefix` followed by 000..PAGE.
    fn full_page(prefix: &str) -> Vec<String> {
        (0..PAGE).map(|i| format!("{prefix}{i:03}")).collect()
    }

    #[test]
    fn paths_are_placed_in_their_directory() {
        let cases = [
            (
                "secret/",
                "secret/data/app",
                Some(("secret/detailed-metadata/", "app")),
            ),
            (
                "team/kv/",
                "team/kv/data/a/b/db",
                Some(("team/kv/detailed-metadata/a/b/", "db")),
            ),
            ("secret/", "secret/metadata/app", None),
            ("secret/", "other/data/app", None),
            ("secret/", "secret/data/dir/", None),
        ];
        for (mount, path, want) in cases {
            let want = want.map(|(dir, key)| (dir.to_string(), key.to_string()));
            assert_eq!(place(mount, path), want, "{path}");
        }
    }

    /// `n` keys `prefix`000… plus `extra`.
    fn many(prefix: &str, n: usize, extra: &[&str]) -> Walk {
        let mut wanted: BTreeSet<String> = (0..n).map(|i| format!("{prefix}{i:03}")).collect();
        wanted.extend(extra.iter().map(|k| k.to_string()));
        Walk::new(wanted)
    }

    #[test]
    fn queries_start_just_before_the_first_wanted_key_then_after_each_page() {
        assert_eq!(
            walk(&["a", "b", "c"]).query(),
            format!("?list=true&limit={PAGE}")
        );
        let first = walk(&["team-a", "team-b", "team-c"]);
        assert_eq!(
            first.query(),
            format!("?list=true&limit={PAGE}&after=team-")
        );
        assert!(first.at_start());
        // 40 wanted keys: two pages at most.
        let mut listing = many("k", 39, &["zzz"]);
        let mut page = full_page("k");
        *page.last_mut().unwrap() = "k 1&after=/é".into();
        assert!(listing.take(&page));
        assert_eq!(
            listing.query(),
            format!("?list=true&limit={PAGE}&after=k%201%26after%3D%2F%C3%A9")
        );
        assert!(!listing.at_start());
    }

    #[test]
    fn a_short_page_completes_the_listing_and_settles_every_key() {
        let mut listing = walk(&["a", "b", "zz"]);
        assert!(!listing.take(&keys(&["a", "c"])));
        assert!(listing.settled("b") && listing.settled("zz") && listing.covered());
    }

    #[test]
    fn nothing_after_the_last_page_completes_the_listing() {
        let mut listing = many("k", 37, &["zz", "zzz", "zzzz"]);
        assert!(listing.take(&full_page("k")));
        assert!(!listing.settled("zz"));
        assert!(!listing.take(&[]));
        assert!(listing.settled("zz") && listing.covered());
    }

    #[test]
    fn listing_stops_at_the_page_that_passes_the_last_wanted_key() {
        let mut listing = walk(&["k001", "k050", "k100", "k150"]);
        assert!(!listing.take(&full_page("k")), "k199 passes k150");
        assert!(listing.covered());
        assert!(!listing.settled("k2"), "after the page: not settled");
    }

    #[test]
    fn listing_takes_one_page_per_page_worth_of_wanted_keys() {
        // 40 wanted keys: 2 pages, and what they did not reach is read one by one.
        let mut listing = many("z", 37, &["a000", "b000", "c000"]);
        assert!(listing.take(&full_page("a")));
        assert!(!listing.take(&full_page("b")));
        assert!(listing.settled("b000") && !listing.settled("c000"));
        assert!(!listing.covered());
        // 39: one page.
        let mut listing = many("z", 36, &["a000", "b000", "c000"]);
        assert!(!listing.take(&full_page("a")));
        assert!(!listing.covered());
    }

    #[test]
    fn keys_compare_as_bytes_like_the_servers_order() {
        // "s1/" (a directory) sorts before "s10": '/' < '0'.
        let mut listing = walk(&["s1", "s10", "s2", "s3"]);
        let mut page = full_page("s0");
        *page.last_mut().unwrap() = "s1/".into();
        listing.take(&page);
        assert!(listing.settled("s1") && !listing.settled("s10"));
    }
}
