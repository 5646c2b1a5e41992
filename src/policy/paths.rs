//! Which secret paths a workload may name (`--allowed-secret-paths`).
//!
//! The reloader reads metadata with one token for every namespace, so a
//! tenant naming another team's path would learn from rollouts and Events
//! whether that secret exists and when it changes. With an allowlist, a
//! reference outside it is never asked about. Patterns are paths whose
//! segments are literal text (where `{namespace}` stands for the workload's
//! namespace), `*` (any one segment) or a final `**` (one or more
//! segments), e.g. `secret/data/{namespace}/**,shared/data/public/*`.

use std::fmt;

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// This text, `{namespace}` replaced by the workload's namespace.
    Literal(String),
    /// Any one segment.
    One,
    /// One or more segments: the rest of the path.
    Rest,
}

/// Why a pattern cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// It has an empty segment (a leading, trailing or doubled `/`).
    EmptySegment,
    /// `**` is not its last segment.
    RestNotLast,
    /// A `*` inside a segment (`app-*`): only whole segments are wildcards.
    PartialWildcard,
    /// A `{…}` other than `{namespace}`.
    Placeholder,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::EmptySegment => "it has an empty segment",
            Invalid::RestNotLast => "** may only be its last segment",
            Invalid::PartialWildcard => "* and ** stand for whole segments only",
            Invalid::Placeholder => "{namespace} is the only placeholder",
        })
    }
}

/// The patterns a workload's secret paths must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedPaths {
    patterns: Vec<Vec<Segment>>,
}

impl AllowedPaths {
    /// Parses a comma-separated list of patterns; the error names the bad
    /// one. An empty list allows nothing.
    pub fn parse(text: &str) -> Result<AllowedPaths, String> {
        let patterns = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| pattern(item).map_err(|why| format!("'{item}': {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedPaths { patterns })
    }

    /// Whether a workload in `namespace` may name `path`. A path with a
    /// segment a server could read as another path (`.`, anything with `%`
    /// or `\`) matches no pattern.
    pub fn allows(&self, namespace: &str, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        let tricky = |s: &&str| s.is_empty() || *s == "." || *s == ".." || s.contains(['%', '\\']);
        if segments.iter().any(tricky) {
            return false;
        }
        self.patterns
            .iter()
            .any(|pattern| matches(pattern, &segments, namespace))
    }
}

/// A pattern's segments.
fn pattern(text: &str) -> Result<Vec<Segment>, Invalid> {
    let parts: Vec<&str> = text.split('/').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| match *part {
            "" => Err(Invalid::EmptySegment),
            "**" if i == last => Ok(Segment::Rest),
            "**" => Err(Invalid::RestNotLast),
            "*" => Ok(Segment::One),
            p if p.contains('*') => Err(Invalid::PartialWildcard),
            p if p.replace("{namespace}", "").contains(['{', '}']) => Err(Invalid::Placeholder),
            p => Ok(Segment::Literal(p.to_string())),
        })
        .collect()
}

fn matches(pattern: &[Segment], path: &[&str], namespace: &str) -> bool {
    for (i, segment) in pattern.iter().enumerate() {
        let Some(part) = path.get(i) else {
            return false;
        };
        match segment {
            Segment::Rest => return true,
            Segment::One => {}
            Segment::Literal(text) => {
                if text.replace("{namespace}", namespace) != *part {
                    return false;
                }
            }
        }
    }
    pattern.len() == path.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_by_namespace_and_whole_segments() {
        let allowed = AllowedPaths::parse(
            "secret/data/{namespace}/**, shared/data/public/*,kv/data/team-{namespace}",
        )
        .unwrap();
        #[rustfmt::skip]
        let cases = [
            ("team-a", "secret/data/team-a/db", true),
            ("team-a", "secret/data/team-a/app/db", true),
            ("team-a", "secret/data/team-a", false),
            ("team-a", "secret/data/team-b/db", false),
            ("team-a", "secret/data/team-ab/db", false),
            ("team-a", "shared/data/public/ca", true),
            ("team-a", "shared/data/public/ca/more", false),
            ("team-a", "shared/data/public", false),
            ("team-a", "kv/data/team-team-a", true),
            ("team-a", "kv/data/team-team-b", false),
            ("team-a", "secret/data/team-a/./x", false),
            ("team-a", "secret/data/team-a/%2e%2e/team-b/x", false),
            ("team-a", "secret/data/team-a/..%2Fteam-b", false),
            ("team-a", "secret/data/team-a\\..\\team-b/x", false),
            ("team-a", "secret/data/team-a//x", false),
            ("team-a", "database/creds/app", false),
        ];
        for (namespace, path, want) in cases {
            assert_eq!(allowed.allows(namespace, path), want, "{namespace} {path}");
        }
        assert!(!AllowedPaths::default().allows("a", "secret/data/a/x"));
    }

    #[test]
    fn bad_patterns_are_named() {
        for (text, why) in [
            ("secret//x", Invalid::EmptySegment),
            ("/secret/x", Invalid::EmptySegment),
            ("secret/**/x", Invalid::RestNotLast),
            ("secret/data/app-*", Invalid::PartialWildcard),
            ("secret/data/{name}/x", Invalid::Placeholder),
            ("secret/data/{namespace/x", Invalid::Placeholder),
        ] {
            assert_eq!(
                AllowedPaths::parse(&format!("ok/*,{text}")),
                Err(format!("'{text}': {why}"))
            );
        }
    }
}
