//! OpenAI endpoints (also served under Azure OpenAI deployment paths):
//! chat completions, legacy completions, models, and the error shapes.
//! Embeddings and the Responses API have their own modules.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::reply::{self, EMPTY_LIST, EmptyList, Resp, new_id, unix_now};
use crate::router::{Ctx, Provider};
use crate::sse::{self, Events, MARKER, Newline, Template};
use crate::text::{Chunks, PromptBytes, cached_tokens, capped_words, input_tokens, reply};
use crate::tools;

// ---------------------------------------------------------------- errors

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// `{"error":{"message","type","param","code"}}`, typed as OpenAI types it.
pub(crate) fn error(status: StatusCode, message: &str) -> Resp {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
        ),
        404 => ("invalid_request_error", None),
        429 => ("requests", Some("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    reply::json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                message,
                kind,
                param: None,
                code,
            },
        },
    )
}

/// 401 as OpenAI sends it. Like the real API, a wrong key is quoted back
/// masked (its first 8 and last 4 characters): a proxy in front must not
/// relay that to its clients.
pub(crate) fn auth_error(presented: Option<&str>) -> Resp {
    let (message, code) = match presented {
        Some(key) => (
            format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                masked(key)
            ),
            Some("invalid_api_key"),
        ),
        None => (
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or \
             as the password field (with blank username) if you're accessing the API from your \
             browser and are prompted for a username and password. You can obtain an API key \
             from https://platform.openai.com/account/api-keys."
                .to_owned(),
            None,
        ),
    };
    reply::json(
        StatusCode::UNAUTHORIZED,
        &ErrorBody {
            error: ErrorDetail {
                message: &message,
                kind: "invalid_request_error",
                param: None,
                code,
            },
        },
    )
}

/// `sk-zhj0s****…****CMuq`, as OpenAI masks a key it refuses.
fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 12))
}

#[derive(Serialize)]
struct AzureErrorBody<'a> {
    error: AzureErrorDetail<'a>,
}

#[derive(Serialize)]
struct AzureErrorDetail<'a> {
    code: String,
    message: &'a str,
}

/// Azure's gateway shape: `{"error":{"code":"401","message":…}}`.
pub(crate) fn azure_error(status: StatusCode, message: &str) -> Resp {
    reply::json(
        status,
        &AzureErrorBody {
            error: AzureErrorDetail {
                code: status.as_u16().to_string(),
                message,
            },
        },
    )
}

pub(crate) fn azure_auth_error() -> Resp {
    azure_error(
        StatusCode::UNAUTHORIZED,
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to \
         provide a valid key for an active subscription and use a correct regional API endpoint \
         for your resource.",
    )
}

/// The model to report, and to read knobs from. Azure requests name the
/// model by deployment; the body's `model`, if any, wins as the more specific.
pub(crate) fn pick_model<'a>(
    provider: Provider,
    body_model: Option<&'a str>,
    deployment: Option<&'a str>,
) -> Result<&'a str, Resp> {
    body_model
        .or(deployment)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            provider.error(
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter",
            )
        })
}

pub(crate) fn missing(provider: Provider, param: &str) -> Resp {
    let message = format!("Missing required parameter: '{param}'.");
    provider.error(StatusCode::BAD_REQUEST, &message)
}

// ----------------------------------------------------------------- usage

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    /// Legacy completions usage: no detail objects.
    fn plain(prompt: u64, completion: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }

    /// Chat usage carries the token detail objects, cached tokens among them.
    fn detailed(prompt: u64, completion: u64, cached: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: Some(PromptDetails {
                cached_tokens: cached,
                audio_tokens: 0,
            }),
            completion_tokens_details: Some(CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            }),
        }
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn include_usage(options: &Option<StreamOptions>) -> bool {
    options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false)
}

fn finish_reason(truncated: bool) -> &'static str {
    if truncated { "length" } else { "stop" }
}

const FINGERPRINT: &str = "fp_strake_mock";
const DONE: &[u8] = b"data: [DONE]\n\n";

