//! Gemini API: `models/{model}:generateContent`, `:streamGenerateContent`
//! (SSE with `?alt=sse`, otherwise a streamed JSON array, as Google does),
//! `:countTokens`, and the model list.

use http::StatusCode;
use http::header::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::reply::{self, Resp, new_id};
use crate::router::{Ctx, Provider, query_param};
use crate::sse::{self, Events, Newline};
use crate::text::{Chunks, PromptBytes, cached_tokens, capped_words, input_tokens, reply};

const PROVIDER: Provider = Provider::Gemini;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Generate,
    Stream,
    CountTokens,
}

impl Method {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "generateContent" => Some(Method::Generate),
            "streamGenerateContent" => Some(Method::Stream),
            "countTokens" => Some(Method::CountTokens),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- errors

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<[ErrorInfo; 1]>,
}

#[derive(Serialize)]
struct ErrorInfo {
    #[serde(rename = "@type")]
    kind: &'static str,
    reason: &'static str,
    domain: &'static str,
}

/// `{"error":{"code","message","status"}}` with the google.rpc status name.
pub(crate) fn error(status: StatusCode, message: &str) -> Resp {
    error_with(status, message, None)
}

fn error_with(status: StatusCode, message: &str, reason: Option<&'static str>) -> Resp {
    let rpc_status = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    };
    let details = reason.map(|reason| {
        [ErrorInfo {
            kind: "type.googleapis.com/google.rpc.ErrorInfo",
            reason,
            domain: "googleapis.com",
        }]
    });
    reply::json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                code: status.as_u16(),
                message,
                status: rpc_status,
                details,
            },
        },
    )
}

/// What Google answers for API-key problems: a wrong key is a 400
/// `INVALID_ARGUMENT` with reason `API_KEY_INVALID`; no key at all is a 403
/// `PERMISSION_DENIED`. (Only OAuth failures produce 401 `UNAUTHENTICATED`.)
pub(crate) fn auth_error(key_presented: bool) -> Resp {
    if key_presented {
        error_with(
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
            Some("API_KEY_INVALID"),
        )
    } else {
        error_with(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
            None,
        )
    }
}

// ------------------------------------------------------ generateContent

/// The API accepts both proto-JSON spellings of field names.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    contents: Option<PromptBytes>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<PromptBytes>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct Content<'a> {
    parts: [Part<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    /// Within `promptTokenCount`; absent, as Google leaves it, without a
    /// cache hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    prompt_tokens_details: [ModalityCount; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_tokens_details: Option<[ModalityCount; 1]>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    modality: &'static str,
    token_count: u64,
}

