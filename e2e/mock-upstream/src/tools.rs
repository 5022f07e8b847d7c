//! Tool use: a request that offers tools gets a call to one of them, until
//! the conversation carries a tool result; then the ordinary text answer
//! follows. So a client completes a round trip: call, run the tool, send
//! its result, read the answer.
//!
//! The tool is the one `tool_choice` names, else the first offered; its
//! arguments fill the schema's required properties (strings `"mock"`,
//! numbers `1`, booleans `true`, the first `enum` value, empty arrays and
//! objects). `tool_choice: "none"` (Anthropic: `{"type": "none"}`) asks
//! for text. The wire shapes are the APIs' own:
//!
//! - chat completions: `message.tool_calls` with `finish_reason:
//!   "tool_calls"`; streamed, a `tool_calls` delta with the id and name,
//!   then the arguments;
//! - Responses: a `function_call` output item; streamed,
//!   `response.output_item.added`, `response.function_call_arguments.delta`
//!   and `.done`, `response.output_item.done`, `response.completed`;
//! - Anthropic messages: a `tool_use` content block with `stop_reason:
//!   "tool_use"`; streamed, `content_block_start` with the block,
//!   `input_json_delta`, `content_block_stop`.

use serde_json::{Map, Value, json};

use crate::config::Behavior;
use crate::reply::{self, Resp, new_id, unix_now};
use crate::sse::{self, Events};
use crate::text::Chunks;

/// Which API's request and reply shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Responses,
    Messages,
}

/// The call the mock makes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Call {
    pub(crate) name: String,
    pub(crate) arguments: Value,
}

impl Call {
    /// The arguments as the JSON text the APIs carry them in.
    fn arguments_text(&self) -> String {
        self.arguments.to_string()
    }

    /// Output tokens: one per four bytes of arguments, at least one.
    pub(crate) fn output_tokens(&self) -> u64 {
        (self.arguments_text().len() as u64).div_ceil(4).max(1)
    }
}

/// The tool call a request asks for, if any.
pub(crate) fn decide(api: Api, body: &[u8]) -> Option<Call> {
    // Most requests offer no tools: skip the parse.
    memchr_tools(body)?;
    let req: Value = serde_json::from_slice(body).ok()?;
    let tools = req.get("tools")?.as_array()?;
    let choice = req.get("tool_choice");
    let none = match choice {
        Some(Value::String(s)) => s == "none",
        Some(c) => c.get("type").and_then(Value::as_str) == Some("none"),
        None => false,
    };
    if none || answered(api, &req) {
        return None;
    }
    let chosen = choice.and_then(|c| match api {
        Api::Chat => c.pointer("/function/name"),
        Api::Responses | Api::Messages => c.get("name"),
    });
    let (name, schema) = tools
        .iter()
        .filter_map(|t| tool(api, t))
        .find(|(name, _)| chosen.and_then(Value::as_str).is_none_or(|c| c == *name))?;
    Some(Call {
        name: name.to_string(),
        arguments: arguments(schema),
    })
}

fn memchr_tools(body: &[u8]) -> Option<()> {
    body.windows(7).any(|w| w == b"\"tools\"").then_some(())
}

/// A function tool's name and parameter schema.
fn tool(api: Api, t: &Value) -> Option<(&str, Option<&Value>)> {
    match api {
        Api::Chat => {
            let f = t.get("function")?;
            Some((f.get("name")?.as_str()?, f.get("parameters")))
        }
        Api::Responses => (t.get("type")?.as_str()? == "function")
            .then(|| Some((t.get("name")?.as_str()?, t.get("parameters"))))?,
        // Custom tools have an input_schema; server tools (web search, …) do not.
        Api::Messages => Some((t.get("name")?.as_str()?, Some(t.get("input_schema")?))),
    }
}

/// Whether the conversation's last turn is a tool result.
fn answered(api: Api, req: &Value) -> bool {
    let last = |key: &str| {
        req.get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.last())
            .cloned()
    };
    match api {
        Api::Chat => last("messages").is_some_and(|m| m["role"] == "tool"),
        Api::Responses => last("input").is_some_and(|i| i["type"] == "function_call_output"),
        Api::Messages => last("messages").is_some_and(|m| {
            m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        }),
    }
}

