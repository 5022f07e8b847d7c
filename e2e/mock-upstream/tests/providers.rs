//! Each provider endpoint answers in the provider's shape, with deterministic
//! usage, and rejects bad credentials the way the provider does.

mod common;

use common::{KEY, chat_body, get, mock, post};
use http::StatusCode;
use serde_json::{Value, json};

/// 40 bytes of prompt text = 10 input tokens.
const PROMPT: &str = "0123456789012345678901234567890123456789";

// ------------------------------------------------------------------ OpenAI

#[tokio::test]
async fn openai_chat_completion() {
    let mock = mock().await;
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat_body("gpt-4o", PROMPT, json!({})),
    )
    .bearer(KEY)
    .send()
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(r.headers.contains_key("x-request-id"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-4o");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let words = choice["message"]["content"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .count();
    assert_eq!(words, 8);
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(v["usage"]["total_tokens"], 18);
}

#[tokio::test]
async fn openai_chat_respects_max_tokens() {
    let mock = mock().await;
    let body = chat_body("gpt-4o", "hi", json!({"max_completion_tokens": 3}));
    let v = post(&mock, "/v1/chat/completions", &body)
        .bearer(KEY)
        .send()
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn openai_chat_stream_with_usage() {
    let mock = mock().await;
    let body = chat_body(
        "gpt-4o-mini",
        PROMPT,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let s = post(&mock, "/v1/chat/completions", &body)
        .bearer(KEY)
        .header("x-mock-chunks", "4")
        .stream()
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert!(
        s.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(!s.failed);
    let text = s.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = s.data();
    // role chunk, 4 content chunks, finish chunk, usage chunk
    assert_eq!(chunks.len(), 7);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "This is a deterministic");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["usage"], Value::Null);
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["prompt_tokens"], 10);
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn openai_chat_stream_without_usage_has_no_usage_field() {
    let mock = mock().await;
    let body = chat_body("gpt-4o", "hi", json!({"stream": true}));
    let s = post(&mock, "/v1/chat/completions", &body)
        .bearer(KEY)
        .stream()
        .await;
    let chunks = s.data();
    assert_eq!(chunks.len(), 1 + 8 + 1);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn openai_files_list_is_an_empty_page() {
    let mock = mock().await;
    let r = get(&mock, "/v1/files").bearer(KEY).send().await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"], json!([]));
    assert_eq!(v["has_more"], false);
    let r = get(&mock, "/v1/files").send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openai_auth_errors() {
    let mock = mock().await;
    let body = chat_body("gpt-4o", "hi", json!({}));
    for (key, code) in [
        (Some("sk-strk-wrong"), json!("invalid_api_key")),
        (None, Value::Null),
    ] {
        let mut call = post(&mock, "/v1/chat/completions", &body);
        if let Some(key) = key {
            call = call.bearer(key);
        }
        let r = call.send().await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], Value::Null);
        assert_eq!(v["error"]["code"], code);
        assert!(v["error"]["message"].is_string());
        assert!(
            !r.text().contains("sk-strk-wrong"),
            "the presented key is not echoed whole"
        );
        if key.is_some() {
            // As OpenAI does: first 8 and last 4 characters.
            assert!(
                r.text()
                    .contains("Incorrect API key provided: sk-strk-*rong."),
                "{}",
                r.text()
            );
        }
    }
    // The Anthropic header does not authenticate OpenAI calls.
    let r = post(&mock, "/v1/chat/completions", &body)
        .header("x-api-key", KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openai_validation_errors() {
    let mock = mock().await;
    let r = post(&mock, "/v1/chat/completions", "{not json")
        .bearer(KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(&mock, "/v1/chat/completions", r#"{"model":"m"}"#)
        .bearer(KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(&mock, "/v1/nope", "{}").bearer(KEY).send().await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["message"], "Invalid URL (POST /v1/nope)");
}

#[tokio::test]
async fn openai_legacy_completions() {
    let mock = mock().await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": PROMPT}).to_string();
    let v = post(&mock, "/v1/completions", &body)
        .bearer(KEY)
        .send()
        .await
        .json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(
        v["choices"][0]["text"],
        "This is a deterministic reply from the Strake"
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18})
    );

    let body = json!({"model": "m", "prompt": "x", "stream": true,
        "stream_options": {"include_usage": true}})
    .to_string();
    let s = post(&mock, "/v1/completions", &body)
        .bearer(KEY)
        .stream()
        .await;
    let chunks = s.data();
    assert_eq!(chunks.len(), 8 + 2);
    assert_eq!(chunks[8]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[9]["usage"]["completion_tokens"], 8);
    assert!(s.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn openai_embeddings() {
    let mock = mock().await;
    let body =
        json!({"model": "text-embedding-3-small", "input": ["abcd", "efghijkl"]}).to_string();
    let v = post(&mock, "/v1/embeddings", &body)
        .bearer(KEY)
        .send()
        .await
        .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    let vector = v["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(vector.len(), 1536);
    let norm: f64 = vector.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-3);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    // The SDKs ask for base64 by default: little-endian f32s.
    let body = json!({"model": "m", "input": "abcd", "dimensions": 8, "encoding_format": "base64"})
        .to_string();
    let v = post(&mock, "/v1/embeddings", &body)
        .bearer(KEY)
        .send()
        .await
        .json();
    let b64 = v["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(b64.len(), 44); // 32 bytes
}

#[tokio::test]
async fn openai_models() {
    let mock = mock().await;
    let v = get(&mock, "/v1/models").bearer(KEY).send().await.json();
    assert_eq!(v["object"], "list");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o")
    );
    let v = get(&mock, "/v1/models/my-fine-tune")
        .bearer(KEY)
        .send()
        .await
        .json();
    assert_eq!(v["id"], "my-fine-tune");
    assert_eq!(v["object"], "model");
}

#[tokio::test]
async fn openai_responses() {
    let mock = mock().await;
    let body = json!({"model": "gpt-4.1", "input": PROMPT, "instructions": "abcd"}).to_string();
    let v = post(&mock, "/v1/responses", &body)
        .bearer(KEY)
        .send()
        .await
        .json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(v["usage"]["output_tokens"], 8);

    let body = json!({"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"}],
        "stream": true, "max_output_tokens": 3})
    .to_string();
    let s = post(&mock, "/v1/responses", &body)
        .bearer(KEY)
        .stream()
        .await;
    let events = s.events();
    assert_eq!(
        events,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete",
        ]
    );
    let data = s.data();
    let seqs: Vec<u64> = data
        .iter()
        .map(|d| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..11).collect::<Vec<_>>());
    assert!(
        data.iter()
            .zip(&events)
            .all(|(d, e)| d["type"] == e.as_str())
    );
    assert_eq!(data[7]["text"], "This is a");
    assert_eq!(data[10]["response"]["usage"]["output_tokens"], 3);
    assert_eq!(
        data[10]["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

// ------------------------------------------------------------------- Azure

#[tokio::test]
async fn azure_chat_completion() {
    let mock = mock().await;
    let path = "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21";
    let body = json!({"messages": [{"role": "user", "content": PROMPT}]}).to_string();
    let r = post(&mock, path, &body).header("api-key", KEY).send().await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["model"], "prod-gpt4o");
    assert_eq!(v["usage"]["prompt_tokens"], 10);

    let r = post(&mock, path, &body).bearer(KEY).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "401");

    let r = post(
        &mock,
        "/openai/deployments/prod-gpt4o/chat/completions",
        &body,
    )
    .header("api-key", KEY)
    .send()
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json(),
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );

    // The newer `/openai/v1/` surface takes the model in the body, no api-version.
    let body = chat_body("gpt-4o", PROMPT, json!({}));
    let r = post(&mock, "/openai/v1/chat/completions", &body)
        .header("api-key", KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["model"], "gpt-4o");

    let embed = "/openai/deployments/emb/embeddings?api-version=2024-10-21";
    let r = post(&mock, embed, r#"{"input":"abc"}"#)
        .header("api-key", KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

// --------------------------------------------------------------- Anthropic

fn anthropic_body(extra: Value) -> String {
    let mut body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "system": "abcd",
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body.to_string()
}

#[tokio::test]
async fn anthropic_message() {
    let mock = mock().await;
    let r = post(&mock, "/v1/messages", &anthropic_body(json!({})))
        .anthropic(KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.contains_key("request-id"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(v["usage"]["output_tokens"], 8);

    let count = post(
        &mock,
        "/v1/messages/count_tokens",
        &anthropic_body(json!({})),
    )
    .anthropic(KEY)
    .send()
    .await
    .json();
    assert_eq!(count, json!({"input_tokens": 11}));
}

#[tokio::test]
async fn anthropic_stream() {
    let mock = mock().await;
    let body = anthropic_body(json!({"stream": true}));
    let s = post(&mock, "/v1/messages", &body)
        .anthropic(KEY)
        .header("x-mock-chunks", "3")
        .stream()
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        s.events(),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let data = s.data();
    assert!(
        data.iter()
            .zip(s.events())
            .all(|(d, e)| d["type"] == e.as_str())
    );
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 11);
    assert_eq!(
        data[3]["delta"],
        json!({"type": "text_delta", "text": "This"})
    );
    assert_eq!(data[7]["delta"]["stop_reason"], "end_turn");
    // The current API repeats the cumulative input counts at the end.
    assert_eq!(
        data[7]["usage"],
        json!({"input_tokens": 11, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 3})
    );
}

#[tokio::test]
async fn anthropic_errors() {
    let mock = mock().await;
    let body = anthropic_body(json!({}));
    let r = post(&mock, "/v1/messages", &body)
        .anthropic("sk-strk-wrong")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    );
    let r = post(&mock, "/v1/messages", &body)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["message"], "x-api-key header is required");
    // Current Anthropic SDKs send the API key as a Bearer token.
    let r = post(&mock, "/v1/messages", &body)
        .bearer(KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post(&mock, "/v1/messages", &body)
        .bearer("sk-strk-wrong")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = post(&mock, "/v1/messages", &body)
        .header("x-api-key", KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(
        r.json()["error"]["message"],
        "anthropic-version: header is required"
    );

    let r = post(&mock, "/v1/messages", r#"{"model":"c","messages":[]}"#)
        .anthropic(KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["message"], "max_tokens: Field required");
}

#[tokio::test]
async fn anthropic_models_share_the_openai_path() {
    let mock = mock().await;
    let v = get(&mock, "/v1/models").anthropic(KEY).send().await.json();
    assert_eq!(v["has_more"], false);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["type"] == "model")
    );
    let v = get(&mock, "/v1/models/claude-x")
        .anthropic(KEY)
        .send()
        .await
        .json();
    assert_eq!(v["id"], "claude-x");
}

// ------------------------------------------------------------------ Gemini

fn gemini_body(extra: Value) -> String {
    let mut body = json!({
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "systemInstruction": {"parts": [{"text": "abcd"}]},
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body.to_string()
}

#[tokio::test]
async fn gemini_generate() {
    let mock = mock().await;
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let r = post(&mock, path, &gemini_body(json!({})))
        .header("x-goog-api-key", KEY)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["candidates"][0]["content"]["role"], "model");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    assert_eq!(
        v["usageMetadata"]["promptTokenCount"], 11,
        "system instruction counts too"
    );
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 8);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 19);

    // The key may also come as a query parameter.
    let r = post(
        &mock,
        &format!("{path}?key={KEY}"),
        &gemini_body(json!({"generationConfig": {"maxOutputTokens": 2}})),
    )
    .send()
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["candidates"][0]["finishReason"], "MAX_TOKENS");

    let count = post(
        &mock,
        "/v1beta/models/gemini-2.5-flash:countTokens",
        &gemini_body(json!({})),
    )
    .header("x-goog-api-key", KEY)
    .send()
    .await
    .json();
    assert_eq!(count["totalTokens"], 11);
}

#[tokio::test]
async fn gemini_stream_sse_and_json_array() {
    let mock = mock().await;
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let s = post(&mock, &format!("{path}?alt=sse"), &gemini_body(json!({})))
        .header("x-goog-api-key", KEY)
        .header("x-mock-chunks", "3")
        .stream()
        .await;
    assert!(
        s.text().contains("\r\n\r\n"),
        "Gemini frames events with CRLF"
    );
    let data = s.data();
    assert_eq!(data.len(), 3);
    let counts: Vec<_> = data
        .iter()
        .map(|d| d["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3]);
    assert!(
        data[..2]
            .iter()
            .all(|d| d["candidates"][0].get("finishReason").is_none())
    );
    assert_eq!(data[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(data[2]["usageMetadata"]["promptTokenCount"], 11);

    let r = post(&mock, path, &gemini_body(json!({})))
        .header("x-goog-api-key", KEY)
        .header("x-mock-chunks", "2")
        .send()
        .await;
    let array = r.json();
    assert_eq!(array.as_array().unwrap().len(), 2);
    assert_eq!(array[1]["usageMetadata"]["candidatesTokenCount"], 2);
}

#[tokio::test]
async fn gemini_auth_errors() {
    let mock = mock().await;
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let r = post(&mock, path, &gemini_body(json!({})))
        .header("x-goog-api-key", "sk-strk-wrong")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v = r.json();
    assert_eq!(v["error"]["code"], 400);
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");

    let r = post(&mock, path, &gemini_body(json!({}))).send().await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["status"], "PERMISSION_DENIED");

    let v = get(&mock, "/v1beta/models")
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .json();
    assert!(
        v["models"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("models/")
    );
    // google-genai uses the v1 paths, which overlap OpenAI's.
    let v = get(&mock, &format!("/v1/models?key={KEY}"))
        .send()
        .await
        .json();
    assert!(v["models"].is_array());
    let r = post(
        &mock,
        "/v1/models/gemini-2.5-flash:generateContent",
        &gemini_body(json!({})),
    )
    .header("x-goog-api-key", KEY)
    .send()
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

// ----------------------------------------------------------- prompt caching

/// 4,400 bytes of prompt text = 1,100 tokens: cacheable (over 1,024); a hit
/// caches 1,024 of them (128-token steps).
fn long_prompt() -> String {
    PROMPT.repeat(110)
}

#[tokio::test]
async fn openai_and_gemini_report_cache_hits_within_the_prompt_count() {
    let mock = mock().await;
    let long = long_prompt();
    for (cache, prompt, cached) in [
        ("miss", &long, 0),
        ("hit", &long, 1024),
        ("hit", &PROMPT.to_owned(), 0),
    ] {
        let chat = chat_body("gpt-4o", prompt, json!({}));
        let v = post(&mock, "/v1/chat/completions", &chat)
            .bearer(KEY)
            .header("x-mock-cache", cache)
            .send()
            .await
            .json();
        let tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"], cached,
            "{cache}"
        );
        let stream = chat_body(
            "gpt-4o",
            prompt,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        );
        let s = post(&mock, "/v1/chat/completions", &stream)
            .bearer(KEY)
            .header("x-mock-cache", cache)
            .stream()
            .await;
        let last = s.data().pop().unwrap();
        assert_eq!(last["usage"]["prompt_tokens"], tokens);
        assert_eq!(
            last["usage"]["prompt_tokens_details"]["cached_tokens"],
            cached
        );

        let responses = json!({"model": "gpt-4o", "input": prompt}).to_string();
        let v = post(&mock, "/v1/responses", &responses)
            .bearer(KEY)
            .header("x-mock-cache", cache)
            .send()
            .await
            .json();
        assert_eq!(v["usage"]["input_tokens"], tokens);
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], cached);

        let gemini =
            json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}).to_string();
        let v = post(
            &mock,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            &gemini,
        )
        .header("x-goog-api-key", KEY)
        .header("x-mock-cache", cache)
        .send()
        .await
        .json();
        assert_eq!(v["usageMetadata"]["promptTokenCount"], tokens);
        if cached == 0 {
            assert!(
                v["usageMetadata"].get("cachedContentTokenCount").is_none(),
                "{v}"
            );
        } else {
            assert_eq!(v["usageMetadata"]["cachedContentTokenCount"], cached);
            assert_eq!(
                v["usageMetadata"]["cacheTokensDetails"][0]["tokenCount"],
                cached
            );
        }
    }
}

#[tokio::test]
async fn anthropic_caches_up_to_the_last_breakpoint_and_reports_it_beside_input() {
    let mock = mock().await;
    // 4,400 bytes of system prompt marked for caching (1,100 tokens), then
    // the 40-byte question (10 tokens).
    let body = |stream: bool| {
        json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 1024,
            "stream": stream,
            "system": [{"type": "text", "text": long_prompt(), "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": PROMPT}],
        })
        .to_string()
    };
    for (cache, read, write) in [("miss", 0, 1100), ("hit", 1100, 0)] {
        let v = post(&mock, "/v1/messages", &body(false))
            .anthropic(KEY)
            .header("x-mock-cache", cache)
            .send()
            .await
            .json();
        let usage = &v["usage"];
        assert_eq!(usage["input_tokens"], 10, "{cache}: {usage}");
        assert_eq!(usage["cache_read_input_tokens"], read);
        assert_eq!(usage["cache_creation_input_tokens"], write);
        assert_eq!(usage["cache_creation"]["ephemeral_5m_input_tokens"], write);

        let s = post(&mock, "/v1/messages", &body(true))
            .anthropic(KEY)
            .header("x-mock-cache", cache)
            .header("x-mock-chunks", "3")
            .stream()
            .await;
        let data = s.data();
        let start = &data[0]["message"]["usage"];
        let delta = &data.iter().find(|d| d["type"] == "message_delta").unwrap()["usage"];
        for u in [start, delta] {
            assert_eq!(u["input_tokens"], 10, "{cache}: {u}");
            assert_eq!(u["cache_read_input_tokens"], read);
            assert_eq!(u["cache_creation_input_tokens"], write);
        }
        assert_eq!(start["output_tokens"], 1);
        assert_eq!(delta["output_tokens"], 3);
    }
    // Below the minimum nothing is cached, marked or not.
    let short = json!({
        "model": "claude-sonnet-4-6", "max_tokens": 5,
        "system": [{"type": "text", "text": "abcd", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": PROMPT}],
    });
    let v = post(&mock, "/v1/messages", &short.to_string())
        .anthropic(KEY)
        .send()
        .await
        .json();
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 0);
}