// ------------------------------------------------------ chat completions

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    messages: Option<PromptBytes>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: EmptyList,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: &'a [ChunkChoice<'a>],
    /// Present (as `null` until the last chunk) only with `include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<()>>,
}

pub(crate) async fn chat(
    ctx: &Ctx<'_>,
    provider: Provider,
    deployment: Option<&str>,
) -> Result<Resp, Resp> {
    let req: ChatRequest = ctx.parse(provider)?;
    let model = pick_model(provider, req.model.as_deref(), deployment)?;
    let messages = req.messages.ok_or_else(|| missing(provider, "messages"))?;
    let behavior = ctx.prepare(provider, Some(model)).await?;
    let (words, truncated) = capped_words(
        behavior.reply_words(),
        req.max_completion_tokens.or(req.max_tokens),
    );
    let prompt_tokens = input_tokens(messages.0);
    let usage = Usage::detailed(
        prompt_tokens,
        words as u64,
        cached_tokens(prompt_tokens, behavior.cache_hit),
    );
    if let Some(call) = tools::decide(tools::Api::Chat, ctx.body) {
        let input = tools::Input {
            total: prompt_tokens,
            cached: cached_tokens(prompt_tokens, behavior.cache_hit),
            cache_write: 0,
        };
        let asked = tools::Asked {
            stream: req.stream.unwrap_or(false),
            include_usage: include_usage(&req.stream_options),
        };
        return Ok(tools::reply(
            tools::Api::Chat,
            &call,
            model,
            input,
            asked,
            &behavior,
        ));
    }
    let id = new_id("chatcmpl-");
    let created = unix_now();

    if !req.stream.unwrap_or(false) {
        let text = reply(words);
        let completion = ChatCompletion {
            id: &id,
            object: "chat.completion",
            created,
            model,
            choices: [ChatChoice {
                index: 0,
                message: ChatMessage {
                    role: "assistant",
                    content: &text,
                    refusal: None,
                    annotations: EMPTY_LIST,
                },
                logprobs: None,
                finish_reason: finish_reason(truncated),
            }],
            usage,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
        };
        return Ok(reply::ok_json(&behavior, &completion));
    }

    let with_usage = include_usage(&req.stream_options);
    let chunk = |delta: Delta, finish: Option<&str>| {
        let choices = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        sse::to_json(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
            choices: &choices,
            usage: with_usage.then_some(None),
        })
    };
    let role = Delta {
        role: Some("assistant"),
        content: Some(""),
        refusal: Some(None),
    };
    let preamble = vec![sse::frame(None, &chunk(role, None), Newline::Lf)];
    let content = Delta {
        content: Some(MARKER),
        ..Delta::default()
    };
    let template = Template::new(None, &chunk(content, None), MARKER, Newline::Lf);
    let mut trailer = vec![sse::frame(
        None,
        &chunk(Delta::default(), Some(finish_reason(truncated))),
        Newline::Lf,
    )];
    if with_usage {
        trailer.push(sse::data(&ChatChunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
            choices: &[],
            usage: Some(Some(&usage)),
        }));
    }
    trailer.push(Bytes::from_static(DONE));
    let chunks = Chunks::new(words, behavior.stream_chunks);
    let events = Events::new(preamble, chunks, move |t| template.render(t), trailer);
    Ok(reply::stream(&behavior, events, None))
}

// ---------------------------------------------------- legacy completions

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    prompt: Option<PromptBytes>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
}

/// The legacy endpoint's own default when `max_tokens` is absent.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u64 = 16;

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Usage>>,
}

impl<'a> TextCompletion<'a> {
    fn new(
        id: &'a str,
        created: u64,
        model: &'a str,
        choices: &'a [TextChoice<'a>],
        usage: Option<Option<&'a Usage>>,
    ) -> Self {
        Self {
            id,
            object: "text_completion",
            created,
            model,
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
        }
    }
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

