//! Any string as a Go duration (`?wait=`, check intervals): an answer or an error, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = trellis_api::parse_go_duration(s);
    }
});
