//! [`PeerPolicy`]: which SPIFFE IDs a server accepts or a client will talk to, from config.

use std::fmt;

use serde::Deserialize;
use spiffe::{SpiffeId, TrustDomain};

use super::error::{Error, Result};

/// An allow list of SPIFFE IDs. A peer is authorized when any rule matches; an empty policy
/// authorizes nobody (secure by default, never "allow all").
///
/// Deserializes from a list, e.g. in YAML:
/// ```yaml
/// allowed_peers:
///   - id: spiffe://antwort.local/ns/antwort/sa/gateway
///   - trust_domain: antwort.local
///     path_prefix: /ns/antwort-sandboxes/
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PeerPolicy {
    rules: Vec<PeerRule>,
}

/// One entry of a [`PeerPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPeerRule")]
pub enum PeerRule {
    /// Exactly this SPIFFE ID.
    Exact(SpiffeId),
    /// Any ID in `trust_domain` whose path is `path_prefix` or lies below it. The prefix matches
    /// whole path segments: `/ns/a` matches `/ns/a` and `/ns/a/sa/b`, never `/ns/ab`. An empty
    /// prefix (or `/`) matches the whole trust domain.
    Prefix { trust_domain: TrustDomain, path_prefix: String },
}

/// The config shape: `{id}` or `{trust_domain, path_prefix?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeerRule {
    id: Option<String>,
    trust_domain: Option<String>,
    path_prefix: Option<String>,
}

impl TryFrom<RawPeerRule> for PeerRule {
    type Error = Error;

    fn try_from(raw: RawPeerRule) -> Result<Self> {
        match (raw.id, raw.trust_domain, raw.path_prefix) {
            (Some(id), None, None) => Self::exact(&id),
            (None, Some(trust_domain), path_prefix) => {
                Self::prefix(&trust_domain, path_prefix.as_deref().unwrap_or(""))
            }
            (Some(_), _, _) => Err(Error::Config(
                "a peer rule has either `id` or `trust_domain` (+ `path_prefix`), not both".into(),
            )),
            (None, None, _) => Err(Error::Config(
                "a peer rule needs `id` or `trust_domain` (+ optional `path_prefix`)".into(),
            )),
        }
    }
}

impl PeerRule {
    /// A rule for exactly `id` (`spiffe://trust-domain/path`).
    pub fn exact(id: &str) -> Result<Self> {
        let id = SpiffeId::new(id)
            .map_err(|e| Error::Config(format!("invalid SPIFFE ID {id:?}: {e}")))?;
        Ok(Self::Exact(id))
    }

    /// A rule for every ID in `trust_domain` at or below `path_prefix`.
    pub fn prefix(trust_domain: &str, path_prefix: &str) -> Result<Self> {
        let parsed = TrustDomain::new(trust_domain)
            .map_err(|e| Error::Config(format!("invalid trust domain {trust_domain:?}: {e}")))?;
        if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
            return Err(Error::Config(format!(
                "path_prefix {path_prefix:?} must start with `/` (e.g. /ns/antwort-sandboxes/)"
            )));
        }
        // Stored without the trailing slash; matching adds the segment boundary back.
        let path_prefix = path_prefix.trim_end_matches('/').to_owned();
        Ok(Self::Prefix { trust_domain: parsed, path_prefix })
    }

    /// Whether `id` satisfies this rule.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(allowed) => allowed == id,
            Self::Prefix { trust_domain, path_prefix } => {
                if !id.is_member_of(trust_domain) {
                    return false;
                }
                let path = id.path();
                path_prefix.is_empty()
                    || path == path_prefix
                    || path
                        .strip_prefix(path_prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }
}

impl fmt::Display for PeerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Prefix { trust_domain, path_prefix } => {
                write!(f, "spiffe://{}{path_prefix}/*", trust_domain.as_str())
            }
        }
    }
}

impl PeerPolicy {
    /// A policy of the given rules.
    pub fn new(rules: impl IntoIterator<Item = PeerRule>) -> Self {
        Self { rules: rules.into_iter().collect() }
    }

    /// A policy allowing exactly these SPIFFE IDs.
    pub fn exact<I, S>(ids: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ids.into_iter()
            .map(|id| PeerRule::exact(id.as_ref()))
            .collect::<Result<Vec<_>>>()
            .map(Self::new)
    }

    /// Whether `id` is allowed.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        self.rules.iter().any(|rule| rule.matches(id))
    }

    /// The rules, in config order.
    pub fn rules(&self) -> &[PeerRule] {
        &self.rules
    }

    /// Whether this policy allows nobody.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl fmt::Display for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rule}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).expect("valid test ID")
    }

    #[test]
    fn exact_matches_only_that_id() {
        let policy = PeerPolicy::exact(["spiffe://td/ns/a/sa/gw"]).expect("valid");
        assert!(policy.allows(&id("spiffe://td/ns/a/sa/gw")));
        assert!(!policy.allows(&id("spiffe://td/ns/a/sa/gw2")));
        assert!(!policy.allows(&id("spiffe://other/ns/a/sa/gw")));
    }

    #[test]
    fn prefix_matches_whole_segments_in_its_trust_domain() {
        for prefix in ["/ns/sandboxes", "/ns/sandboxes/"] {
            let policy = PeerPolicy::new([PeerRule::prefix("td", prefix).expect("valid")]);
            assert!(policy.allows(&id("spiffe://td/ns/sandboxes/sa/agent")), "{prefix}");
            assert!(policy.allows(&id("spiffe://td/ns/sandboxes")), "{prefix}");
            assert!(!policy.allows(&id("spiffe://td/ns/sandboxes-evil/sa/agent")), "{prefix}");
            assert!(!policy.allows(&id("spiffe://other/ns/sandboxes/sa/agent")), "{prefix}");
        }
        let whole = PeerPolicy::new([PeerRule::prefix("spiffe://td", "").expect("valid")]);
        assert!(whole.allows(&id("spiffe://td/anything")));
        assert!(!whole.allows(&id("spiffe://td2/anything")));
    }

    #[test]
    fn empty_policy_allows_nobody() {
        assert!(!PeerPolicy::default().allows(&id("spiffe://td/x")));
    }

    #[test]
    fn deserializes_the_documented_shape() {
        let json = r#"[{"id": "spiffe://td/ns/x/sa/gateway"},
                       {"trust_domain": "td", "path_prefix": "/ns/antwort-sandboxes/"}]"#;
        let policy: PeerPolicy = serde_json::from_str(json).expect("valid policy");
        assert_eq!(policy.rules().len(), 2);
        assert!(policy.allows(&id("spiffe://td/ns/x/sa/gateway")));
        assert!(policy.allows(&id("spiffe://td/ns/antwort-sandboxes/sa/agent")));
        assert!(!policy.allows(&id("spiffe://td/ns/x/sa/other")));
    }

    #[test]
    fn rejects_malformed_rules_with_a_reason() {
        for (json, expected) in [
            (r#"[{"id": "https://td/x"}]"#, "invalid SPIFFE ID"),
            (r#"[{"id": "spiffe://td/x", "trust_domain": "td"}]"#, "not both"),
            (r#"[{"path_prefix": "/x"}]"#, "needs `id` or `trust_domain`"),
            (r#"[{"trust_domain": "td", "path_prefix": "ns/x"}]"#, "must start with `/`"),
            (r#"[{"trust_domain": "TD with space"}]"#, "invalid trust domain"),
            (r#"[{"idd": "spiffe://td/x"}]"#, "unknown field"),
        ] {
            let error = serde_json::from_str::<PeerPolicy>(json).expect_err(json).to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
