//! Provider APIs: the parts of each one that Strake must know to swap a key.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An LLM provider API. The serialized names are what `spec.provider` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    Gemini,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

/// The request style a provider speaks. Routing uses it to pick an upstream
/// for an unprefixed path when a token has several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiStyle {
    OpenAi,
    Anthropic,
    Azure,
    Gemini,
}

/// How the upstream key is presented to the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A header carrying the bare key, such as `x-api-key`.
    Plain(&'static str),
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::AzureOpenAi,
        Provider::Gemini,
        Provider::OpenAiCompatible,
    ];

    /// The name used in `spec.provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::AzureOpenAi => "azure-openai",
            Provider::Gemini => "gemini",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    pub fn style(self) -> ApiStyle {
        match self {
            Provider::OpenAi | Provider::OpenAiCompatible => ApiStyle::OpenAi,
            Provider::Anthropic => ApiStyle::Anthropic,
            Provider::AzureOpenAi => ApiStyle::Azure,
            Provider::Gemini => ApiStyle::Gemini,
        }
    }

    /// The public endpoint used when `spec.baseUrl` is empty. Azure and
    /// OpenAI-compatible servers have no public default: their base URL is required.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi => Some("https://api.openai.com"),
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::Gemini => Some("https://generativelanguage.googleapis.com"),
            Provider::AzureOpenAi | Provider::OpenAiCompatible => None,
        }
    }

    /// The header the provider reads its key from.
    pub fn key_header(self) -> KeyHeader {
        match self {
            Provider::OpenAi | Provider::OpenAiCompatible => KeyHeader::Bearer,
            Provider::Anthropic => KeyHeader::Plain("x-api-key"),
            Provider::AzureOpenAi => KeyHeader::Plain("api-key"),
            Provider::Gemini => KeyHeader::Plain("x-goog-api-key"),
        }
    }

    /// Environment variables the provider's SDKs and tools read: (base URL, key).
    ///
    /// Anthropic's key goes in `ANTHROPIC_AUTH_TOKEN`, which the SDKs and Claude
    /// Code send as a bearer token; setting `ANTHROPIC_API_KEY` too would make
    /// Claude Code warn about conflicting credentials.
    pub fn env_keys(self) -> (&'static str, &'static str) {
        match self {
            Provider::OpenAi | Provider::OpenAiCompatible => ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
            Provider::Anthropic => ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"),
            Provider::AzureOpenAi => ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY"),
            Provider::Gemini => ("GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY"),
        }
    }

    /// The path SDKs expect after the base URL: the OpenAI SDK's base URL
    /// ends in `/v1`, the others append their own version segment.
    pub fn base_url_suffix(self) -> &'static str {
        match self {
            Provider::OpenAi | Provider::OpenAiCompatible => "/v1",
            Provider::Anthropic | Provider::AzureOpenAi | Provider::Gemini => "",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_names_match_the_documented_spec_values() {
        for p in Provider::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            let back: Provider = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p);
        }
        assert!(serde_json::from_str::<Provider>("\"OpenAI\"").is_err());
    }

    #[test]
    fn providers_without_public_endpoint_have_no_default() {
        assert_eq!(Provider::AzureOpenAi.default_base_url(), None);
        assert_eq!(Provider::OpenAiCompatible.default_base_url(), None);
        assert!(
            Provider::OpenAi
                .default_base_url()
                .unwrap()
                .starts_with("https://")
        );
    }
}
