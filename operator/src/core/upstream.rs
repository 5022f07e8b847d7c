//! UpstreamKey: is it usable, and what the proxy should get if it is.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use strake_crds::contract::{self, SourceRef, UpstreamRecord};
use strake_crds::{
    StrakeToken, UPSTREAM_KEY_SECRET_LABEL, UPSTREAM_KEY_SECRET_OPT_IN,
    UPSTREAM_KEY_SECRET_SELECTOR, UpstreamKey, UpstreamKeyStatus,
};

use crate::core::condition;
use crate::core::upstream_hosts::{AllowedHosts, Refusal};

/// Reasons on an UpstreamKey's `Ready` condition.
pub mod reason {
    pub const PUBLISHED: &str = "Published";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const KEY_MISSING: &str = "KeyMissing";
    pub const KEY_INVALID: &str = "KeyInvalid";
    pub const BASE_URL_REQUIRED: &str = "BaseUrlRequired";
    pub const INVALID_BASE_URL: &str = "InvalidBaseUrl";
    pub const HOST_NOT_ALLOWED: &str = "HostNotAllowed";
    pub const SECRET_NOT_OPTED_IN: &str = "SecretNotOptedIn";
    pub const INVALID_HEADER: &str = "InvalidHeader";
}

/// The real provider key. Its `Debug` is redacted, so no `{:?}` can leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Vec<u8>);

impl ApiKey {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    #[cfg(test)]
    pub fn for_tests(key: &[u8]) -> Self {
        ApiKey(key.to_vec())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamVerdict {
    /// Publish this record and key to the proxy.
    Ready { record: UpstreamRecord, key: ApiKey },
    /// Not usable; nothing is published for it.
    NotReady {
        reason: &'static str,
        message: String,
    },
}

impl UpstreamVerdict {
    fn not_ready(reason: &'static str, message: String) -> Self {
        UpstreamVerdict::NotReady { reason, message }
    }
}

pub fn source(uk: &UpstreamKey) -> SourceRef {
    SourceRef {
        namespace: uk.metadata.namespace.clone().unwrap_or_default(),
        name: uk.metadata.name.clone().unwrap_or_default(),
    }
}

/// Checks an UpstreamKey against the hosts the platform team allows and the
/// Secret its `secretRef` names (`None` when that Secret does not exist).
/// Spec problems are reported before the Secret's, and a Secret that has not
/// opted in (see [`strake_crds::UPSTREAM_KEY_SECRET_LABEL`]) is refused
/// before anything about its data is looked at, so a status tells the
/// UpstreamKey's author nothing about a Secret they were not given. No
/// message ever contains the key or a header value.
pub fn evaluate(
    uk: &UpstreamKey,
    secret: Option<&Secret>,
    allowed_hosts: &AllowedHosts,
) -> UpstreamVerdict {
    let spec = &uk.spec;
    if let Err(message) = check_headers(&spec.headers) {
        return UpstreamVerdict::not_ready(reason::INVALID_HEADER, message);
    }
    let base_url = match spec
        .base_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .or(spec.provider.default_base_url())
    {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            return UpstreamVerdict::not_ready(
                reason::BASE_URL_REQUIRED,
                format!(
                    "provider {} has no public endpoint: set spec.baseUrl",
                    spec.provider
                ),
            );
        }
    };
    match allowed_hosts.check(&base_url) {
        Ok(()) => {}
        Err(Refusal::Invalid(message)) => {
            return UpstreamVerdict::not_ready(reason::INVALID_BASE_URL, message);
        }
        Err(Refusal::NotAllowed(message)) => {
            return UpstreamVerdict::not_ready(reason::HOST_NOT_ALLOWED, message);
        }
    }
    let secret_ref = &spec.secret_ref;
    let opt_in = UPSTREAM_KEY_SECRET_SELECTOR;
    let Some(secret) = secret else {
        return UpstreamVerdict::not_ready(
            reason::SECRET_NOT_FOUND,
            format!(
                "Secret {} not found in this namespace (it also needs the label {opt_in})",
                secret_ref.name
            ),
        );
    };
    let opted_in = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(UPSTREAM_KEY_SECRET_LABEL))
        .is_some_and(|v| v == UPSTREAM_KEY_SECRET_OPT_IN);
    if !opted_in {
        return UpstreamVerdict::not_ready(
            reason::SECRET_NOT_OPTED_IN,
            format!(
                "Secret {name} is not marked for use by UpstreamKeys: someone who may \
                 edit it must label it, e.g. kubectl -n {namespace} label secret {name} {opt_in}",
                name = secret_ref.name,
                namespace = uk.metadata.namespace.as_deref().unwrap_or_default(),
            ),
        );
    }
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    // A key written with `echo` into a file carries a newline; no provider
    // key contains whitespace, so trimming is safe.
    let key = raw.trim_ascii();
    if key.is_empty() {
        return UpstreamVerdict::not_ready(
            reason::KEY_MISSING,
            format!(
                "Secret {} has no non-empty key {:?}",
                secret_ref.name, secret_ref.key
            ),
        );
    }
    if http::HeaderValue::from_bytes(key).is_err() {
        return UpstreamVerdict::not_ready(
            reason::KEY_INVALID,
            format!(
                "key {:?} of Secret {} contains characters a header cannot carry",
                secret_ref.key, secret_ref.name
            ),
        );
    }
    let source = source(uk);
    UpstreamVerdict::Ready {
        record: UpstreamRecord {
            name: contract::upstream_id(&source.namespace, &source.name),
            provider: spec.provider,
            base_url,
            headers: spec.headers.clone(),
            endpoints: spec.endpoints.clone(),
            source: Some(source),
            budget: None,
        },
        key: ApiKey(key.to_vec()),
    }
}

fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in headers {
        let Ok(parsed) = http::HeaderName::from_bytes(name.as_bytes()) else {
            return Err(format!(
                "header name {name:?} is not a valid HTTP header name"
            ));
        };
        if strake_crds::headers::is_reserved(parsed.as_str()) {
            return Err(format!(
                "header {name:?} is set by the proxy and cannot be configured"
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "the value of header {name:?} contains characters a header cannot carry"
            ));
        }
    }
    Ok(())
}

/// How many live StrakeTokens in the UpstreamKey's namespace name it.
pub fn tokens_naming<'a>(
    tokens: impl IntoIterator<Item = &'a StrakeToken>,
    namespace: &str,
    name: &str,
) -> u32 {
    let count = tokens
        .into_iter()
        .filter(|t| {
            t.metadata.namespace.as_deref() == Some(namespace)
                && t.metadata.deletion_timestamp.is_none()
                && t.spec.upstreams.iter().any(|u| u.0 == name)
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The status this operator owns on an UpstreamKey.
pub fn status(
    uk: &UpstreamKey,
    verdict: &UpstreamVerdict,
    tokens: u32,
    now: Timestamp,
) -> UpstreamKeyStatus {
    let generation = uk.metadata.generation;
    let previous = uk
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = match verdict {
        UpstreamVerdict::Ready { record, .. } => condition::ready(
            true,
            reason::PUBLISHED,
            format!("published to the proxy as {}", record.name),
            generation,
            previous,
            now,
        ),
        UpstreamVerdict::NotReady { reason, message } => {
            condition::ready(false, reason, message.clone(), generation, previous, now)
        }
    };
    UpstreamKeyStatus {
        conditions: vec![ready],
        observed_generation: generation,
        tokens: Some(tokens),
        last_used_at: None,
        usage: None,
        budget: None,
        budget_alerts: None,
    }
}

/// The key's budget decisions, when it has a budget (see
/// [`crate::core::budget`]). `what` names the key in messages.
pub fn budget_plan(
    uk: &UpstreamKey,
    now: Timestamp,
    collect_every: std::time::Duration,
    what: &str,
) -> Option<crate::core::budget::BudgetPlan> {
    let status = uk.status.as_ref();
    let empty = Default::default();
    Some(crate::core::budget::plan(&crate::core::budget::Observed {
        budget: uk.spec.budget.as_ref()?,
        bucket: status.and_then(|s| s.budget.as_ref()),
        alerts: status.and_then(|s| s.budget_alerts.as_ref()),
        collected: status
            .and_then(|s| s.usage.as_ref())
            .map_or(&empty, |u| &u.collected),
        conditions: status.map_or(&[], |s| s.conditions.as_slice()),
        generation: uk.metadata.generation,
        now,
        collect_every,
        what,
    }))
}

/// True when an UpstreamKey's status says it is published for its current spec.
pub fn is_ready(uk: &UpstreamKey) -> bool {
    uk.metadata.deletion_timestamp.is_none()
        && uk
            .status
            .as_ref()
            .is_some_and(|s| condition::is_ready(&s.conditions, uk.metadata.generation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use strake_crds::Provider;

    const KEY: &str = "sk-proj-REALKEY-never-shown";

    fn uk(provider: Provider, base_url: Option<&str>) -> UpstreamKey {
        crate::core::fixtures::upstream_key("openai", provider, base_url)
    }

    /// A Secret labelled for UpstreamKeys.
    fn secret(key: &str, value: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("openai-upstream".into()),
                labels: Some(BTreeMap::from([(
                    UPSTREAM_KEY_SECRET_LABEL.to_string(),
                    UPSTREAM_KEY_SECRET_OPT_IN.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(value.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn check(uk: &UpstreamKey, secret: Option<&Secret>) -> UpstreamVerdict {
        evaluate(uk, secret, &AllowedHosts::defaults())
    }

    fn reason_of(v: &UpstreamVerdict) -> &'static str {
        match v {
            UpstreamVerdict::Ready { .. } => reason::PUBLISHED,
            UpstreamVerdict::NotReady { reason, message } => {
                assert!(!message.contains(KEY), "message leaks the key");
                reason
            }
        }
    }

    #[test]
    fn a_complete_upstream_is_published_with_the_default_base_url() {
        let v = check(
            &uk(Provider::OpenAi, None),
            Some(&secret("api-key", format!("{KEY}\n").as_bytes())),
        );
        let UpstreamVerdict::Ready { record, key } = v else {
            panic!("expected Ready, got {v:?}");
        };
        assert_eq!(record.name, "team-a/openai");
        assert_eq!(record.base_url, "https://api.openai.com");
        assert_eq!(record.provider, Provider::OpenAi);
        assert_eq!(record.source.unwrap().name, "openai");
        // Trimmed, and never shown by Debug.
        assert_eq!(key.expose(), KEY.as_bytes());
        assert!(!format!("{key:?}").contains(KEY));
    }

    #[test]
    fn each_problem_has_its_reason() {
        let ok = secret("api-key", KEY.as_bytes());
        assert_eq!(
            reason_of(&check(&uk(Provider::OpenAi, None), None)),
            reason::SECRET_NOT_FOUND
        );
        assert_eq!(
            reason_of(&check(
                &uk(Provider::OpenAi, None),
                Some(&secret("other", KEY.as_bytes()))
            )),
            reason::KEY_MISSING
        );
        assert_eq!(
            reason_of(&check(
                &uk(Provider::OpenAi, None),
                Some(&secret("api-key", b" \n"))
            )),
            reason::KEY_MISSING
        );
        assert_eq!(
            reason_of(&check(
                &uk(Provider::OpenAi, None),
                Some(&secret("api-key", b"a\x01b"))
            )),
            reason::KEY_INVALID
        );
        assert_eq!(
            reason_of(&check(&uk(Provider::AzureOpenAi, None), Some(&ok))),
            reason::BASE_URL_REQUIRED
        );
        assert_eq!(
            reason_of(&check(&uk(Provider::OpenAiCompatible, None), Some(&ok))),
            reason::BASE_URL_REQUIRED
        );
        assert_eq!(
            reason_of(&check(
                &uk(Provider::AzureOpenAi, Some("https://x.openai.azure.com/")),
                Some(&ok)
            )),
            reason::PUBLISHED
        );
        for bad in ["bad header", "Authorization", "x-api-key", "Host", ""] {
            let mut u = uk(Provider::OpenAi, None);
            u.spec.headers.insert(bad.into(), "v".into());
            assert_eq!(
                reason_of(&check(&u, Some(&ok))),
                reason::INVALID_HEADER,
                "{bad}"
            );
        }
        let mut u = uk(Provider::OpenAi, None);
        u.spec
            .headers
            .insert("OpenAI-Organization".into(), "line\nbreak".into());
        assert_eq!(reason_of(&check(&u, Some(&ok))), reason::INVALID_HEADER);
        u.spec
            .headers
            .insert("OpenAI-Organization".into(), "org-123".into());
        assert_eq!(reason_of(&check(&u, Some(&ok))), reason::PUBLISHED);
    }

    #[test]
    fn a_secret_must_opt_in_before_anything_about_it_is_reported() {
        let u = uk(Provider::OpenAi, None);
        let unlabelled = |key: &str, value: &[u8]| {
            let mut s = secret(key, value);
            s.metadata.labels = None;
            s
        };
        // Whatever the unlabelled Secret holds, the answer is the same: the
        // author learns nothing about its keys or values.
        for s in [
            unlabelled("api-key", KEY.as_bytes()),
            unlabelled("other", KEY.as_bytes()),
            unlabelled("api-key", b"a\x01b"),
        ] {
            let v = check(&u, Some(&s));
            assert_eq!(reason_of(&v), reason::SECRET_NOT_OPTED_IN);
            let UpstreamVerdict::NotReady { message, .. } = v else {
                unreachable!()
            };
            assert!(
                message.contains(
                    "kubectl -n team-a label secret openai-upstream strake.sh/upstream-key=true"
                ),
                "{message}"
            );
        }
        let mut wrong_value = secret("api-key", KEY.as_bytes());
        wrong_value
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(UPSTREAM_KEY_SECRET_LABEL.into(), "yes".into());
        assert_eq!(
            reason_of(&check(&u, Some(&wrong_value))),
            reason::SECRET_NOT_OPTED_IN
        );
        let UpstreamVerdict::NotReady { message, .. } = check(&u, None) else {
            panic!("a missing Secret is not Ready");
        };
        assert!(message.contains("strake.sh/upstream-key=true"), "{message}");
        assert_eq!(
            reason_of(&check(&u, Some(&secret("api-key", KEY.as_bytes())))),
            reason::PUBLISHED
        );
    }

    #[test]
    fn a_base_url_outside_the_allowed_hosts_is_refused_before_the_secret_is_read() {
        let ok = secret("api-key", KEY.as_bytes());
        for url in [
            "http://169.254.169.254",
            "http://api.openai.com",
            "https://kubernetes.default.svc",
            "https://api.openai.com:8443",
        ] {
            let u = uk(Provider::OpenAiCompatible, Some(url));
            assert_eq!(
                reason_of(&check(&u, Some(&ok))),
                reason::HOST_NOT_ALLOWED,
                "{url}"
            );
            // Reported whether or not the Secret exists or opted in.
            assert_eq!(reason_of(&check(&u, None)), reason::HOST_NOT_ALLOWED);
        }
        let u = uk(
            Provider::OpenAi,
            Some("https://api.openai.com@169.254.169.254"),
        );
        assert_eq!(reason_of(&check(&u, Some(&ok))), reason::INVALID_BASE_URL);

        // The platform team allows its in-cluster server explicitly.
        let mine = AllowedHosts::parse(["http://vllm.inference.svc:8000"]).unwrap();
        let u = uk(
            Provider::OpenAiCompatible,
            Some("http://vllm.inference.svc:8000/"),
        );
        let v = evaluate(&u, Some(&ok), &mine);
        let UpstreamVerdict::Ready { record, .. } = v else {
            panic!("expected Ready, got {v:?}");
        };
        assert_eq!(record.base_url, "http://vllm.inference.svc:8000");
        // ... and that list replaces the defaults.
        let v = evaluate(&uk(Provider::OpenAi, None), Some(&ok), &mine);
        assert_eq!(reason_of(&v), reason::HOST_NOT_ALLOWED);
    }

    #[test]
    fn status_reports_readiness_and_token_count() {
        let u = uk(Provider::OpenAi, None);
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let v = check(&u, Some(&secret("api-key", KEY.as_bytes())));
        let s = status(&u, &v, 3, now);
        assert_eq!(s.tokens, Some(3));
        assert_eq!(s.observed_generation, Some(1));
        let mut published = u.clone();
        published.status = Some(s);
        assert!(is_ready(&published));
        published.metadata.generation = Some(2);
        assert!(!is_ready(&published), "a stale status is not Ready");
        assert!(!is_ready(&u), "no status is not Ready");
    }

    #[test]
    fn token_count_ignores_other_namespaces_and_deleting_tokens() {
        use strake_crds::StrakeTokenSpec;
        use strake_crds::resources::UpstreamName;
        let tok = |ns: &str, name: &str, ups: &[&str], deleting: bool| {
            let mut t = StrakeToken::new(
                name,
                StrakeTokenSpec {
                    identity: name.into(),
                    upstreams: ups.iter().map(|u| UpstreamName(u.to_string())).collect(),
                    expires_at: None,
                    suspended: false,
                    allowed_models: vec![],
                    limits: None,
                    endpoints: vec![],
                    budget: None,
                    secret_name: None,
                    rotation: 0,
                    rotation_grace_period: None,
                    federated: Vec::new(),
                    service_account: None,
                    service_account_audience: None,
                    mint_token: None,
                },
            );
            t.metadata.namespace = Some(ns.into());
            if deleting {
                t.metadata.deletion_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
                );
            }
            t
        };
        let tokens = [
            tok("team-a", "a", &["openai"], false),
            tok("team-a", "b", &["openai", "anthropic"], false),
            tok("team-a", "c", &["anthropic"], false),
            tok("team-a", "d", &["openai"], true),
            tok("team-b", "e", &["openai"], false),
        ];
        assert_eq!(tokens_naming(&tokens, "team-a", "openai"), 2);
        assert_eq!(tokens_naming(&tokens, "team-a", "gemini"), 0);
    }
}
