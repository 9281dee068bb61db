//! Any bytes as a request body: decoding, canonicalisation, validation and applying to a store
//! must never panic, and a rejected command must change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_api::{
    canonicalize_keys, CatalogRegistration, CheckDefinition, ConfigEntry, ServiceDefinition,
};
use trellis_state::{
    normalize_config_entry, validate_config_entry, validate_registration, Applied, Command, Store,
};

fuzz_target!(|data: &[u8]| {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    canonicalize_keys(&mut value);
    let _ = serde_json::from_value::<ServiceDefinition>(value.clone());
    let _ = serde_json::from_value::<CheckDefinition>(value.clone());
    let store = Store::new("dc1");
    if let Ok(reg) = serde_json::from_value::<CatalogRegistration>(value.clone()) {
        let _ = validate_registration(&reg);
        let before = store.snapshot();
        if let Applied::Rejected(_) = store.apply(1, Command::Register(Box::new(reg))) {
            let mut after = store.snapshot();
            after.index = before.index;
            assert_eq!(after, before);
        }
    }
    if let Ok(mut entry) = serde_json::from_value::<ConfigEntry>(value) {
        if validate_config_entry(&entry).is_ok() {
            normalize_config_entry(&mut entry);
            let _ = store.apply(2, Command::ConfigSet { entry, cas: None });
        }
    }
});
