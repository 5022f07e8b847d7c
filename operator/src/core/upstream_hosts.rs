//! Where an UpstreamKey may send its key: the platform team's allow-list of
//! upstream hosts, checked against `spec.baseUrl` before anything is
//! published. Without it, anyone who may create an UpstreamKey could have the
//! proxy send a key to any URL, including the cloud metadata address or
//! services inside the cluster.
//!
//! An entry is `[scheme://]host[:port]`:
//!
//! - `host` is a DNS name (`api.openai.com`), `*.` and a domain (any name
//!   below it, at any depth, not the domain itself), `*` (any host), an IPv4
//!   address or a bracketed IPv6 address;
//! - the scheme is `https` unless the entry says `http://`: plain http is
//!   allowed only where it is listed explicitly;
//! - the port defaults to the scheme's (443, 80); a base URL on another port
//!   needs an entry naming it.
//!
//! Hosts are compared by name, not by the addresses they resolve to: allow
//! only names whose DNS you trust.

use std::fmt;

/// The providers' public https hosts: what an install allows by default.
pub const DEFAULT: &str =
    "api.openai.com,api.anthropic.com,generativelanguage.googleapis.com,*.openai.azure.com";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `.openai.azure.com` for `*.openai.azure.com`.
    Below(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    scheme: Scheme,
    host: HostPattern,
    port: u16,
}

/// The validated allow-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<Entry>,
    /// As configured, for messages.
    listed: String,
}

/// Where a base URL points, normalised for matching.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

/// Why a base URL may not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a URL the proxy could send to.
    Invalid(String),
    /// A URL, but not to an allowed host.
    NotAllowed(String),
}

impl AllowedHosts {
    /// Parses entries (empty ones are skipped); at least one must remain.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut parsed = Vec::new();
        let mut listed = Vec::new();
        for raw in entries {
            let entry = raw.trim();
            if entry.is_empty() {
                continue;
            }
            parsed.push(parse_entry(entry)?);
            listed.push(entry.to_string());
        }
        if parsed.is_empty() {
            return Err("the allowed upstream hosts must name at least one host".into());
        }
        Ok(AllowedHosts {
            entries: parsed,
            listed: listed.join(", "),
        })
    }

    /// The providers' public https hosts ([`DEFAULT`]).
    pub fn defaults() -> Self {
        Self::parse(DEFAULT.split(',')).expect("the default hosts parse")
    }

    /// Checks that `base_url` is an http(s) URL to an allowed scheme, host and
    /// port. Messages name the URL's scheme, host and port and the list, both
    /// of which the UpstreamKey's author may see.
    pub fn check(&self, base_url: &str) -> Result<(), Refusal> {
        let target = target(base_url).map_err(Refusal::Invalid)?;
        if self.entries.iter().any(|e| e.admits(&target)) {
            return Ok(());
        }
        let hint = if target.scheme == Scheme::Http {
            " (plain http must be allowed explicitly, as http://host:port)"
        } else {
            ""
        };
        Err(Refusal::NotAllowed(format!(
            "upstream {target} is not an allowed upstream host{hint}; allowed: {}. \
             The platform team allows more with the operator's --allowed-upstream-hosts \
             (Helm value operator.allowedUpstreamHosts)",
            self.listed
        )))
    }
}

impl Entry {
    fn admits(&self, t: &Target) -> bool {
        self.scheme == t.scheme
            && self.port == t.port
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => *h == t.host,
                HostPattern::Below(suffix) => {
                    t.host.len() > suffix.len() && t.host.ends_with(suffix.as_str())
                }
            }
    }
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    let bad = |why: &str| {
        Err(format!(
            "allowed upstream host {entry:?} {why} (expected e.g. api.openai.com, \
             *.openai.azure.com, llm.internal:8443 or http://10.0.0.5:8000)"
        ))
    };
    let lower = entry.to_ascii_lowercase();
    let (scheme, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if lower.contains("://") {
        return bad("has a scheme other than https:// or http://");
    } else {
        (Scheme::Https, lower.as_str())
    };
    if rest.contains(['/', '?', '#', '@']) {
        return bad("must be a host and an optional port, without path or user");
    }
    let (host, port) = match split_port(rest) {
        Ok(parts) => parts,
        Err(why) => return bad(why),
    };
    let port = match port {
        Some(p) => p,
        None => scheme.default_port(),
    };
    let host = if host == "*" {
        HostPattern::Any
    } else if let Some(domain) = host.strip_prefix("*.") {
        if !is_host(domain) {
            return bad("has no valid domain after *.");
        }
        HostPattern::Below(format!(".{}", domain.trim_end_matches('.')))
    } else if is_host(host) {
        HostPattern::Exact(host.trim_end_matches('.').to_string())
    } else {
        return bad("is not a host name, *.domain, * or an IP address");
    };
    Ok(Entry { scheme, host, port })
}

/// `host[:port]` or `[v6][:port]`, into the host and the port.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if rest.is_empty() => (host, None),
                    None => return Err("has text after the IPv6 address"),
                }
            }
            None => return Err("has an unclosed ["),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err("has a port that is not a number from 1 to 65535"),
        },
        None => None,
    };
    Ok((host, port))
}

