//! Anthropic Messages API: `/v1/messages` (plain and streamed),
//! `/v1/messages/count_tokens`, `/v1/models`.

use std::borrow::Cow;

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::reply::{self, Resp, new_id};
use crate::router::{Ctx, Provider};
use crate::sse::{self, Events, MARKER, Newline, Template};
use crate::text::{
    CachedPrompt, Chunks, MIN_CACHED_TOKENS, PromptBytes, capped_words, input_tokens, reply,
};
use crate::tools;

const PROVIDER: Provider = Provider::Anthropic;

// ---------------------------------------------------------------- errors

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// `{"type":"error","error":{"type":…,"message":…}}` with Anthropic's error types.
pub(crate) fn error(status: StatusCode, message: &str) -> Resp {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    reply::json(
        status,
        &ErrorBody {
            kind: "error",
            error: ErrorDetail { kind, message },
        },
    )
}

pub(crate) fn auth_error(key_presented: bool) -> Resp {
    let message = if key_presented {
        "invalid x-api-key"
    } else {
        "x-api-key header is required"
    };
    error(StatusCode::UNAUTHORIZED, message)
}

/// The real API refuses requests without `anthropic-version`.
pub(crate) fn require_version(headers: &HeaderMap) -> Result<(), Resp> {
    if headers.contains_key("anthropic-version") {
        Ok(())
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        ))
    }
}

fn field_required(field: &str) -> Resp {
    error(StatusCode::BAD_REQUEST, &format!("{field}: Field required"))
}

// -------------------------------------------------------------- messages

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    messages: Option<CachedPrompt>,
    system: Option<CachedPrompt>,
    max_tokens: Option<u64>,
    stream: Option<bool>,
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<TextBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: Usage,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation: CacheCreation,
    output_tokens: u64,
    service_tier: &'static str,
}

#[derive(Serialize, Clone, Copy)]
struct CacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

/// A request's input tokens as Anthropic splits them: read from the
/// cache, written to it, and the rest.
#[derive(Clone, Copy)]
struct Input {
    uncached: u64,
    cache_read: u64,
    cache_write: u64,
}

impl Input {
    /// The prefix up to the last `cache_control` breakpoint is cached when
    /// it is long enough: read on a hit, written on a miss.
    fn new(system: CachedPrompt, messages: CachedPrompt, hit: bool) -> Input {
        let total = input_tokens(system.bytes + messages.bytes);
        // The cache prefix runs system, then messages.
        let cacheable_bytes = if messages.cacheable > 0 {
            system.bytes + messages.cacheable
        } else {
            system.cacheable
        };
        let cacheable = (cacheable_bytes.div_ceil(4) as u64).min(total);
        let cached = if cacheable >= MIN_CACHED_TOKENS {
            cacheable
        } else {
            0
        };
        let (cache_read, cache_write) = if hit { (cached, 0) } else { (0, cached) };
        Input {
            uncached: total - cached,
            cache_read,
            cache_write,
        }
    }
}