/// Values for the schema's required properties.
fn arguments(schema: Option<&Value>) -> Value {
    let mut out = Map::new();
    let Some(schema) = schema else {
        return Value::Object(out);
    };
    let props = schema.get("properties");
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let prop = props.and_then(|p| p.get(name));
        out.insert(name.to_string(), example(prop));
    }
    Value::Object(out)
}

fn example(prop: Option<&Value>) -> Value {
    let Some(prop) = prop else {
        return json!("mock");
    };
    if let Some(first) = prop.get("enum").and_then(|e| e.as_array()?.first()) {
        return first.clone();
    }
    let kind = match prop.get("type") {
        Some(Value::Array(kinds)) => kinds.iter().find(|k| *k != "null").and_then(Value::as_str),
        Some(k) => k.as_str(),
        None => None,
    };
    match kind {
        Some("integer" | "number") => json!(1),
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        Some("object") => arguments(Some(prop)),
        _ => json!("mock"),
    }
}

/// A request's input tokens, as the handlers count them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Input {
    /// Every input token (OpenAI's `prompt_tokens`); Anthropic reports
    /// `total - cached - cache_write` as its `input_tokens`.
    pub(crate) total: u64,
    pub(crate) cached: u64,
    pub(crate) cache_write: u64,
}

/// How the client asked for the reply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked {
    pub(crate) stream: bool,
    /// OpenAI chat's `stream_options.include_usage`.
    pub(crate) include_usage: bool,
}

impl Asked {
    /// `stream` as the request set it, no usage option (Responses, Anthropic).
    pub(crate) fn stream(stream: Option<bool>) -> Asked {
        Asked {
            stream: stream.unwrap_or(false),
            include_usage: false,
        }
    }
}

/// The reply carrying `call`, in `api`'s shape, streamed or not.
pub(crate) fn reply(
    api: Api,
    call: &Call,
    model: &str,
    input: Input,
    asked: Asked,
    behavior: &Behavior,
) -> Resp {
    let output = call.output_tokens();
    let events = match api {
        Api::Chat => chat(call, model, input, output, asked),
        Api::Responses => responses(call, model, input, output, asked.stream),
        Api::Messages => messages(call, model, input, output, asked.stream),
    };
    match events {
        Reply::Json(v) => reply::ok_json(behavior, &v),
        Reply::Events(list) => {
            let events = Events::new(list, Chunks::new(0, 1), |_| unreachable!("no text"), vec![]);
            reply::stream(behavior, events, None)
        }
    }
}

enum Reply {
    Json(Value),
    Events(Vec<bytes::Bytes>),
}

fn chat(call: &Call, model: &str, input: Input, output: u64, asked: Asked) -> Reply {
    let (cached, input) = (input.cached, input.total);
    let id = new_id("chatcmpl-");
    let call_id = new_id("call_");
    let created = unix_now();
    let usage = json!({
        "prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    });
    if !asked.stream {
        return Reply::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {
                "role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [{"id": call_id, "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_text()}}],
            }, "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_strake_mock",
        }));
    }
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_strake_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        // `usage: null` on every chunk, only when the client asked for usage.
        if asked.include_usage {
            c["usage"] = Value::Null;
        }
        sse::data(&c)
    };
    let mut events = vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": call_id,
                "type": "function", "function": {"name": call.name, "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": call.arguments_text()}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    if asked.include_usage {
        events.push(sse::data(&json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_strake_mock",
            "choices": [], "usage": usage,
        })));
    }
    events.push(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    Reply::Events(events)
}

