//! The `pkcs11` provider against SoftHSM2, checked with openssl.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, when the module is initialised, and a module is
//! initialised once per process; so one test function sets up one token and runs every case
//! in turn. Without SoftHSM (`apt-get install softhsm2`) it fails, unless `TRELLIS_SKIP_HSM=1`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::{json, Value};

use super::{conformance, openssl_verify, sign_web, td};
use crate::pkcs11::module;
use crate::{
    generate_provider, provider_from_state, BuiltinProvider, CaConfig, CaError, CaProvider,
    CertInfo, Pkcs11Modules, Pkcs11Provider,
};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "trellis-test";
const PIN: &str = "hsm-user-pin-1234";
const SO_PIN: &str = "5678";
const KEY_LABEL: &str = "trellis-ca";

/// The allow-list the tests run with: SoftHSM, as an operator would list it.
fn allowed() -> Pkcs11Modules {
    Pkcs11Modules::new([MODULE]).unwrap()
}

/// SoftHSM's module, through the allow-list.
fn softhsm_module() -> cryptoki::context::Pkcs11 {
    module(&allowed().allow(MODULE).unwrap()).unwrap()
}

/// A SoftHSM token directory for this process; removed when dropped.
struct SoftHsm {
    _dir: tempfile::TempDir,
}

/// Points SoftHSM at a fresh token directory and initialises one token with a user PIN.
/// `None` when SoftHSM is missing and `TRELLIS_SKIP_HSM=1`.
fn softhsm() -> Option<SoftHsm> {
    if !Path::new(MODULE).exists() {
        if std::env::var("TRELLIS_SKIP_HSM").as_deref() == Ok("1") {
            eprintln!("SKIPPED: {MODULE} is missing and TRELLIS_SKIP_HSM=1");
            return None;
        }
        panic!(
            "SoftHSM2 is not installed ({MODULE} is missing): install it with \
             `apt-get install softhsm2` to run the pkcs11 provider tests, or set \
             TRELLIS_SKIP_HSM=1 to skip them"
        );
    }
    static STARTED: AtomicBool = AtomicBool::new(false);
    assert!(
        !STARTED.swap(true, Ordering::SeqCst),
        "SoftHSM is configured once per process"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    // Before the module's first C_Initialize in this process: SoftHSM reads it only then.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let m = softhsm_module();
    let slot = m
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|s| !m.get_token_info(*s).unwrap().token_initialized())
        .expect("SoftHSM offers a free slot");
    let so_pin = AuthPin::new(SO_PIN.into());
    m.init_token(slot, &so_pin, TOKEN).unwrap();
    let session = m.open_rw_session(slot).unwrap();
    session.login(UserType::So, Some(&so_pin)).unwrap();
    session.init_pin(&AuthPin::new(PIN.into())).unwrap();
    session.logout().unwrap();
    Some(SoftHsm { _dir: dir })
}

fn hsm_config(extra: Value) -> CaConfig {
    let mut m = json!({
        "ModulePath": MODULE, "TokenLabel": TOKEN, "Pin": PIN, "KeyLabel": KEY_LABEL,
    });
    m.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    CaConfig::parse("pkcs11", m.as_object().unwrap(), false).unwrap()
}

/// A session of the test's own on the token, logged in (or sharing the process's login).
fn side_session() -> Session {
    let m = softhsm_module();
    let slot = m
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| m.get_token_info(*s).unwrap().label() == TOKEN)
        .unwrap();
    let session = m.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => session,
        Err(e) => panic!("login: {e}"),
    }
}

/// The objects of `class` with the CKA_ID a provider stored.
fn objects(
    session: &Session,
    state: &BTreeMap<String, String>,
    class: ObjectClass,
) -> Vec<ObjectHandle> {
    let id: Vec<u8> = (0..state["KeyId"].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&state["KeyId"][i..i + 2], 16).unwrap())
        .collect();
    session
        .find_objects(&[Attribute::Class(class), Attribute::Id(id)])
        .unwrap()
}

