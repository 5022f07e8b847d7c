//! How long the proxy's body reads take: the usage in a response and the
//! model in a request (for the access log), with the proxy's walker against
//! a serde parse of the whole document (what the proxy did before), on
//! small and long bodies. Prints nanoseconds per body and the ratio;
//! numbers, not assertions.
//!
//! ```text
//! cargo run --release -p strake-proxy --example usage_scan
//! ```

use std::hint::black_box;
use std::time::Instant;

use serde::Deserialize;
use strake_proxy::route::{BodyModel, logged_body_model};
use strake_proxy::usage::json_usage;

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<Counts>,
    #[serde(default)]
    message: Option<Nested>,
    #[serde(default)]
    response: Option<Nested>,
}

#[derive(Deserialize)]
struct Nested {
    #[serde(default)]
    usage: Option<Counts>,
}

#[derive(Deserialize)]
struct Counts {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

fn serde_usage(body: &[u8]) -> (Option<u64>, Option<u64>) {
    let Ok(e) = serde_json::from_slice::<Envelope>(body) else {
        return (None, None);
    };
    let c = e
        .usage
        .or(e.message.and_then(|m| m.usage))
        .or(e.response.and_then(|r| r.usage));
    c.map_or((None, None), |c| {
        (
            c.input_tokens.or(c.prompt_tokens),
            c.output_tokens.or(c.completion_tokens),
        )
    })
}

fn chat_completion(content_len: usize) -> Vec<u8> {
    let content: String = "Strake swaps tokens for keys; "
        .chars()
        .cycle()
        .take(content_len)
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "id": "chatcmpl-5b7de7ba0000000000000000",
        "object": "chat.completion",
        "created": 1_795_813_674,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 15, "completion_tokens": 8, "total_tokens": 23,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_strake_mock"
    }))
    .expect("serializable")
}

/// Nanoseconds per call, the best of five rounds (the least disturbed).
fn time(body: &[u8], f: impl Fn(&[u8])) -> f64 {
    let iterations = (2_000_000 / body.len()).clamp(200, 200_000);
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f(black_box(body));
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

#[derive(Deserialize)]
struct Model<'a> {
    #[serde(borrow, default)]
    #[allow(dead_code)] // read by serde; only its cost matters here
    model: Option<&'a str>,
}

fn chat_request(prompt_len: usize) -> Vec<u8> {
    let prompt: String = "Summarise the incident report. "
        .chars()
        .cycle()
        .take(prompt_len)
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt}
        ],
        "stream": false
    }))
    .expect("serializable")
}

fn main() {
    println!("| read | body | bytes | walker | serde | serde ÷ walker |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (name, prompt_len) in [("short prompt", 32), ("100 KB prompt", 100_000)] {
        let body = chat_request(prompt_len);
        let json = Some(&b"application/json"[..]);
        assert_eq!(
            logged_body_model(json, &body),
            BodyModel::Named("gpt-4o-mini".into())
        );
        let walker = time(&body, |b| {
            black_box(logged_body_model(json, b));
        });
        let serde = time(&body, |b| {
            black_box(serde_json::from_slice::<Model<'_>>(b).ok());
        });
        println!(
            "| model (request) | {name} | {} | {walker:.0} ns | {serde:.0} ns | {:.2}× |",
            body.len(),
            serde / walker
        );
    }

    for (name, content_len) in [
        ("chat completion, 45-byte reply", 45),
        ("chat completion, 2 KB reply", 2_000),
        ("chat completion, 32 KB reply", 32_000),
    ] {
        let body = chat_completion(content_len);
        let walked = json_usage(&body);
        assert_eq!(
            (walked.input_tokens, walked.output_tokens),
            serde_usage(&body),
            "both read the same usage"
        );
        let walker = time(&body, |b| {
            black_box(json_usage(b));
        });
        let serde = time(&body, |b| {
            black_box(serde_usage(b));
        });
        println!(
            "| usage (response) | {name} | {} | {walker:.0} ns | {serde:.0} ns | {:.2}× |",
            body.len(),
            serde / walker
        );
    }
}
