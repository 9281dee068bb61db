//! Any bytes as a request body: decoding, canonicalisation, validation and applying to a store
//! must never panic, and a rejected command must change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_api::{
    canonicalize_keys, AclPolicy, AclRole, AclToken, CatalogRegistration, CheckDefinition,
    ConfigEntry, ServiceDefinition,
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
    // ACL bodies: a write the store refuses changes nothing.
    let refused_changes_nothing = |index: u64, cmd: Command| {
        let before = store.snapshot();
        if let Applied::Rejected(_) | Applied::NotFound(_) | Applied::Denied(_) =
            store.apply(index, cmd)
        {
            let mut after = store.snapshot();
            after.index = before.index;
            assert_eq!(after, before);
        }
    };
    if let Ok(policy) = serde_json::from_value::<AclPolicy>(value.clone()) {
        refused_changes_nothing(3, Command::AclPolicySet { policy, create: true });
    }
    if let Ok(role) = serde_json::from_value::<AclRole>(value.clone()) {
        refused_changes_nothing(4, Command::AclRoleSet { role, create: true });
    }
    if let Ok(token) = serde_json::from_value::<AclToken>(value.clone()) {
        refused_changes_nothing(5, Command::AclTokenSet { token: token.clone(), create: true });
        refused_changes_nothing(6, Command::AclTokenSet { token, create: false });
    }
    if let Ok(mut entry) = serde_json::from_value::<ConfigEntry>(value) {
        if validate_config_entry(&entry).is_ok() {
            normalize_config_entry(&mut entry);
            let _ = store.apply(2, Command::ConfigSet { entry, cas: None });
        }
    }
});
