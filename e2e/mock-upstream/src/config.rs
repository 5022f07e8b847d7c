//! Static configuration of a mock: listen address, expected keys, default behaviour.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a [`crate::MockUpstream`] is started.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Address to bind. The default, `127.0.0.1:0`, picks a free port.
    pub listen: SocketAddr,
    /// Real provider keys the mock expects. Can be replaced at runtime.
    pub keys: Keys,
    /// Behaviour used when a request sets no knob of its own.
    pub defaults: Behavior,
    /// Record every request (see [`crate::RecordedRequest`]). Off for benchmarks.
    pub record: bool,
    /// Bytes of each request body kept in the recording.
    pub record_body_limit: usize,
    /// Recorded requests kept; the oldest are dropped beyond this, so a
    /// long-running mock cannot grow without bound.
    pub record_limit: usize,
    /// One line per request on stderr (method, path without query, status, time).
    pub verbose: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            keys: Keys::default(),
            defaults: Behavior::default(),
            record: true,
            record_body_limit: 1024 * 1024,
            record_limit: 10_000,
            verbose: false,
        }
    }
}

/// The real keys the mock accepts, per provider API style.
///
/// An empty list accepts any credential (but a credential must still be
/// present where the provider requires one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Keys {
    /// `Authorization: Bearer <key>` on OpenAI-style endpoints.
    pub openai: Vec<String>,
    /// `x-api-key: <key>` (or `Authorization: Bearer <key>`) on Anthropic endpoints.
    pub anthropic: Vec<String>,
    /// `api-key: <key>` on Azure OpenAI deployment endpoints.
    pub azure: Vec<String>,
    /// `x-goog-api-key: <key>` or `?key=<key>` on Gemini endpoints.
    pub gemini: Vec<String>,
}

impl Keys {
    /// The same key for every provider.
    pub fn all(key: impl Into<String>) -> Self {
        let key = key.into();
        Self {
            openai: vec![key.clone()],
            anthropic: vec![key.clone()],
            azure: vec![key.clone()],
            gemini: vec![key],
        }
    }
}

/// Knobs that shape a response. [`MockConfig::defaults`] sets them for every
/// request; a request overrides them with `x-mock-*` headers or a model-name
/// suffix (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behavior {
    /// Content chunks in a streamed reply (`x-mock-chunks`).
    pub stream_chunks: usize,
    /// Pause between two content chunks (`x-mock-interval-ms`).
    pub stream_interval: Duration,
    /// How long a stream stays open after its last event before the body
    /// ends (`x-mock-linger-ms`), as a server whose end of stream travels
    /// apart from the last event.
    pub stream_linger: Duration,
    /// Words (= output tokens) in the reply (`x-mock-words`). `None` means one
    /// word per stream chunk, so streamed and plain replies match.
    pub words: Option<usize>,
    /// Pause before the response head is sent (`x-mock-delay-ms`).
    pub delay: Duration,
    /// Answer with this status in the provider's error shape (`x-mock-status`).
    pub status: Option<u16>,
    /// Cut the connection after this many content chunks (`x-mock-drop`); a
    /// non-streamed body is cut halfway.
    pub drop_after: Option<usize>,
    /// Answer as if the prompt's prefix were in the provider's prompt cache
    /// (`x-mock-cache: hit`), rather than seen for the first time (`miss`,
    /// the default): see [`crate::text::cached_tokens`].
    pub cache_hit: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            stream_chunks: 8,
            stream_interval: Duration::ZERO,
            stream_linger: Duration::ZERO,
            words: None,
            delay: Duration::ZERO,
            status: None,
            drop_after: None,
            cache_hit: false,
        }
    }
}

impl Behavior {
    /// Output words before any `max_tokens` cap.
    pub(crate) fn reply_words(&self) -> usize {
        self.words.unwrap_or(self.stream_chunks)
    }
}
