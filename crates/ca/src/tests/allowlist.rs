//! The PKCS#11 allow-list at the one place a module is loaded: a `ModulePath` that is not on
//! it is never opened, whichever way the configuration arrives (a new configuration or the
//! replicated state). Checked with a real shared library whose constructor leaves a marker
//! file when it is loaded, built with the system C compiler (`cc`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::td;
use crate::{
    generate_provider, provider_from_state, CaConfig, CaError, Pkcs11Modules, Pkcs11Provider,
};

include!("marker_library.rs");

fn config_for(module: &Path) -> CaConfig {
    let m = json!({
        "ModulePath": module.display().to_string(),
        "TokenLabel": "t", "Pin": "1234", "KeyLabel": "k",
    });
    CaConfig::parse("pkcs11", m.as_object().unwrap(), false).unwrap()
}

#[test]
fn a_module_off_the_allow_list_is_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (lib, marker) = marker_library(dir.path());
    let config = config_for(&lib);
    let state = BTreeMap::from([
        ("KeyLabel".to_string(), "k-1".to_string()),
        ("KeyId".to_string(), "00ff".to_string()),
        ("RootCert".to_string(), "x".to_string()),
    ]);
    let td = td();
    for modules in [
        Pkcs11Modules::none(),
        Pkcs11Modules::new(["/usr/lib/softhsm/libsofthsm2.so"]).unwrap(),
        // A prefix of the path, and the same file named another way, are other strings.
        Pkcs11Modules::new([dir.path().display().to_string()]).unwrap(),
        Pkcs11Modules::new([format!("{}/./marker.so", dir.path().display())]).unwrap(),
    ] {
        let attempts = [
            ("check", modules.check(&config)),
            (
                "generate",
                Pkcs11Provider::generate(&td, &config, &modules).map(drop),
            ),
            (
                "from_state",
                Pkcs11Provider::from_state(&state, &config, &modules).map(drop),
            ),
            (
                "generate_provider",
                generate_provider(&td, &config, &modules).map(drop),
            ),
            (
                "provider_from_state",
                provider_from_state(&config, &state, &modules).map(drop),
            ),
        ];
        for (what, r) in attempts {
            match r {
                Err(CaError::InvalidConfig(m)) => {
                    assert!(
                        m.contains("is not an allowed PKCS#11 module"),
                        "{what}: {m}"
                    );
                    assert!(m.contains(&lib.display().to_string()), "{what}: {m}");
                    assert!(!m.contains("1234"), "{what}: the PIN is never shown: {m}");
                }
                other => panic!("{what} with {modules:?}: {other:?}"),
            }
            assert!(
                !marker.exists(),
                "{what} with {modules:?} loaded the library"
            );
        }
    }

    // The control: on the allow-list, the same library is loaded (and, being no PKCS#11
    // module, refused after its constructor ran), so the marker does detect a load.
    let allowed = Pkcs11Modules::new([lib.display().to_string()]).unwrap();
    allowed.check(&config).unwrap();
    match Pkcs11Provider::generate(&td, &config, &allowed) {
        Err(CaError::InvalidConfig(m)) => {
            assert!(m.contains("cannot load the PKCS#11 module"), "{m}")
        }
        other => panic!("not a PKCS#11 module: {:?}", other.err()),
    }
    assert!(marker.exists(), "the control library was not loaded");
}
