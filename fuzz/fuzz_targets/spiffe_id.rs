//! Any string as a SPIFFE ID (a certificate's URI SAN): an answer or an error, no panic; and an
//! ID that parses is canonical and formats to a string that parses back to the same ID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_identity::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = s.parse::<SpiffeId>() else {
        return;
    };
    if let Err(e) = id.validate() {
        panic!("{s:?} parsed to a non-canonical {id:?}: {e}");
    }
    let formatted = id.to_string();
    match formatted.parse::<SpiffeId>() {
        Ok(again) => {
            assert_eq!(again, id, "{s:?} -> {formatted:?}");
            assert_eq!(again.to_string(), formatted, "{s:?}");
        }
        Err(e) => panic!("{s:?} -> {formatted:?} does not parse: {e}"),
    }
});
