//! Per-request behaviour overrides.
//!
//! Tests reach the mock through SDKs and through the Strake proxy, so a knob
//! can travel two ways: an `x-mock-<name>` header (the proxy forwards
//! non-credential headers) or a model-name suffix `model@name=value,name=value`
//! (for clients that cannot add headers). Headers win over the model suffix,
//! which wins over the configured defaults.

use std::time::Duration;

use http::HeaderMap;

use crate::config::Behavior;

const HEADER_PREFIX: &str = "x-mock-";

/// Separates the real model name from its knob list.
const MODEL_KNOB_SEPARATOR: char = '@';

/// The effective behaviour for one request.
pub(crate) fn resolve(
    defaults: &Behavior,
    model: Option<&str>,
    headers: &HeaderMap,
) -> Result<Behavior, String> {
    let mut behavior = *defaults;
    if let Some((_, knobs)) = model.and_then(|m| m.split_once(MODEL_KNOB_SEPARATOR)) {
        for pair in knobs.split(',').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            set(&mut behavior, name, value)
                .map_err(|e| format!("invalid mock knob `{name}` in model name: {e}"))?;
        }
    }
    for (name, value) in headers {
        // Header names are lowercase in `http`, so a plain prefix test suffices.
        let Some(knob) = name.as_str().strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        let value = value.to_str().map_err(|_| format!("{name}: not ASCII"))?;
        set(&mut behavior, knob, value.trim()).map_err(|e| format!("invalid {name}: {e}"))?;
    }
    Ok(behavior)
}

fn set(behavior: &mut Behavior, name: &str, value: &str) -> Result<(), String> {
    let number = || {
        value
            .parse::<u64>()
            .map_err(|_| format!("expected a non-negative integer, got {value:?}"))
    };
    match name {
        "chunks" => behavior.stream_chunks = to_usize(number()?),
        "interval-ms" => behavior.stream_interval = Duration::from_millis(number()?),
        "linger-ms" => behavior.stream_linger = Duration::from_millis(number()?),
        "words" => behavior.words = Some(to_usize(number()?)),
        "delay-ms" => behavior.delay = Duration::from_millis(number()?),
        "status" => {
            let status = number()?;
            if !(100..=599).contains(&status) {
                return Err(format!("{status} is not an HTTP status"));
            }
            behavior.status = Some(status as u16);
        }
        "drop" => behavior.drop_after = Some(to_usize(number()?)),
        "cache" => {
            behavior.cache_hit = match value {
                "hit" => true,
                "miss" => false,
                _ => return Err(format!("expected hit or miss, got {value:?}")),
            }
        }
        _ => {
            return Err(
                "unknown knob (chunks, interval-ms, linger-ms, words, delay-ms, status, drop, cache)"
                    .into(),
            );
        }
    }
    Ok(())
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn headers_override_model_suffix_which_overrides_defaults() {
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-chunks", HeaderValue::from_static("3"));
        headers.insert("x-mock-delay-ms", HeaderValue::from_static(" 20 "));
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        let b = resolve(
            &Behavior::default(),
            Some("gpt-4o@chunks=5,status=429,words=2"),
            &headers,
        )
        .unwrap();
        assert_eq!(b.stream_chunks, 3);
        assert_eq!(b.status, Some(429));
        assert_eq!(b.words, Some(2));
        assert_eq!(b.delay, Duration::from_millis(20));
        assert_eq!(b.drop_after, None);
    }

    #[test]
    fn rejects_unknown_and_malformed_knobs() {
        let headers = HeaderMap::new();
        let defaults = Behavior::default();
        assert!(resolve(&defaults, Some("m@bogus=1"), &headers).is_err());
        assert!(resolve(&defaults, Some("m@status=42"), &headers).is_err());
        assert!(resolve(&defaults, Some("m@chunks=-1"), &headers).is_err());
        assert!(resolve(&defaults, Some("m@cache=warm"), &headers).is_err());
        assert!(
            resolve(&defaults, Some("m@cache=hit"), &headers)
                .unwrap()
                .cache_hit
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-drop", HeaderValue::from_static("yes"));
        assert!(resolve(&defaults, None, &headers).is_err());
    }

    #[test]
    fn plain_model_names_change_nothing() {
        let b = resolve(
            &Behavior::default(),
            Some("claude-sonnet-4-6"),
            &HeaderMap::new(),
        );
        assert_eq!(b.unwrap(), Behavior::default());
    }
}
