//! A simulated LLM provider for Strake's tests and benchmarks.
//!
//! The provider is the only simulated part of Strake's test setup, so it
//! speaks the real wire formats closely enough for the official OpenAI and
//! Anthropic SDKs (and curl) to work against it, streaming included. It is
//! built on bare hyper to serve as the floor in proxy benchmarks. HTTP/1.1
//! and cleartext HTTP/2 (prior knowledge) share one port.
//!
//! # Endpoints
//!
//! | API | Endpoints | Credential |
//! | --- | --- | --- |
//! | OpenAI | `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`; `GET /v1/models[/{id}]` | `Authorization: Bearer` |
//! | Azure OpenAI | `POST /openai/deployments/{d}/chat/completions`, `…/completions`, `…/embeddings` (`?api-version=` required); the same under `/openai/v1/` (model in the body) | `api-key` |
//! | Anthropic | `POST /v1/messages`, `/v1/messages/count_tokens`; `GET /v1/models[/{id}]` (with `anthropic-version` or `x-api-key`) | `x-api-key`, or `Authorization: Bearer` as current SDKs send it (+ `anthropic-version` required) |
//! | Gemini | `POST /v1beta/models/{m}:generateContent`, `:streamGenerateContent[?alt=sse]`, `:countTokens` (also under `/v1/models/`); `GET /v1beta/models`, `GET /v1/models` (with a Gemini key) | `x-goog-api-key` or `?key=` |
//! | control | `GET /__mock/health`, `GET`/`DELETE /__mock/requests`, `PUT /__mock/keys` | none |
//!
//! Wrong or missing credentials get a 401 (Gemini: 400/403, as Google does)
//! in the provider's own error JSON. A provider whose key list is empty
//! accepts any credential, but still requires one.
//!
//! # Usage numbers
//!
//! Deterministic, so tests can check what the proxy accounted: input tokens
//! are `ceil(bytes of prompt text / 4)` (at least 1); output tokens are the
//! words of the reply. The reply has [`Behavior::words`] words (by default
//! one per stream chunk), capped by the request's `max_tokens` /
//! `max_completion_tokens` / `max_output_tokens` / `maxOutputTokens`, in
//! which case the finish reason says so (`length`, `max_tokens`, …).
//!
//! Prompt caching is reported in each provider's own fields, by the rules
//! the real APIs follow, with the `cache` knob saying whether the prompt
//! was seen before. Prompts under 1,024 tokens are never cached. OpenAI
//! (chat, Responses) and Gemini report a cache hit on such a prompt as
//! `cached_tokens` / `cachedContentTokenCount`: the prompt rounded down to
//! 128 tokens, within the input count. Anthropic caches only up to the
//! last block marked `cache_control` (in `system` or `messages`): a miss
//! writes that prefix (`cache_creation_input_tokens`), a hit reads it
//! (`cache_read_input_tokens`), and `input_tokens` counts the rest, as
//! Anthropic does; streamed, `message_start` and `message_delta` both carry
//! the input, cache and output counts.
//!
//! # Knobs
//!
//! Each knob has a default in [`MockConfig::defaults`] (CLI flag in
//! brackets), and each request can override it with an `x-mock-<name>`
//! header or with a model-name suffix `model@name=value,name=value` (for
//! clients that cannot add headers). Header beats model suffix beats default.
//!
//! | name | effect |
//! | --- | --- |
//! | `chunks` | content chunks in a streamed reply [`--stream-chunks`, 8] |
//! | `interval-ms` | pause between content chunks; the first goes out at once [`--stream-interval-ms`, 0] |
//! | `linger-ms` | keep a stream open this long after its last event before ending the body [`--stream-linger-ms`, 0] |
//! | `words` | reply length in words = output tokens; large values give huge bodies [`--words`, = chunks] |
//! | `delay-ms` | pause before the response head [`--delay-ms`, 0] |
//! | `status` | answer with this 4xx/5xx in the provider's error shape (429/529 add `retry-after: 1`) [`--status`] |
//! | `drop` | cut the connection after this many content chunks (a non-streamed body: halfway, after the head) [`--drop`] |
//! | `cache` | `hit`: the prompt's cacheable prefix is in the provider's cache; `miss`: it is not (Anthropic writes it) [`--cache-hit`, miss] |
//!
//! Knobs apply to authenticated requests only; credential errors are
//! immediate.
//!
//! # Tools
//!
//! A chat, Responses or Anthropic messages request that offers function
//! tools gets a call to one of them (the one `tool_choice` names, else the
//! first; arguments filled from the schema's required properties), in the
//! API's own shape, streamed or not: OpenAI `tool_calls` with
//! `finish_reason: "tool_calls"`, a Responses `function_call` item, an
//! Anthropic `tool_use` block with `stop_reason: "tool_use"`. Once the
//! conversation ends in a tool result (`role: "tool"`,
//! `function_call_output`, a `tool_result` block) the usual text answer
//! follows, so a client completes a round trip. `tool_choice: "none"` asks
//! for text.
//!
//! # Headers
//!
//! As the real APIs do, OpenAI-style answers carry `x-request-id` and
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, Anthropic's
//! `request-id` and `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//! (a generous, fixed account); their errors add `x-should-retry` (`true`
//! for 408, 409, 429 and 5xx), and 429/529 `retry-after`.
//!
//! # Recording
//!
//! Every provider request is recorded verbatim (method, path and query,
//! headers in order, body up to a limit) and available from
//! [`MockUpstream::requests`] or `GET /__mock/requests`, so tests can check
//! that the real key arrived and no Strake token did. Recording costs a copy
//! of the headers per request; turn it off (`--no-record`/`--bench`,
//! [`MockConfig::record`]) for benchmarks.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use strake_mock_upstream::{Keys, MockConfig, MockUpstream};
//!
//! let mock = MockUpstream::start(MockConfig {
//!     keys: Keys::all("sk-real-upstream-key"),
//!     ..MockConfig::default()
//! })
//! .await?;
//! let base_url = format!("{}/v1", mock.url());
//! // … point the proxy at `base_url`, send traffic …
//! assert!(mock.requests().iter().all(|r| !r.contains("sk-strk-")));
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```

// Handlers return `Result<Resp, Resp>` so that any step can short-circuit
// with a ready provider-shaped error via `?`. The error is as big as the
// success, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod anthropic;
mod body;
mod config;
mod embeddings;
mod gemini;
mod headers;
mod knobs;
mod openai;
mod record;
mod reply;
mod responses;
mod router;
mod server;
mod sse;
mod text;
mod tools;

pub use config::{Behavior, Keys, MockConfig};
pub use record::RecordedRequest;
pub use server::MockUpstream;
