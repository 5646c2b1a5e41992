//! Reading the versions of many KV v2 secrets of one directory with a few
//! requests instead of one each (`--list-secret-metadata`): OpenBao answers
//! `LIST MOUNT/detailed-metadata/DIR` with the metadata of every key in DIR,
//! a page at a time, in byte order. Pure — which directories to list, the
//! page queries, and which wanted keys a listing has settled — so that every
//! case is tested in-process; `vault` does the requests.

use crate::io::http::encode_query;
use std::collections::BTreeSet;
use std::time::Duration;

/// Keys asked for per page. A page of ordinary metadata is about 20 KiB,
/// well inside the answer limit (one past it fails the listing, and the
/// directory's secrets are read one by one). The loop's thread waits for
/// each page, and a health check with it; each page also costs a request's
/// overhead. At 5000/2000 on the benchmark machine /healthz's median at
/// rest was best with 50: pages of 100 held the loop about 45 ms each, and
/// pages of 20 made the pass fill its whole period (BENCHMARKS.md).
pub const PAGE: usize = 50;
/// The fewest secrets in use in one directory for a listing to be tried:
/// below that, reading each costs no more.
pub const MIN_WANTED: usize = 3;
/// Listed keys that cost the server about what one metadata read does:
/// OpenBao 2.7 on the benchmark machine listed 2,000 keys with their
/// metadata in 0.3 s and answered 2,000 single reads in 3 s. A listing is
/// counted as one read per page plus one per this many keys listed.
pub const KEYS_PER_READ: usize = 10;
/// How long a directory whose listing failed (refused, not offered, or
/// costlier than reading its secrets in use) is read one secret at a time
/// before a listing is tried again.
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
/// that passes the last one, at the end of the directory, or once it has
/// cost as many reads as there are wanted keys ([`KEYS_PER_READ`]): keys a
/// workload names, real or made up, cannot make it cost much more than
/// reading them would.
#[derive(Debug)]
pub struct Walk {
    wanted: BTreeSet<String>,
    /// Pages read so far.
    pages: usize,
    /// Keys listed so far.
    listed: usize,
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
        let after = wanted.first().and_then(|first| {
            let mut before = first.clone();
            before.pop();
            (!before.is_empty()).then_some(before)
        });
        Walk {
            wanted,
            pages: 0,
            listed: 0,
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
            query.push_str(&encode_query(after));
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
        self.listed += keys.len();
        let last = match keys.last() {
            Some(last) if keys.len() >= PAGE => last,
            _ => {
                self.complete = true;
                return false;
            }
        };
        self.settled_up_to = Some(last.clone());
        let past_wanted = self.wanted.last().is_none_or(|max| max <= last);
        self.after = Some(last.clone());
        !past_wanted && self.cost() < self.wanted.len()
    }

    /// What the listing has cost so far, in single reads.
    pub fn cost(&self) -> usize {
        self.pages + self.listed / KEYS_PER_READ
    }

    /// Whether the listing settled every wanted key for no more than
    /// reading them would have cost; one that did not is paused.
    pub fn worth_it(&self) -> bool {
        self.covered() && self.cost() <= self.wanted.len()
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
        // 40 wanted keys: a second page is worth reading.
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
        let mut listing = walk(&["k001", "k005", "k010", "k015"]);
        assert!(
            !listing.take(&full_page("k")),
            "the page's last key passes k015"
        );
        assert!(listing.covered());
        assert!(!listing.settled("k2"), "after the page: not settled");
    }

    #[test]
    fn a_listing_stops_once_it_has_cost_what_reading_would() {
        let full = 1 + PAGE / KEYS_PER_READ;
        // As many wanted keys as two full pages cost: two pages.
        let mut listing = many("z", 2 * full - 3, &["a000", "b000", "c000"]);
        assert!(listing.take(&full_page("a")));
        assert!(!listing.take(&full_page("b")));
        assert_eq!(listing.cost(), 2 * full);
        assert!(listing.settled("b000") && !listing.settled("c000"));
        assert!(!listing.covered() && !listing.worth_it());
        // As many as one costs: one page.
        let mut listing = many("z", full - 3, &["a000", "b000", "c000"]);
        assert!(!listing.take(&full_page("a")));
    }

    #[test]
    fn a_listing_is_worth_it_when_it_cost_no_more_than_its_wanted_keys() {
        let page = |n: usize| (0..n).map(|i| format!("k{i:03}")).collect::<Vec<_>>();
        let cases = [
            // (wanted, keys listed in one page, worth it)
            (&["k000", "k001", "k002"][..], 5, true),
            (&["k000", "k001", "k002"][..], 20, true),
            // Three names in a directory of 90: all settled, at 10 reads.
            (&["k000", "k001", "k002"][..], 90, false),
            (&["k000", "k001", "k002", "k003"][..], 30, true),
        ];
        for (wanted, listed, worth) in cases {
            let mut listing = walk(wanted);
            assert!(!listing.take(&page(listed)));
            assert!(listing.covered());
            assert_eq!(listing.worth_it(), worth, "{wanted:?} among {listed}");
        }
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
