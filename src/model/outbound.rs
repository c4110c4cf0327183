//! Where a guest may send HTTP requests: the rules of a container's
//! `skiff.allowed-outbound-hosts` label (and `skiff exec --allow-outbound`),
//! as plain data. The runtime asks [`OutboundRules::allows`] through its
//! `OutboundPolicy` hook before any connection is made.

/// One host a guest may send HTTP requests to: `[SCHEME://]HOST[:PORT]`,
/// where HOST is a name, an IP address, `*.DOMAIN` (any name under
/// DOMAIN) or `*` (any host). Without a port, only the scheme's default
/// port (80, 443) is allowed; without a scheme, both http and https.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

/// What is wrong with an outbound rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblem {
    /// `ftp://...`.
    #[error("has a scheme other than http or https")]
    Scheme,
    /// A path, user info, or nothing.
    #[error("is not a host")]
    NotAHost,
    /// `:0`, `:x`, `:70000`.
    #[error("has a port that is not a number from 1 to 65535")]
    Port,
    /// `::1` instead of `[::1]`.
    #[error("has an IPv6 address without brackets")]
    Ipv6,
    /// Characters no host has.
    #[error("has an invalid host")]
    Host,
}

/// An outbound rule that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule:?} {problem}; expected [http://|https://]HOST[:PORT], such as api.example.com, https://*.example.com or http://127.0.0.1:8080")]
pub struct RuleError {
    /// The rule, as written.
    pub rule: String,
    /// What is wrong with it.
    pub problem: RuleProblem,
}

impl OutboundRule {
    /// Reads one rule; the error says what a rule looks like.
    pub fn parse(rule: &str) -> Result<OutboundRule, RuleError> {
        let bad = |problem: RuleProblem| RuleError {
            rule: rule.to_string(),
            problem,
        };
        let (scheme, rest) = match rule.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (Some(s.to_string()), rest),
            Some(_) => return Err(bad(RuleProblem::Scheme)),
            None => (None, rule),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.is_empty() {
            return Err(bad(RuleProblem::NotAHost));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(RuleProblem::Port))?;
                (h, Some(port))
            }
            _ => (rest, None),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.contains(':') && !rest.starts_with('[') {
            return Err(bad(RuleProblem::Ipv6));
        }
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = host == "*"
            || (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':')));
        if !valid {
            return Err(bad(RuleProblem::Host));
        }
        Ok(OutboundRule { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        if self.port.unwrap_or(default_port) != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            // A name under the domain; never an IP address.
            Some(domain) => {
                host.parse::<std::net::IpAddr>().is_err()
                    && host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
            None => host == self.host,
        }
    }
}

/// A container's rules: a request is allowed when any rule allows it; an
/// empty list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundRules(pub Vec<OutboundRule>);

impl FromIterator<OutboundRule> for OutboundRules {
    fn from_iter<I: IntoIterator<Item = OutboundRule>>(iter: I) -> Self {
        OutboundRules(iter.into_iter().collect())
    }
}

impl OutboundRules {
    /// Whether any rule allows a request to `scheme://host:port`.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.0.iter().any(|r| r.allows(scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_rules_allow_only_what_they_name() {
        let r = |s: &str| OutboundRule::parse(s).unwrap();
        assert!(r("api.example.com").allows("https", "API.example.com", 443));
        assert!(r("api.example.com").allows("http", "api.example.com", 80));
        assert!(!r("api.example.com").allows("http", "api.example.com", 8080));
        assert!(!r("api.example.com").allows("http", "evil.com", 80));
        assert!(!r("api.example.com").allows("http", "api.example.com.evil.com", 80));
        assert!(r("https://*.example.com").allows("https", "a.b.example.com", 443));
        assert!(!r("https://*.example.com").allows("https", "example.com", 443));
        assert!(!r("https://*.example.com").allows("https", "badexample.com", 443));
        assert!(!r("https://*.example.com").allows("http", "a.example.com", 80));
        assert!(r("http://127.0.0.1:8080").allows("http", "127.0.0.1", 8080));
        assert!(!r("http://127.0.0.1:8080").allows("http", "127.0.0.1", 8081));
        assert!(r("*:9000").allows("http", "anything", 9000));
        for bad in [
            "ftp://x",
            "http://a/b",
            "user@host",
            "host:0",
            "host:99999",
            "",
            "a b",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad}");
        }
    }
}
