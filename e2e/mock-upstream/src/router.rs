//! Maps a request to a provider endpoint, checks the provider's credential,
//! applies the delay/status knobs and dispatches.

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;

use crate::config::{Behavior, Keys};
use crate::knobs;
use crate::reply::{Resp, new_id};
use crate::{anthropic, embeddings, gemini, headers, openai, responses};

/// The API style of an endpoint: it decides the credential header and the
/// error JSON shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
}

impl Provider {
    /// An error in this provider's own JSON shape.
    pub(crate) fn error(self, status: StatusCode, message: &str) -> Resp {
        match self {
            Provider::OpenAi => openai::error(status, message),
            Provider::Azure => openai::azure_error(status, message),
            Provider::Anthropic => anthropic::error(status, message),
            Provider::Gemini => gemini::error(status, message),
        }
    }
}

/// Everything a handler needs about the request.
pub(crate) struct Ctx<'a> {
    pub(crate) parts: &'a Parts,
    pub(crate) body: &'a Bytes,
    pub(crate) defaults: &'a Behavior,
}

impl Ctx<'_> {
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// Parses the JSON body, answering a parse failure in the provider's shape.
    pub(crate) fn parse<'de, T: Deserialize<'de>>(
        &'de self,
        provider: Provider,
    ) -> Result<T, Resp> {
        serde_json::from_slice(self.body).map_err(|e| {
            let message = match provider {
                Provider::OpenAi | Provider::Azure => format!(
                    "We could not parse the JSON body of your request. (HINT: This likely means \
                     you aren't using your HTTP library correctly. The OpenAI API expects a JSON \
                     payload, but what was sent was not valid JSON.) ({e})"
                ),
                Provider::Anthropic => format!("There was an error parsing the body: {e}"),
                Provider::Gemini => format!("Invalid JSON payload received. {e}"),
            };
            provider.error(StatusCode::BAD_REQUEST, &message)
        })
    }

    /// Resolves the knobs for this request, waits out `delay`, and turns a
    /// requested error status into that error. Handlers call this once they
    /// know the model (which may carry knobs).
    pub(crate) async fn prepare(
        &self,
        provider: Provider,
        model: Option<&str>,
    ) -> Result<Behavior, Resp> {
        let behavior = knobs::resolve(self.defaults, model, self.headers())
            .map_err(|e| provider.error(StatusCode::BAD_REQUEST, &e))?;
        if !behavior.delay.is_zero() {
            tokio::time::sleep(behavior.delay).await;
        }
        match behavior.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            Some(status) if status.is_client_error() || status.is_server_error() => {
                Err(provider.error(status, simulated_message(status)))
            }
            _ => Ok(behavior),
        }
    }
}

fn simulated_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Invalid request (simulated by the Strake mock upstream).",
        401 => "Invalid authentication (simulated by the Strake mock upstream).",
        403 => "Permission denied (simulated by the Strake mock upstream).",
        404 => "Not found (simulated by the Strake mock upstream).",
        413 => "Request too large (simulated by the Strake mock upstream).",
        429 => "Rate limit reached (simulated by the Strake mock upstream).",
        503 | 529 => "Overloaded (simulated by the Strake mock upstream).",
        _ => {
            "The server had an error processing your request (simulated by the Strake mock upstream)."
        }
    }
}

/// Answers a provider request (a 404 in OpenAI's shape if no endpoint matches).
pub(crate) async fn route(ctx: &Ctx<'_>, keys: &Keys) -> Resp {
    let method = &ctx.parts.method;
    let path = ctx.parts.uri.path();
    let Some(endpoint) = Endpoint::classify(ctx.parts) else {
        let message = format!("Invalid URL ({method} {path})");
        return Provider::OpenAi.error(StatusCode::NOT_FOUND, &message);
    };
    let provider = endpoint.provider();
    let result = async {
        authenticate(provider, ctx.parts, keys)?;
        if provider == Provider::Anthropic {
            anthropic::require_version(ctx.headers())?;
        }
        endpoint.dispatch(ctx).await
    }
    .await;
    let mut resp = result.unwrap_or_else(|e| e);
    // Real providers tag each response with a request id; SDKs surface it.
    let request_id = match provider {
        Provider::OpenAi | Provider::Azure => Some("x-request-id"),
        Provider::Anthropic => Some("request-id"),
        Provider::Gemini => None,
    };
    if let Some(name) = request_id
        && let Ok(value) = HeaderValue::from_str(&new_id("req_"))
    {
        resp.headers_mut().insert(name, value);
    }
    let status = resp.status();
    headers::add(provider, status, resp.headers_mut());
    resp
}

