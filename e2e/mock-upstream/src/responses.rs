//! OpenAI Responses API: `POST /v1/responses`, plain and streamed.
//!
//! A stream follows the real event order: `response.created`,
//! `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`…,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done`, then `response.completed` (or
//! `response.incomplete` when `max_output_tokens` cut the reply).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::reply::{self, EMPTY_LIST, EmptyList, EmptyObject, Resp, new_id, unix_now};
use crate::router::{Ctx, Provider};
use crate::sse::{self, Events};
use crate::text::{Chunks, PromptBytes, cached_tokens, capped_words, input_tokens, reply};
use crate::tools;

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    input: Option<PromptBytes>,
    instructions: Option<PromptBytes>,
    stream: Option<bool>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    store: Option<bool>,
}

#[derive(Serialize, Clone)]
struct Response<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    error: Option<()>,
    incomplete_details: Option<Incomplete>,
    instructions: Option<()>,
    max_output_tokens: Option<u64>,
    model: &'a str,
    output: Vec<Message<'a>>,
    parallel_tool_calls: bool,
    previous_response_id: Option<()>,
    reasoning: Reasoning,
    service_tier: &'static str,
    store: bool,
    temperature: f64,
    text: TextConfig,
    tool_choice: &'static str,
    tools: EmptyList,
    top_p: f64,
    truncation: &'static str,
    usage: Option<Usage>,
    user: Option<()>,
    metadata: EmptyObject,
}

#[derive(Serialize, Clone, Copy)]
struct Incomplete {
    reason: &'static str,
}

#[derive(Serialize, Clone, Copy)]
struct Reasoning {
    effort: Option<()>,
    summary: Option<()>,
}

#[derive(Serialize, Clone, Copy)]
struct TextConfig {
    format: Format,
}

#[derive(Serialize, Clone, Copy)]
struct Format {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize, Clone)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: &'static str,
    role: &'static str,
    content: Vec<OutputText<'a>>,
}

#[derive(Serialize, Clone)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: EmptyList,
    logprobs: EmptyList,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct InputDetails {
    cached_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct OutputDetails {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    delta: &'a str,
    logprobs: EmptyList,
    sequence_number: u64,
}

fn output_text(text: &str) -> OutputText<'_> {
    OutputText {
        kind: "output_text",
        text,
        annotations: EMPTY_LIST,
        logprobs: EMPTY_LIST,
    }
}

pub(crate) async fn create(ctx: &Ctx<'_>) -> Result<Resp, Resp> {
    let provider = Provider::OpenAi;
    let req: Request = ctx.parse(provider)?;
    let model = req
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            provider.error(
                http::StatusCode::BAD_REQUEST,
                "Missing required parameter: 'model'.",
            )
        })?;
    let behavior = ctx.prepare(provider, Some(model)).await?;
    let (words, truncated) = capped_words(behavior.reply_words(), req.max_output_tokens);
    let prompt_bytes = req.input.unwrap_or_default().0 + req.instructions.unwrap_or_default().0;
    let input = input_tokens(prompt_bytes);
    if let Some(call) = tools::decide(tools::Api::Responses, ctx.body) {
        let counts = tools::Input {
            total: input,
            cached: cached_tokens(input, behavior.cache_hit),
            cache_write: 0,
        };
        let asked = tools::Asked::stream(req.stream);
        return Ok(tools::reply(
            tools::Api::Responses,
            &call,
            model,
            counts,
            asked,
            &behavior,
        ));
    }
    let id = new_id("resp_");
    let item_id = new_id("msg_");
    let text = reply(words);
    let (status, item_status, incomplete) = if truncated {
        (
            "incomplete",
            "incomplete",
            Some(Incomplete {
                reason: "max_output_tokens",
            }),
        )
    } else {
        ("completed", "completed", None)
    };
    let done = Response {
        id: &id,
        object: "response",
        created_at: unix_now(),
        status,
        background: false,
        error: None,
        incomplete_details: incomplete,
        instructions: None,
        max_output_tokens: req.max_output_tokens,
        model,
        output: vec![Message {
            kind: "message",
            id: &item_id,
            status: item_status,
            role: "assistant",
            content: vec![output_text(&text)],
        }],
        parallel_tool_calls: true,
        previous_response_id: None,
        reasoning: Reasoning {
            effort: None,
            summary: None,
        },
        service_tier: "default",
        store: req.store.unwrap_or(true),
        temperature: req.temperature.unwrap_or(1.0),
        text: TextConfig {
            format: Format { kind: "text" },
        },
        tool_choice: "auto",
        tools: EMPTY_LIST,
        top_p: req.top_p.unwrap_or(1.0),
        truncation: "disabled",
        usage: Some(Usage {
            input_tokens: input,
            input_tokens_details: InputDetails {
                cached_tokens: cached_tokens(input, behavior.cache_hit),
            },
            output_tokens: words as u64,
            output_tokens_details: OutputDetails {
                reasoning_tokens: 0,
            },
            total_tokens: input + words as u64,
        }),
        user: None,
        metadata: EmptyObject {},
    };
    if !req.stream.unwrap_or(false) {
        return Ok(reply::ok_json(&behavior, &done));
    }

    let in_progress = Response {
        status: "in_progress",
        incomplete_details: None,
        output: Vec::new(),
        usage: None,
        ..done.clone()
    };
    let open_item = Message {
        status: "in_progress",
        content: Vec::new(),
        ..done.output[0].clone()
    };
    let event = |name: &str, mut payload: serde_json::Value, seq: u64| {
        payload["type"] = name.into();
        payload["sequence_number"] = seq.into();
        sse::named(name, &payload)
    };
    let preamble = vec![
        event("response.created", json!({ "response": in_progress }), 0),
        event(
            "response.in_progress",
            json!({ "response": in_progress }),
            1,
        ),
        event(
            "response.output_item.added",
            json!({ "output_index": 0, "item": open_item }),
            2,
        ),
        event(
            "response.content_part.added",
            json!({
                "item_id": item_id, "output_index": 0, "content_index": 0,
                "part": output_text(""),
            }),
            3,
        ),
    ];
    let chunks = Chunks::new(words, behavior.stream_chunks);
    let mut seq = preamble.len() as u64;
    let after = seq + chunks.len() as u64;
    let finished = if truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    let trailer = vec![
        event(
            "response.output_text.done",
            json!({
                "item_id": item_id, "output_index": 0, "content_index": 0,
                "text": text, "logprobs": [],
            }),
            after,
        ),
        event(
            "response.content_part.done",
            json!({
                "item_id": item_id, "output_index": 0, "content_index": 0,
                "part": output_text(&text),
            }),
            after + 1,
        ),
        event(
            "response.output_item.done",
            json!({ "output_index": 0, "item": done.output[0] }),
            after + 2,
        ),
        event(finished, json!({ "response": done }), after + 3),
    ];
    let delta_item = item_id.clone();
    let render = move |delta: &str| {
        let event = TextDelta {
            kind: "response.output_text.delta",
            item_id: &delta_item,
            output_index: 0,
            content_index: 0,
            delta,
            logprobs: EMPTY_LIST,
            sequence_number: seq,
        };
        seq += 1;
        sse::named(event.kind, &event)
    };
    let events = Events::new(preamble, chunks, render, trailer);
    Ok(reply::stream(&behavior, events, None))
}