impl Usage {
    fn new(input: Input, output: u64) -> Self {
        Self {
            input_tokens: input.uncached,
            cache_creation_input_tokens: input.cache_write,
            cache_read_input_tokens: input.cache_read,
            cache_creation: CacheCreation {
                ephemeral_5m_input_tokens: input.cache_write,
                ephemeral_1h_input_tokens: 0,
            },
            output_tokens: output,
            service_tier: "standard",
        }
    }
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: Message<'a>,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: TextBlock<'a>,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: TextDelta<'a>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: DeltaUsage,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

/// The cumulative counts the current API sends in `message_delta`.
#[derive(Serialize)]
struct DeltaUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct Bare {
    #[serde(rename = "type")]
    kind: &'static str,
}

pub(crate) async fn messages(ctx: &Ctx<'_>) -> Result<Resp, Resp> {
    let req: Request = ctx.parse(PROVIDER)?;
    let model = req
        .model
        .as_deref()
        .ok_or_else(|| field_required("model"))?;
    let messages = req.messages.ok_or_else(|| field_required("messages"))?;
    let max_tokens = req.max_tokens.ok_or_else(|| field_required("max_tokens"))?;
    let behavior = ctx.prepare(PROVIDER, Some(model)).await?;
    let (words, truncated) = capped_words(behavior.reply_words(), Some(max_tokens));
    let stop_reason = if truncated { "max_tokens" } else { "end_turn" };
    let input = Input::new(req.system.unwrap_or_default(), messages, behavior.cache_hit);
    if let Some(call) = tools::decide(tools::Api::Messages, ctx.body) {
        let counts = tools::Input {
            total: input.uncached + input.cache_read + input.cache_write,
            cached: input.cache_read,
            cache_write: input.cache_write,
        };
        let asked = tools::Asked::stream(req.stream);
        return Ok(tools::reply(
            tools::Api::Messages,
            &call,
            model,
            counts,
            asked,
            &behavior,
        ));
    }
    let id = new_id("msg_");

    if !req.stream.unwrap_or(false) {
        let text = reply(words);
        let content = if words == 0 {
            Vec::new()
        } else {
            vec![TextBlock {
                kind: "text",
                text: &text,
            }]
        };
        let message = Message {
            id: &id,
            kind: "message",
            role: "assistant",
            model,
            content,
            stop_reason: Some(stop_reason),
            stop_sequence: None,
            usage: Usage::new(input, words as u64),
        };
        return Ok(reply::ok_json(&behavior, &message));
    }

    let start = MessageStart {
        kind: "message_start",
        message: Message {
            id: &id,
            kind: "message",
            role: "assistant",
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            // The real API reports a token or so of output up front.
            usage: Usage::new(input, 1),
        },
    };
    let preamble = vec![
        sse::named(start.kind, &start),
        sse::named(
            "content_block_start",
            &BlockStart {
                kind: "content_block_start",
                index: 0,
                content_block: TextBlock {
                    kind: "text",
                    text: "",
                },
            },
        ),
        sse::named("ping", &Bare { kind: "ping" }),
    ];
    let sample = sse::to_json(&BlockDelta {
        kind: "content_block_delta",
        index: 0,
        delta: TextDelta {
            kind: "text_delta",
            text: MARKER,
        },
    });
    let template = Template::new(Some("content_block_delta"), &sample, MARKER, Newline::Lf);
    let trailer = vec![
        sse::named(
            "content_block_stop",
            &BlockStop {
                kind: "content_block_stop",
                index: 0,
            },
        ),
        sse::named(
            "message_delta",
            &MessageDelta {
                kind: "message_delta",
                delta: StopDelta {
                    stop_reason,
                    stop_sequence: None,
                },
                usage: DeltaUsage {
                    input_tokens: input.uncached,
                    cache_creation_input_tokens: input.cache_write,
                    cache_read_input_tokens: input.cache_read,
                    output_tokens: words as u64,
                },
            },
        ),
        sse::named(
            "message_stop",
            &Bare {
                kind: "message_stop",
            },
        ),
    ];
    let chunks = Chunks::new(words, behavior.stream_chunks);
    let events = Events::new(preamble, chunks, move |t| template.render(t), trailer);
    Ok(reply::stream(&behavior, events, None))
}

// ---------------------------------------------------------- count_tokens

#[derive(Deserialize)]
struct CountRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    messages: Option<PromptBytes>,
    system: Option<PromptBytes>,
}

#[derive(Serialize)]
struct TokenCount {
    input_tokens: u64,
}

pub(crate) async fn count_tokens(ctx: &Ctx<'_>) -> Result<Resp, Resp> {
    let req: CountRequest = ctx.parse(PROVIDER)?;
    let model = req
        .model
        .as_deref()
        .ok_or_else(|| field_required("model"))?;
    let messages = req.messages.ok_or_else(|| field_required("messages"))?;
    let behavior = ctx.prepare(PROVIDER, Some(model)).await?;
    // Same formula as the usage of `/v1/messages`, so the two agree.
    let count = TokenCount {
        input_tokens: input_tokens(messages.0 + req.system.unwrap_or_default().0),
    };
    Ok(reply::ok_json(&behavior, &count))
}

// ---------------------------------------------------------------- models

const MODELS: &[(&str, &str, &str)] = &[
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-01-01T00:00:00Z"),
    (
        "claude-sonnet-4-6",
        "Claude Sonnet 4.6",
        "2026-01-01T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
];

#[derive(Serialize)]
struct Model<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: &'a str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    data: Vec<Model<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

pub(crate) async fn models(ctx: &Ctx<'_>, id: Option<&str>) -> Result<Resp, Resp> {
    let behavior = ctx.prepare(PROVIDER, id).await?;
    let model =
        |&(id, display_name, created_at): &(&'static str, &'static str, &'static str)| Model {
            kind: "model",
            id,
            display_name,
            created_at,
        };
    let Some(id) = id else {
        let list = ModelList {
            data: MODELS.iter().map(model).collect(),
            has_more: false,
            first_id: MODELS.first().map(|m| m.0),
            last_id: MODELS.last().map(|m| m.0),
        };
        return Ok(reply::ok_json(&behavior, &list));
    };
    // Any model exists here, so that tests may use any name.
    let found = MODELS
        .iter()
        .find(|m| m.0 == id)
        .map(model)
        .unwrap_or(Model {
            kind: "model",
            id,
            display_name: id,
            created_at: "2025-01-01T00:00:00Z",
        });
    Ok(reply::ok_json(&behavior, &found))
}