enum Endpoint<'p> {
    Chat,
    Completions,
    Embeddings,
    Responses,
    OpenAiModels(Option<&'p str>),
    Files,
    Azure {
        /// `None` on the `/openai/v1/` surface.
        deployment: Option<&'p str>,
        operation: AzureOp,
    },
    Messages,
    CountTokens,
    AnthropicModels(Option<&'p str>),
    Gemini {
        model: &'p str,
        method: gemini::Method,
    },
    GeminiModels,
}

#[derive(Clone, Copy)]
enum AzureOp {
    Chat,
    Completions,
    Embeddings,
}

impl<'p> Endpoint<'p> {
    fn classify(parts: &'p Parts) -> Option<Self> {
        use Endpoint::*;
        let path = parts.uri.path();
        let headers = &parts.headers;
        let post = parts.method == Method::POST;
        let get = parts.method == Method::GET;
        Some(match path {
            "/v1/chat/completions" if post => Chat,
            "/v1/completions" if post => Completions,
            "/v1/embeddings" if post => Embeddings,
            "/v1/responses" if post => Responses,
            "/v1/messages" if post => Messages,
            "/v1/messages/count_tokens" if post => CountTokens,
            "/v1/models" if get && is_anthropic(headers) => AnthropicModels(None),
            "/v1/models" if get && is_gemini(parts) => GeminiModels,
            "/v1/models" if get => OpenAiModels(None),
            "/v1beta/models" if get => GeminiModels,
            "/v1/files" if get => Files,
            _ => {
                // Azure's classic per-deployment paths, and its newer
                // OpenAI-compatible `/openai/v1/` surface (model in the body).
                let azure = match path.strip_prefix("/openai/deployments/") {
                    Some(rest) => rest
                        .split_once('/')
                        .filter(|(d, _)| !d.is_empty())
                        .map(|(d, op)| (Some(d), op)),
                    None => path.strip_prefix("/openai/v1/").map(|op| (None, op)),
                };
                if let Some((deployment, op)) = azure {
                    let operation = match op {
                        "chat/completions" => AzureOp::Chat,
                        "completions" => AzureOp::Completions,
                        "embeddings" => AzureOp::Embeddings,
                        _ => return None,
                    };
                    return post.then_some(Azure {
                        deployment,
                        operation,
                    });
                }
                let rest = path
                    .strip_prefix("/v1beta/models/")
                    .or_else(|| path.strip_prefix("/v1/models/"))?;
                match rest.rsplit_once(':') {
                    Some((model, m)) if post => Gemini {
                        model,
                        method: gemini::Method::parse(m)?,
                    },
                    None if get && path.starts_with("/v1/") && !rest.contains('/') => {
                        if is_anthropic(headers) {
                            AnthropicModels(Some(rest))
                        } else {
                            OpenAiModels(Some(rest))
                        }
                    }
                    _ => return None,
                }
            }
        })
    }

    fn provider(&self) -> Provider {
        use Endpoint::*;
        match self {
            Chat | Completions | Embeddings | Responses | OpenAiModels(_) | Files => {
                Provider::OpenAi
            }
            Azure { .. } => Provider::Azure,
            Messages | CountTokens | AnthropicModels(_) => Provider::Anthropic,
            Gemini { .. } | GeminiModels => Provider::Gemini,
        }
    }

    async fn dispatch(&self, ctx: &Ctx<'_>) -> Result<Resp, Resp> {
        use Endpoint::*;
        match *self {
            Chat => openai::chat(ctx, Provider::OpenAi, None).await,
            Completions => openai::completions(ctx, Provider::OpenAi, None).await,
            Embeddings => embeddings::create(ctx, Provider::OpenAi, None).await,
            Responses => responses::create(ctx).await,
            OpenAiModels(id) => openai::models(ctx, id).await,
            Files => openai::files(ctx).await,
            Azure {
                deployment,
                operation,
            } => {
                if deployment.is_some() && !has_query_param(ctx.parts, "api-version") {
                    // Deployment paths route on api-version; without it
                    // nothing matches.
                    return Err(openai::azure_error(
                        StatusCode::NOT_FOUND,
                        "Resource not found",
                    ));
                }
                match operation {
                    AzureOp::Chat => openai::chat(ctx, Provider::Azure, deployment).await,
                    AzureOp::Completions => {
                        openai::completions(ctx, Provider::Azure, deployment).await
                    }
                    AzureOp::Embeddings => {
                        embeddings::create(ctx, Provider::Azure, deployment).await
                    }
                }
            }
            Messages => anthropic::messages(ctx).await,
            CountTokens => anthropic::count_tokens(ctx).await,
            AnthropicModels(id) => anthropic::models(ctx, id).await,
            Gemini { model, method } => gemini::generate(ctx, model, method).await,
            GeminiModels => gemini::models(ctx).await,
        }
    }
}

/// `GET /v1/models` is shared by OpenAI, Anthropic and Gemini; Anthropic clients
/// always send `anthropic-version` and usually `x-api-key`.
fn is_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version") || headers.contains_key("x-api-key")
}

/// Gemini's `v1` model list shares the path too; its clients send their key
/// as `x-goog-api-key` or `?key=`.
fn is_gemini(parts: &Parts) -> bool {
    parts.headers.contains_key("x-goog-api-key") || query_param(parts, "key").is_some()
}

pub(crate) fn query_param<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn has_query_param(parts: &Parts, name: &str) -> bool {
    query_param(parts, name).is_some_and(|v| !v.is_empty())
}

/// Checks the credential the provider expects. An empty key list accepts
/// any credential, but the provider's header must still be present.
fn authenticate(provider: Provider, parts: &Parts, keys: &Keys) -> Result<(), Resp> {
    let headers = &parts.headers;
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let bearer = || header(AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "));
    let (presented, accepted) = match provider {
        Provider::OpenAi => (bearer(), &keys.openai),
        Provider::Azure => (header("api-key"), &keys.azure),
        // `x-api-key` is the documented header, but current Anthropic SDKs
        // (anthropic-python 2.x) send the API key as a Bearer token.
        Provider::Anthropic => (header("x-api-key").or_else(bearer), &keys.anthropic),
        Provider::Gemini => (
            header("x-goog-api-key").or_else(|| query_param(parts, "key")),
            &keys.gemini,
        ),
    };
    let presented = presented.map(str::trim).filter(|k| !k.is_empty());
    let valid = presented.is_some_and(|k| accepted.is_empty() || accepted.iter().any(|a| a == k));
    if valid {
        return Ok(());
    }
    Err(match provider {
        Provider::OpenAi => openai::auth_error(presented),
        Provider::Azure => openai::azure_auth_error(),
        Provider::Anthropic => anthropic::auth_error(presented.is_some()),
        Provider::Gemini => gemini::auth_error(presented.is_some()),
    })
}
