//! The ready-to-use environment variables in a token holder's Secret.
//!
//! Every upstream gets its provider's usual pair (`OPENAI_BASE_URL` +
//! `OPENAI_API_KEY`, `ANTHROPIC_BASE_URL` + `ANTHROPIC_AUTH_TOKEN`, …), so a pod
//! can `envFrom` the Secret and an unmodified SDK talks to the proxy.
//!
//! The base URL is the proxy's public endpoint plus the provider's SDK suffix.
//! When two of the token's upstreams speak the same API style, the proxy cannot
//! tell from an unprefixed request which one is meant, so those upstreams get
//! an explicit `/<upstream-name>` prefix. When two upstreams want the same
//! variable name, the first in `spec.upstreams` wins; every upstream is always
//! reachable through its own `STRAKE_<NAME>_BASE_URL`.

use std::collections::BTreeMap;

use strake_crds::Provider;

/// Always present: the proxy's endpoint, unprefixed.
pub const STRAKE_BASE_URL: &str = "STRAKE_BASE_URL";

/// One of the token's upstreams whose provider is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvUpstream<'a> {
    /// The UpstreamKey's name, as in `spec.upstreams`.
    pub name: &'a str,
    pub provider: Provider,
}

/// The endpoint without a trailing slash, so suffixes join cleanly.
pub fn normalize_endpoint(endpoint: &str) -> &str {
    endpoint.trim_end_matches('/')
}

/// The base URL a client configures for each upstream, in the given order.
pub fn base_urls(endpoint: &str, upstreams: &[EnvUpstream<'_>]) -> Vec<String> {
    let endpoint = normalize_endpoint(endpoint);
    upstreams
        .iter()
        .map(|u| {
            let style = u.provider.style();
            let ambiguous = upstreams
                .iter()
                .filter(|other| other.provider.style() == style)
                .count()
                > 1;
            if ambiguous {
                format!("{endpoint}/{}{}", u.name, u.provider.base_url_suffix())
            } else {
                format!("{endpoint}{}", u.provider.base_url_suffix())
            }
        })
        .collect()
}

/// The environment variables for a token, without the `token` key itself.
pub fn render(
    endpoint: &str,
    upstreams: &[EnvUpstream<'_>],
    token: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        STRAKE_BASE_URL.to_string(),
        normalize_endpoint(endpoint).to_string(),
    );
    for (u, base_url) in upstreams.iter().zip(base_urls(endpoint, upstreams)) {
        let (base_var, key_var) = u.provider.env_keys();
        env.entry(base_var.to_string())
            .or_insert_with(|| base_url.clone());
        env.entry(key_var.to_string())
            .or_insert_with(|| token.to_string());
        env.insert(format!("STRAKE_{}_BASE_URL", upper_snake(u.name)), base_url);
    }
    env
}

/// `my-openai` → `MY_OPENAI`: a name as an environment variable fragment.
pub fn upper_snake(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "https://llm.example.com";
    const TOKEN: &str = "sk-strk-test";

    fn up(name: &str, provider: Provider) -> EnvUpstream<'_> {
        EnvUpstream { name, provider }
    }

    #[test]
    fn single_openai_upstream_gets_the_v1_suffix() {
        let env = render(EP, &[up("openai", Provider::OpenAi)], TOKEN);
        assert_eq!(env["OPENAI_BASE_URL"], "https://llm.example.com/v1");
        assert_eq!(env["OPENAI_API_KEY"], TOKEN);
        assert_eq!(env["STRAKE_BASE_URL"], EP);
        assert_eq!(env["STRAKE_OPENAI_BASE_URL"], "https://llm.example.com/v1");
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn openai_and_anthropic_share_the_unprefixed_endpoint() {
        let env = render(
            &format!("{EP}/"),
            &[
                up("openai", Provider::OpenAi),
                up("anthropic", Provider::Anthropic),
            ],
            TOKEN,
        );
        assert_eq!(env["OPENAI_BASE_URL"], "https://llm.example.com/v1");
        assert_eq!(env["OPENAI_API_KEY"], TOKEN);
        assert_eq!(env["ANTHROPIC_BASE_URL"], "https://llm.example.com");
        assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], TOKEN);
        assert!(!env.contains_key("ANTHROPIC_API_KEY"));
        assert_eq!(env["STRAKE_BASE_URL"], EP);
        assert_eq!(env["STRAKE_ANTHROPIC_BASE_URL"], "https://llm.example.com");
    }

    #[test]
    fn same_style_twice_is_prefixed_and_the_first_wins_the_shared_names() {
        let ups = [
            up("openai", Provider::OpenAi),
            up("local-llm", Provider::OpenAiCompatible),
            up("claude", Provider::Anthropic),
        ];
        let env = render(EP, &ups, TOKEN);
        assert_eq!(env["OPENAI_BASE_URL"], "https://llm.example.com/openai/v1");
        assert_eq!(env["OPENAI_API_KEY"], TOKEN);
        assert_eq!(
            env["STRAKE_OPENAI_BASE_URL"],
            "https://llm.example.com/openai/v1"
        );
        assert_eq!(
            env["STRAKE_LOCAL_LLM_BASE_URL"],
            "https://llm.example.com/local-llm/v1"
        );
        // Anthropic is the only one of its style: no prefix needed.
        assert_eq!(env["ANTHROPIC_BASE_URL"], "https://llm.example.com");
        assert_eq!(env["STRAKE_CLAUDE_BASE_URL"], "https://llm.example.com");
    }

    #[test]
    fn every_provider_has_its_own_variables() {
        let ups = [up("az", Provider::AzureOpenAi), up("gem", Provider::Gemini)];
        let env = render(EP, &ups, TOKEN);
        assert_eq!(env["AZURE_OPENAI_ENDPOINT"], EP);
        assert_eq!(env["AZURE_OPENAI_API_KEY"], TOKEN);
        assert_eq!(env["GOOGLE_GEMINI_BASE_URL"], EP);
        assert_eq!(env["GEMINI_API_KEY"], TOKEN);
    }

    #[test]
    fn no_upstreams_still_names_the_endpoint() {
        let env = render(EP, &[], TOKEN);
        assert_eq!(env.len(), 1);
        assert_eq!(env[STRAKE_BASE_URL], EP);
    }

    #[test]
    fn upper_snake_maps_dns_names() {
        assert_eq!(upper_snake("my-openai-2"), "MY_OPENAI_2");
        assert_eq!(upper_snake("a.b"), "A_B");
    }
}