fn responses(call: &Call, model: &str, input: Input, output: u64, stream: bool) -> Reply {
    let (cached, input) = (input.cached, input.total);
    let id = new_id("resp_");
    let item = json!({
        "type": "function_call", "id": new_id("fc_"), "call_id": new_id("call_"),
        "name": call.name, "arguments": call.arguments_text(), "status": "completed",
    });
    let response = |status: &str, output_items: Value, usage: Value| {
        json!({
            "id": id, "object": "response", "created_at": unix_now(), "status": status,
            "background": false, "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": model, "output": output_items,
            "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "service_tier": "default",
            "store": false, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
            "usage": usage, "user": null, "metadata": {},
        })
    };
    let usage = json!({
        "input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    });
    let done = response("completed", json!([item]), usage);
    if !stream {
        return Reply::Json(done);
    }
    let in_progress = response("in_progress", json!([]), Value::Null);
    let mut open = item.clone();
    open["arguments"] = json!("");
    open["status"] = json!("in_progress");
    let item_id = item["id"].clone();
    let events = [
        ("response.created", json!({"response": in_progress})),
        ("response.in_progress", json!({"response": in_progress})),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": open}),
        ),
        (
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": 0, "delta": call.arguments_text()}),
        ),
        (
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": 0, "arguments": call.arguments_text()}),
        ),
        (
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ),
        ("response.completed", json!({"response": done})),
    ];
    Reply::Events(
        events
            .into_iter()
            .enumerate()
            .map(|(seq, (name, mut payload))| {
                payload["type"] = name.into();
                payload["sequence_number"] = seq.into();
                sse::named(name, &payload)
            })
            .collect(),
    )
}

fn messages(call: &Call, model: &str, input: Input, output: u64, stream: bool) -> Reply {
    let (read, write) = (input.cached, input.cache_write);
    let input = input.total - read - write;
    let id = new_id("msg_");
    let block = json!({"type": "tool_use", "id": new_id("toolu_"), "name": call.name, "input": call.arguments});
    let usage = json!({
        "input_tokens": input, "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output, "service_tier": "standard",
    });
    let message = |content: Value, stop: Value, usage: Value| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage,
        })
    };
    if !stream {
        return Reply::Json(message(json!([block]), json!("tool_use"), usage));
    }
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut open = block.clone();
    open["input"] = json!({});
    let events = [
        (
            "message_start",
            json!({"message": message(json!([]), Value::Null, start_usage)}),
        ),
        (
            "content_block_start",
            json!({"index": 0, "content_block": open}),
        ),
        (
            "content_block_delta",
            json!({"index": 0, "delta": {"type": "input_json_delta", "partial_json": call.arguments_text()}}),
        ),
        ("content_block_stop", json!({"index": 0})),
        (
            "message_delta",
            json!({"delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": input, "cache_creation_input_tokens": write,
                    "cache_read_input_tokens": read, "output_tokens": output}}),
        ),
        ("message_stop", json!({})),
    ];
    Reply::Events(
        events
            .into_iter()
            .map(|(name, mut payload)| {
                payload["type"] = name.into();
                sse::named(name, &payload)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_the_named_or_first_tool_with_its_required_arguments() {
        let body = json!({
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [
                {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "get_weather", "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]},
                        "days": {"type": "integer"}, "hourly": {"type": ["boolean", "null"]},
                        "note": {"type": "string"}},
                    "required": ["city", "unit", "days", "hourly"]}}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        });
        let call = decide(Api::Chat, body.to_string().as_bytes()).unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(
            call.arguments,
            json!({"city": "mock", "unit": "c", "days": 1, "hourly": true})
        );
        let mut first = body.clone();
        first.as_object_mut().unwrap().remove("tool_choice");
        assert_eq!(
            decide(Api::Chat, first.to_string().as_bytes())
                .unwrap()
                .name,
            "search"
        );
    }

    #[test]
    fn a_tool_result_or_tool_choice_none_gets_text() {
        let chat = json!({"messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": []}, {"role": "tool", "tool_call_id": "c", "content": "20C"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]});
        assert_eq!(decide(Api::Chat, chat.to_string().as_bytes()), None);
        let responses = json!({"input": [{"role": "user", "content": "x"},
            {"type": "function_call_output", "call_id": "c", "output": "20C"}],
            "tools": [{"type": "function", "name": "f", "parameters": {}}]});
        assert_eq!(
            decide(Api::Responses, responses.to_string().as_bytes()),
            None
        );
        let messages = json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": "20C"}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]});
        assert_eq!(decide(Api::Messages, messages.to_string().as_bytes()), None);
        let none = json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none",
            "tools": [{"type": "function", "function": {"name": "f"}}]});
        assert_eq!(decide(Api::Chat, none.to_string().as_bytes()), None);
        assert_eq!(decide(Api::Chat, br#"{"messages": []}"#), None);
        // A server tool (no input_schema) is never called.
        let server = json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert_eq!(decide(Api::Messages, server.to_string().as_bytes()), None);
    }
}
