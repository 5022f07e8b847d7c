//! OpenAI embeddings (`/v1/embeddings`, and Azure's deployment path).
//!
//! Vectors are deterministic unit vectors seeded by the input, so equal
//! inputs embed equally and tests can compare them.

use std::borrow::Cow;

use base64::Engine as _;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::openai::{missing, pick_model};
use crate::reply::{self, Resp};
use crate::router::{Ctx, Provider};
use crate::text::input_tokens;

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    input: Option<serde_json::Value>,
    dimensions: Option<usize>,
    encoding_format: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Floats(Vec<f32>),
    /// Little-endian f32s, base64: what the OpenAI SDKs request by default.
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Upper bound on `dimensions`, as for text-embedding-3-large.
const MAX_DIMENSIONS: usize = 3072;

pub(crate) async fn create(
    ctx: &Ctx<'_>,
    provider: Provider,
    deployment: Option<&str>,
) -> Result<Resp, Resp> {
    let req: EmbeddingsRequest = ctx.parse(provider)?;
    let model = pick_model(provider, req.model.as_deref(), deployment)?;
    let input = req
        .input
        .as_ref()
        .ok_or_else(|| missing(provider, "input"))?;
    let inputs = embedding_inputs(input).ok_or_else(|| {
        provider.error(
            StatusCode::BAD_REQUEST,
            "'input' must be a string, an array of strings, or an array of token arrays.",
        )
    })?;
    let behavior = ctx.prepare(provider, Some(model)).await?;
    let dimensions = match req.dimensions {
        Some(d) if (1..=MAX_DIMENSIONS).contains(&d) => d,
        Some(_) => {
            let message = format!("'dimensions' must be between 1 and {MAX_DIMENSIONS}.");
            return Err(provider.error(StatusCode::BAD_REQUEST, &message));
        }
        None if model.contains("3-large") => 3072,
        None => 1536,
    };
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let mut prompt_tokens = 0;
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, (seed, tokens))| {
            prompt_tokens += tokens;
            let vector = unit_vector(seed, dimensions);
            Embedding {
                object: "embedding",
                index,
                embedding: if base64 {
                    Vector::Base64(base64_f32(&vector))
                } else {
                    Vector::Floats(vector)
                },
            }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    Ok(reply::ok_json(&behavior, &list))
}

/// Each input as (bytes seeding its vector, its token count).
fn embedding_inputs(input: &serde_json::Value) -> Option<Vec<(Vec<u8>, u64)>> {
    use serde_json::Value;
    let one = |v: &Value| -> Option<(Vec<u8>, u64)> {
        match v {
            Value::String(s) => Some((s.as_bytes().to_vec(), input_tokens(s.len()))),
            Value::Array(ids) if ids.iter().all(Value::is_u64) => {
                Some((v.to_string().into_bytes(), ids.len() as u64))
            }
            _ => None,
        }
    };
    match input {
        Value::String(_) => Some(vec![one(input)?]),
        // An array of integers is a single tokenised input.
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            Some(vec![one(input)?])
        }
        Value::Array(items) if !items.is_empty() => items.iter().map(one).collect(),
        _ => None,
    }
}

/// A deterministic unit vector: the same input always embeds the same way,
/// different inputs (almost surely) differently.
fn unit_vector(seed: &[u8], dimensions: usize) -> Vec<f32> {
    // FNV-1a for the seed, xorshift64* for the stream.
    let mut state = seed.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_vectors_are_deterministic_and_normalised() {
        let a = unit_vector(b"hello", 64);
        assert_eq!(a, unit_vector(b"hello", 64));
        assert_ne!(a, unit_vector(b"hellp", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)));
    }

    #[test]
    fn embedding_input_shapes() {
        use serde_json::json;
        assert_eq!(embedding_inputs(&json!("abcdefgh")).unwrap()[0].1, 2);
        assert_eq!(embedding_inputs(&json!(["a", "b"])).unwrap().len(), 2);
        assert_eq!(embedding_inputs(&json!([1, 2, 3])).unwrap()[0].1, 3);
        assert_eq!(embedding_inputs(&json!([[1], [2, 3]])).unwrap().len(), 2);
        assert!(embedding_inputs(&json!([])).is_none());
        assert!(embedding_inputs(&json!({"a": 1})).is_none());
    }
}