fn err_of<T>(r: Result<T, CaError>) -> CaError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn pkcs11_provider_on_softhsm() {
    let Some(_hsm) = softhsm() else { return };
    let td = td();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let config = hsm_config(json!({}));

    // Refusals first: the PIN is only checked while no session of this process is logged in
    // (PKCS#11 login state is shared by every session of the application on the token).
    eprintln!("case: refusals");
    let wrong_pin = hsm_config(json!({"Pin": "wrong-pin-9999"}));
    match err_of(Pkcs11Provider::generate(&td, &wrong_pin, &allowed())) {
        CaError::InvalidConfig(m) => {
            assert!(m.contains("refused the configured Pin"), "{m}");
            assert!(
                !m.contains("wrong-pin-9999"),
                "the PIN must not be shown: {m}"
            );
        }
        e => panic!("wrong PIN: {e:?}"),
    }
    match err_of(Pkcs11Provider::generate(
        &td,
        &hsm_config(json!({"TokenLabel": "no-such-token"})),
        &allowed(),
    )) {
        CaError::InvalidConfig(m) => assert!(m.contains("\"no-such-token\""), "{m}"),
        e => panic!("missing token: {e:?}"),
    }
    match err_of(Pkcs11Provider::generate(
        &td,
        &hsm_config(json!({"PrivateKeyType": "rsa", "PrivateKeyBits": 2048})),
        &allowed(),
    )) {
        CaError::InvalidConfig(m) => assert!(m.contains("EC keys only"), "{m}"),
        e => panic!("rsa: {e:?}"),
    }

    eprintln!("case: generate, state, leaf");
    let ca = Pkcs11Provider::generate(&td, &config, &allowed()).unwrap();
    assert_eq!(ca.name(), "pkcs11");
    let state = ca.root().state.clone();
    assert_eq!(
        state.keys().map(String::as_str).collect::<Vec<_>>(),
        ["KeyId", "KeyLabel", "RootCert"]
    );
    assert!(state["KeyLabel"].starts_with("trellis-ca-"), "{state:?}");
    assert_eq!(state["KeyId"].len(), 32);
    assert_eq!(state["RootCert"], ca.root().root_pem);
    for v in state.values() {
        assert!(!v.contains(PIN) && !v.contains("PRIVATE KEY"), "{v}");
    }
    assert!(!format!("{:?}", ca.root()).contains(PIN));
    let root_info = CertInfo::from_pem(&ca.root().root_pem).unwrap();
    assert_eq!(
        (root_info.key_type.as_str(), root_info.key_bits),
        ("ec", 256)
    );
    let (leaf, _) = sign_web(&ca);
    openssl_verify(dir, &ca.root().root_pem, &[], &leaf).unwrap();

    eprintln!("case: the private key stays in the token");
    {
        let side = side_session();
        let private = objects(&side, &state, ObjectClass::PRIVATE_KEY);
        assert_eq!(private.len(), 1);
        let attrs = side
            .get_attributes(
                private[0],
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sign,
                    AttributeType::Label,
                ],
            )
            .unwrap();
        for a in &attrs {
            match a {
                Attribute::Extractable(v) => assert!(!v, "CKA_EXTRACTABLE"),
                Attribute::Sensitive(v) => assert!(v, "CKA_SENSITIVE"),
                Attribute::NeverExtractable(v) => assert!(v, "CKA_NEVER_EXTRACTABLE"),
                Attribute::AlwaysSensitive(v) => assert!(v, "CKA_ALWAYS_SENSITIVE"),
                Attribute::Token(v) => assert!(v, "CKA_TOKEN"),
                Attribute::Private(v) => assert!(v, "CKA_PRIVATE"),
                Attribute::Sign(v) => assert!(v, "CKA_SIGN"),
                Attribute::Label(l) => assert_eq!(l, state["KeyLabel"].as_bytes()),
                other => panic!("unexpected attribute {other:?}"),
            }
        }
        assert_eq!(attrs.len(), 8, "{attrs:?}");
        // The token refuses to hand out the private value.
        let value = side.get_attributes(private[0], &[AttributeType::Value]);
        assert!(
            !matches!(&value, Ok(v) if !v.is_empty()),
            "CKA_VALUE was readable"
        );
        assert_eq!(objects(&side, &state, ObjectClass::PUBLIC_KEY).len(), 1);
    }

    eprintln!("case: conformance");
    conformance(&ca, &td);

    eprintln!("case: from_state after the provider is dropped");
    let root_pem = ca.root().root_pem.clone();
    drop(ca);
    let again = Pkcs11Provider::from_state(&state, &config, &allowed()).unwrap();
    assert_eq!(again.root().root_pem, root_pem);
    assert_eq!(again.root().state, state);
    let (leaf, _) = sign_web(&again);
    openssl_verify(dir, &root_pem, &[], &leaf).unwrap();
    // Through the factories too.
    let via_factory = provider_from_state(&config, &state, &allowed()).unwrap();
    assert_eq!(via_factory.name(), "pkcs11");
    let (leaf, _) = sign_web(via_factory.as_ref());
    openssl_verify(dir, &root_pem, &[], &leaf).unwrap();

    eprintln!("case: a module off the allow-list is refused, even once loaded in this process");
    for modules in [
        Pkcs11Modules::none(),
        Pkcs11Modules::new(["/usr/lib/softhsm/other.so"]).unwrap(),
    ] {
        let refusals = [
            Pkcs11Provider::from_state(&state, &config, &modules).map(drop),
            Pkcs11Provider::generate(&td, &config, &modules).map(drop),
            provider_from_state(&config, &state, &modules).map(drop),
            generate_provider(&td, &config, &modules).map(drop),
            modules.check(&config),
        ];
        for r in refusals {
            match err_of(r) {
                CaError::InvalidConfig(m) => {
                    assert!(m.contains("is not an allowed PKCS#11 module"), "{m}");
                    assert!(!m.contains(PIN), "{m}");
                }
                e => panic!("off the allow-list: {e:?}"),
            }
        }
    }
    allowed().check(&config).unwrap();

    eprintln!("case: a lost login is recovered");
    side_session().logout().unwrap();
    let (leaf, _) = sign_web(&again);
    openssl_verify(dir, &root_pem, &[], &leaf).unwrap();
    drop((again, via_factory));

    eprintln!("case: regenerating never reuses a key");
    let second = generate_provider(&td, &config, &allowed()).unwrap();
    assert_eq!(second.name(), "pkcs11");
    let second_state = second.root().state.clone();
    assert_ne!(second_state["KeyLabel"], state["KeyLabel"]);
    assert_ne!(second_state["KeyId"], state["KeyId"]);
    assert_ne!(second.root().root_pem, root_pem);
    let first = Pkcs11Provider::from_state(&state, &config, &allowed()).unwrap();
    let (leaf, _) = sign_web(&first);
    openssl_verify(dir, &root_pem, &[], &leaf).unwrap();
    let (leaf, _) = sign_web(second.as_ref());
    assert!(openssl_verify(dir, &root_pem, &[], &leaf).is_err());

    eprintln!("case: cross-signing between builtin and pkcs11 roots, both ways");
    let builtin = BuiltinProvider::generate(&td, &CaConfig::default_consul()).unwrap();
    let rotations: [(&dyn CaProvider, &dyn CaProvider); 2] =
        [(&builtin, second.as_ref()), (second.as_ref(), &builtin)];
    for (old, new) in rotations {
        let cross = old.cross_sign(&new.root().root_pem).unwrap();
        let (new_leaf, _) = sign_web(new);
        openssl_verify(dir, &old.root().root_pem, &[&cross], &new_leaf)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", old.name(), new.name()));
        assert!(openssl_verify(dir, &old.root().root_pem, &[], &new_leaf).is_err());
        openssl_verify(dir, &new.root().root_pem, &[], &new_leaf).unwrap();
    }

    eprintln!("case: P-384");
    let p384 =
        Pkcs11Provider::generate(&td, &hsm_config(json!({"PrivateKeyBits": 384})), &allowed())
            .unwrap();
    let info = CertInfo::from_pem(&p384.root().root_pem).unwrap();
    assert_eq!((info.key_type.as_str(), info.key_bits), ("ec", 384));
    conformance(&p384, &td);
    let p384_state = p384.root().state.clone();
    drop(p384);
    let p384 = Pkcs11Provider::from_state(&p384_state, &config, &allowed()).unwrap();
    let (leaf, _) = sign_web(&p384);
    openssl_verify(dir, &p384.root().root_pem, &[], &leaf).unwrap();

    eprintln!("case: a deleted key is reported, not replaced");
    drop(first);
    {
        let side = side_session();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for h in objects(&side, &state, class) {
                side.destroy_object(h).unwrap();
            }
        }
    }
    match err_of(Pkcs11Provider::from_state(&state, &config, &allowed())) {
        CaError::Crypto(m) => {
            assert!(m.contains(&state["KeyLabel"]), "{m}");
            assert!(m.contains("is not on PKCS#11 token"), "{m}");
        }
        e => panic!("deleted key: {e:?}"),
    }
    // A state whose root belongs to another key is refused.
    let mut mixed = second_state.clone();
    mixed.insert("RootCert".into(), builtin.root().root_pem.clone());
    let err = err_of(Pkcs11Provider::from_state(&mixed, &config, &allowed())).to_string();
    assert!(err.contains("does not match"), "{err}");
    let mut broken = second_state.clone();
    broken.insert("KeyId".into(), "zz".into());
    let err = err_of(Pkcs11Provider::from_state(&broken, &config, &allowed())).to_string();
    assert!(err.contains("KeyId"), "{err}");

    // The keys left on the token still sign.
    let (leaf, _) = sign_web(second.as_ref());
    openssl_verify(dir, &second.root().root_pem, &[], &leaf).unwrap();
}