impl UsageMetadata {
    fn new(prompt: u64, candidates: u64, cached: u64) -> Self {
        let cached = (cached > 0).then_some(cached);
        Self {
            prompt_token_count: prompt,
            candidates_token_count: candidates,
            total_token_count: prompt + candidates,
            cached_content_token_count: cached,
            prompt_tokens_details: [ModalityCount {
                modality: "TEXT",
                token_count: prompt,
            }],
            cache_tokens_details: cached.map(|n| {
                [ModalityCount {
                    modality: "TEXT",
                    token_count: n,
                }]
            }),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenCount {
    total_tokens: u64,
    prompt_tokens_details: [ModalityCount; 1],
}

pub(crate) async fn generate(ctx: &Ctx<'_>, model: &str, method: Method) -> Result<Resp, Resp> {
    let req: Request = ctx.parse(PROVIDER)?;
    let contents = req.contents.ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "* GenerateContentRequest.contents: contents is not specified\n",
        )
    })?;
    let behavior = ctx.prepare(PROVIDER, Some(model)).await?;
    let prompt = input_tokens(contents.0 + req.system_instruction.unwrap_or_default().0);
    if method == Method::CountTokens {
        let count = TokenCount {
            total_tokens: prompt,
            prompt_tokens_details: [ModalityCount {
                modality: "TEXT",
                token_count: prompt,
            }],
        };
        return Ok(reply::ok_json(&behavior, &count));
    }
    let max_tokens = req.generation_config.and_then(|c| c.max_output_tokens);
    let (words, truncated) = capped_words(behavior.reply_words(), max_tokens);
    let finish = if truncated { "MAX_TOKENS" } else { "STOP" };
    // Every streamed chunk is a complete response: the text so far's usage,
    // and the finish reason on the last one. A plain reply is one such chunk.
    let cached = cached_tokens(prompt, behavior.cache_hit);
    let response_id = new_id("");
    let model_version = model.to_owned();
    let render_json = move |text: &str, candidates: u64, finish: Option<&'static str>| {
        sse::to_json(&GenerateResponse {
            candidates: [Candidate {
                content: Content {
                    parts: [Part { text }],
                    role: "model",
                },
                finish_reason: finish,
                index: 0,
            }],
            usage_metadata: UsageMetadata::new(prompt, candidates, cached),
            model_version: &model_version,
            response_id: &response_id,
        })
    };

    if method == Method::Generate {
        let json = render_json(&reply(words), words as u64, Some(finish));
        return Ok(reply::ok_bytes(&behavior, json));
    }

    let sse_mode = query_param(ctx.parts, "alt") == Some("sse");
    let chunks = Chunks::new(words, behavior.stream_chunks);
    let total = chunks.len();
    let mut sent = 0usize;
    let mut words_so_far = 0u64;
    // An empty reply (max tokens 0) still ends with one finishing chunk.
    let last = (total == 0).then(|| render_json("", 0, Some(finish)));
    let mut next_chunk = move |text: &str| {
        sent += 1;
        words_so_far += text.split_whitespace().count() as u64;
        render_json(text, words_so_far, (sent == total).then_some(finish))
    };
    if sse_mode {
        let trailer = last
            .map(|json| vec![sse::frame(None, &json, Newline::CrLf)])
            .unwrap_or_default();
        let render = move |text: &str| sse::frame(None, &next_chunk(text), Newline::CrLf);
        let events = Events::new(Vec::new(), chunks, render, trailer);
        return Ok(reply::stream(&behavior, events, None));
    }
    // Without alt=sse Google streams one JSON array, element by element.
    let trailer = match last {
        Some(json) => vec![json.into(), "]".into()],
        None => vec!["]".into()],
    };
    let mut first = true;
    let render = move |text: &str| {
        let mut out = if std::mem::take(&mut first) {
            Vec::new()
        } else {
            b",\r\n".to_vec()
        };
        out.extend_from_slice(&next_chunk(text));
        out.into()
    };
    let events = Events::new(vec!["[".into()], chunks, render, trailer);
    Ok(reply::stream(
        &behavior,
        events,
        Some(HeaderValue::from_static("application/json; charset=UTF-8")),
    ))
}

// ---------------------------------------------------------------- models

const MODELS: &[(&str, &str)] = &[
    ("gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini-2.5-flash", "Gemini 2.5 Flash"),
    ("gemini-2.0-flash", "Gemini 2.0 Flash"),
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Model {
    name: String,
    version: &'static str,
    display_name: &'static str,
    description: &'static str,
    input_token_limit: u64,
    output_token_limit: u64,
    supported_generation_methods: [&'static str; 2],
}

#[derive(Serialize)]
struct ModelList {
    models: Vec<Model>,
}

pub(crate) async fn models(ctx: &Ctx<'_>) -> Result<Resp, Resp> {
    let behavior = ctx.prepare(PROVIDER, None).await?;
    let models = MODELS
        .iter()
        .map(|&(id, display_name)| Model {
            name: format!("models/{id}"),
            version: "001",
            display_name,
            description: "Served by the Strake mock upstream.",
            input_token_limit: 1_048_576,
            output_token_limit: 65_536,
            supported_generation_methods: ["generateContent", "countTokens"],
        })
        .collect();
    Ok(reply::ok_json(&behavior, &ModelList { models }))
}
