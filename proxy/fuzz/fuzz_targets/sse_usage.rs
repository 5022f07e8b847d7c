//! The SSE usage parser must never panic, and must give the same answer
//! however the stream is cut into chunks. The first byte picks chunk sizes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strake_proxy::usage::{BodyKind, SseUsage, UsageParser, json_usage};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = SseUsage::default();
    whole.feed(stream);
    let expected = whole.finish();

    let mut chunked = SseUsage::default();
    let step = usize::from(seed % 17) + 1;
    for chunk in stream.chunks(step) {
        chunked.feed(chunk);
    }
    assert_eq!(chunked.finish(), expected);

    let mut parser = UsageParser::new(BodyKind::Json);
    parser.feed(&Bytes::copy_from_slice(stream));
    let _ = parser.finish();
    let _ = json_usage(stream);
});