/// A DNS name (letters, digits, `-`, `_`, dots between labels), an IPv4
/// address, or a bracketed IPv6 address. Rules out anything a resolver or
/// URL parser could read differently from this check.
fn is_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses a base URL the way the proxy does (`http::Uri`), so that both read
/// the same host out of it.
fn target(base_url: &str) -> Result<Target, String> {
    let uri: http::Uri = base_url
        .parse()
        .map_err(|_| format!("baseUrl {base_url:?} is not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        _ => {
            return Err(format!(
                "baseUrl {base_url:?} must start with https:// or http://"
            ));
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(format!("baseUrl {base_url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("baseUrl {base_url:?} must not contain user info"));
    }
    if base_url.contains(['?', '#']) {
        return Err(format!(
            "baseUrl {base_url:?} must not have a query or fragment"
        ));
    }
    let host = authority.host().to_ascii_lowercase();
    if !is_host(&host) {
        return Err(format!("baseUrl {base_url:?} does not name a valid host"));
    }
    Ok(Target {
        scheme,
        host: host.trim_end_matches('.').to_string(),
        port: uri.port_u16().unwrap_or(scheme.default_port()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strake_crds::Provider;

    fn allowed(list: &str) -> AllowedHosts {
        AllowedHosts::parse(list.split(',')).unwrap()
    }

    fn is_allowed(list: &AllowedHosts, url: &str) -> bool {
        match list.check(url) {
            Ok(()) => true,
            Err(Refusal::NotAllowed(message)) => {
                assert!(
                    message.contains("not an allowed upstream host"),
                    "{message}"
                );
                false
            }
            Err(Refusal::Invalid(message)) => panic!("{url} is invalid: {message}"),
        }
    }

    #[test]
    fn the_defaults_allow_every_provider_default_and_azure_resources() {
        let d = AllowedHosts::defaults();
        for p in Provider::ALL {
            if let Some(url) = p.default_base_url() {
                assert!(is_allowed(&d, url), "{p}: {url}");
            }
        }
        assert!(is_allowed(&d, "https://contoso.openai.azure.com"));
        assert!(is_allowed(&d, "https://contoso.openai.azure.com/openai/"));
        assert!(is_allowed(&d, "https://API.OpenAI.com:443/v1"));
        assert!(is_allowed(&d, "https://api.openai.com./"));
    }

    #[test]
    fn the_defaults_refuse_plain_http_other_ports_hosts_and_addresses() {
        let d = AllowedHosts::defaults();
        for url in [
            "http://api.openai.com",
            "https://api.openai.com:8443",
            "http://169.254.169.254",
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.169.254",
            "http://kubernetes.default.svc",
            "https://openai.azure.com",
            "https://api.openai.com.evil.example",
            "https://evilopenai.azure.com",
            "http://[::1]:8080",
            "http://127.0.0.1:18080",
        ] {
            assert!(!is_allowed(&d, url), "{url}");
        }
        let Err(Refusal::NotAllowed(message)) = d.check("http://169.254.169.254") else {
            panic!("expected a refusal");
        };
        assert!(message.contains("http://169.254.169.254:80"), "{message}");
        assert!(message.contains("plain http"), "{message}");
        assert!(message.contains("--allowed-upstream-hosts"), "{message}");
    }

    #[test]
    fn urls_that_could_be_read_two_ways_are_invalid() {
        let d = allowed("*");
        for url in [
            "https://api.openai.com@169.254.169.254/",
            "https://user:pw@api.openai.com",
            "ftp://api.openai.com",
            "api.openai.com",
            "https://api.openai.com/?x=1",
            "https://api.openai.com/#frag",
            "https://api%2eopenai.com",
            "https:///path",
        ] {
            assert!(
                matches!(d.check(url), Err(Refusal::Invalid(_))),
                "{url}: {:?}",
                d.check(url)
            );
        }
    }

    #[test]
    fn entries_name_scheme_host_and_port() {
        let list =
            allowed("llm.internal:8443, http://10.0.0.5:8000,*.example.com,http://[::1]:9000");
        assert!(is_allowed(&list, "https://llm.internal:8443/v1"));
        assert!(!is_allowed(&list, "https://llm.internal"));
        assert!(!is_allowed(&list, "http://llm.internal:8443"));
        assert!(is_allowed(&list, "http://10.0.0.5:8000"));
        assert!(!is_allowed(&list, "https://10.0.0.5:8000"));
        assert!(!is_allowed(&list, "http://10.0.0.5"));
        assert!(is_allowed(&list, "https://a.b.example.com"));
        assert!(!is_allowed(&list, "https://example.com"));
        assert!(!is_allowed(&list, "http://a.example.com"));
        assert!(is_allowed(&list, "http://[::1]:9000"));
        let any = allowed("*,http://*:80");
        assert!(is_allowed(&any, "https://anything.example"));
        assert!(is_allowed(&any, "http://anything.example"));
        assert!(!is_allowed(&any, "https://anything.example:8443"));
    }

    #[test]
    fn bad_entries_are_rejected_with_the_entry_named() {
        for bad in [
            "ftp://x.example",
            "https://x.example/v1",
            "user@x.example",
            "x.example:0",
            "x.example:99999",
            "x.example:http",
            "*.",
            "**.example.com",
            "x..example",
            "exa mple.com",
            "[::1",
            "[nope]",
        ] {
            let err = AllowedHosts::parse([bad]).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(AllowedHosts::parse(["", " "]).is_err(), "an empty list");
    }
}
