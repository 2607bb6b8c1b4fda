//! The config loader reports errors for any input, never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = atgate::config::Config::parse(text, "fuzz");
    }
});
