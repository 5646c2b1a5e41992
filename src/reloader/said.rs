//! What the reloader has said: each notice (a warning, an Event) once per
//! change of what there is to say, not once per pass.

use std::collections::HashMap;
use std::hash::Hash;

/// The last thing said about each key (`V = ()`: that something was said).
#[derive(Debug)]
pub struct Said<K, V = ()> {
    last: HashMap<K, V>,
}

impl<K, V> Default for Said<K, V> {
    fn default() -> Said<K, V> {
        Said {
            last: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, V: PartialEq> Said<K, V> {
    /// Whether saying `value` about `key` is news, remembering it as said:
    /// for a notice that cannot fail (a log line).
    pub fn news(&mut self, key: K, value: V) -> bool {
        let news = self.is_news(&key, &value);
        if news {
            self.last.insert(key, value);
        }
        news
    }

    /// Whether saying `value` about `key` would be news, remembering
    /// nothing: for a notice that may fail (an Event), then [`Said::said`].
    pub fn is_news(&self, key: &K, value: &V) -> bool {
        self.last.get(key) != Some(value)
    }

    /// What was last said about `key`.
    pub fn last(&self, key: &K) -> Option<&V> {
        self.last.get(key)
    }

    /// Remembers `value` as said about `key`.
    pub fn said(&mut self, key: K, value: V) {
        self.last.insert(key, value);
    }

    /// Forgets what was said about `key`: the next notice is news again.
    pub fn forget(&mut self, key: &K) {
        self.last.remove(key);
    }

    /// Keeps what was said about the keys `keep` accepts, so nothing grows
    /// with workloads and secrets that came and went.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.last.retain(|key, _| keep(key));
    }

    /// The keys something was said about.
    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.last.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_news_once_per_change_of_what_it_says() {
        let mut said: Said<&str, u64> = Said::default();
        assert!(said.news("a", 1), "first");
        assert!(!said.news("a", 1), "the same again");
        assert!(said.news("a", 2), "changed");
        assert!(
            said.is_news(&"b", &1) && said.is_news(&"b", &1),
            "asking remembers nothing"
        );
        said.said("b", 1);
        assert!(!said.is_news(&"b", &1));
        assert_eq!(said.last(&"b"), Some(&1));
        said.forget(&"a");
        assert!(said.news("a", 2), "forgotten: news again");
        said.retain(|key| *key == "b");
        assert_eq!(said.keys().collect::<Vec<_>>(), [&"b"]);
    }
}
