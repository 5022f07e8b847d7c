//! The config parser must never panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strake_proxy::config::{Environment, parse};

struct Env;

impl Environment for Env {
    fn var(&self, name: &str) -> Option<String> {
        (name == "SET").then(|| "sk-fuzz".to_owned())
    }

    fn read_file(&self, _: &std::path::Path) -> std::io::Result<String> {
        Err(std::io::Error::other("no files while fuzzing"))
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(text, &Env);
    }
});