pub(crate) async fn completions(
    ctx: &Ctx<'_>,
    provider: Provider,
    deployment: Option<&str>,
) -> Result<Resp, Resp> {
    let req: CompletionRequest = ctx.parse(provider)?;
    let model = pick_model(provider, req.model.as_deref(), deployment)?;
    let prompt = req.prompt.ok_or_else(|| missing(provider, "prompt"))?;
    let behavior = ctx.prepare(provider, Some(model)).await?;
    let max_tokens = req.max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS);
    let (words, truncated) = capped_words(behavior.reply_words(), Some(max_tokens));
    let usage = Usage::plain(input_tokens(prompt.0), words as u64);
    let id = new_id("cmpl-");
    let created = unix_now();

    if !req.stream.unwrap_or(false) {
        let text = reply(words);
        let choices = [TextChoice {
            text: &text,
            index: 0,
            logprobs: None,
            finish_reason: Some(finish_reason(truncated)),
        }];
        let completion = TextCompletion::new(&id, created, model, &choices, Some(Some(&usage)));
        return Ok(reply::ok_json(&behavior, &completion));
    }

    let with_usage = include_usage(&req.stream_options);
    let chunk = |text: &str, finish: Option<&str>| {
        let choices = [TextChoice {
            text,
            index: 0,
            logprobs: None,
            finish_reason: finish,
        }];
        sse::to_json(&TextCompletion::new(
            &id,
            created,
            model,
            &choices,
            with_usage.then_some(None),
        ))
    };
    let template = Template::new(None, &chunk(MARKER, None), MARKER, Newline::Lf);
    let mut trailer = vec![sse::frame(
        None,
        &chunk("", Some(finish_reason(truncated))),
        Newline::Lf,
    )];
    if with_usage {
        trailer.push(sse::data(&TextCompletion::new(
            &id,
            created,
            model,
            &[],
            Some(Some(&usage)),
        )));
    }
    trailer.push(Bytes::from_static(DONE));
    let chunks = Chunks::new(words, behavior.stream_chunks);
    let events = Events::new(Vec::new(), chunks, move |t| template.render(t), trailer);
    Ok(reply::stream(&behavior, events, None))
}

// ---------------------------------------------------------------- models

const MODELS: &[(&str, u64, &str)] = &[
    ("gpt-4o", 1_715_367_049, "system"),
    ("gpt-4o-mini", 1_721_172_741, "system"),
    ("gpt-4.1", 1_744_316_542, "system"),
    ("gpt-4.1-mini", 1_744_318_173, "system"),
    ("o3-mini", 1_737_146_383, "system"),
    ("text-embedding-3-small", 1_705_948_997, "system"),
    ("text-embedding-3-large", 1_705_953_180, "system"),
];

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

/// `GET /v1/files`: the account's files. The mock stores none, so the
/// list is empty, in the real API's page shape.
pub(crate) async fn files(ctx: &Ctx<'_>) -> Result<Resp, Resp> {
    ctx.prepare(Provider::OpenAi, None).await?;
    Ok(reply::json_bytes(
        StatusCode::OK,
        r#"{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}"#,
    ))
}

pub(crate) async fn models(ctx: &Ctx<'_>, id: Option<&str>) -> Result<Resp, Resp> {
    let behavior = ctx.prepare(Provider::OpenAi, id).await?;
    let Some(id) = id else {
        // The list never changes: serialise it once.
        static LIST: OnceLock<Bytes> = OnceLock::new();
        let list = LIST.get_or_init(|| {
            let data = MODELS
                .iter()
                .map(|&(id, created, owned_by)| Model {
                    id,
                    object: "model",
                    created,
                    owned_by,
                })
                .collect();
            sse::to_json(&ModelList {
                object: "list",
                data,
            })
            .into()
        });
        return Ok(reply::json_bytes(StatusCode::OK, list.clone()));
    };
    // Any model exists here, so that tests may use any name.
    let known = MODELS.iter().find(|m| m.0 == id);
    let model = Model {
        id,
        object: "model",
        created: known.map_or(1_700_000_000, |m| m.1),
        owned_by: known.map_or("system", |m| m.2),
    };
    Ok(reply::ok_json(&behavior, &model))
}
