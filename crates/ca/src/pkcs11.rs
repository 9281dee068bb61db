//! The `pkcs11` provider: the CA key is made inside an HSM, marked sensitive and
//! non-extractable, and every signature is computed there. The replicated state holds only
//! where to find the key (its label and `CKA_ID`) and the root certificate; the PIN stays in the
//! CA configuration and is never logged or formatted.
//!
//! EC keys only (P-256, P-384). The message is hashed here (SHA-256 or SHA-384) and the token
//! signs the digest with `CKM_ECDSA`, the mechanism every ECDSA-capable token has; the raw
//! `r‖s` it returns is DER-encoded for X.509.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeType, KeyType as P11KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use parking_lot::Mutex;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use trellis_identity::TrustDomain;

use crate::keyed::{self_signed_root, KeyedCa};
use crate::provider::{CaProvider, IssuedLeaf, RootMaterial};
use crate::{CaConfig, CaError, KeyType, Pkcs11Config, ValidatedCsr};

const STATE_LABEL: &str = "KeyLabel";
const STATE_ID: &str = "KeyId";
const STATE_ROOT: &str = "RootCert";

/// The PKCS#11 (HSM) provider.
pub struct Pkcs11Provider {
    ca: KeyedCa<HsmKey>,
}

/// The PKCS#11 modules this process may load, as the operator set them in the agent's own
/// configuration (`connect { pkcs11_modules = [...] }`, `-pkcs11-module PATH`). A CA
/// configuration, whether it comes from the API or from the replicated state, may name only one
/// of these, matched as the exact path string; any other `ModulePath` is refused before it is
/// opened, because loading a module runs its code inside the agent. Empty by default: no module
/// may be loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Modules {
    paths: BTreeSet<String>,
}

/// A module path that passed the allow-list: the only thing [`module`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedModule(String);

impl AllowedModule {
    pub(crate) fn path(&self) -> &str {
        &self.0
    }
}

impl Pkcs11Modules {
    /// No module may be loaded.
    pub fn none() -> Pkcs11Modules {
        Pkcs11Modules::default()
    }

    /// An allow-list of module paths; each must be an absolute path (a bare name would be
    /// looked up in the library search path, a relative one from the working directory).
    pub fn new<I, S>(paths: I) -> Result<Pkcs11Modules, CaError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = BTreeSet::new();
        for p in paths {
            let p: String = p.into();
            if !Path::new(&p).is_absolute() || p.contains('\0') {
                return Err(CaError::InvalidConfig(format!(
                    "PKCS#11 module {p:?}: an allowed module must be an absolute path"
                )));
            }
            out.insert(p);
        }
        Ok(Pkcs11Modules { paths: out })
    }

    /// Whether no module may be loaded.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The allowed paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }

    /// `path` as a module that may be loaded, or why it may not (a 400: the configuration
    /// named a module this server does not allow).
    pub(crate) fn allow(&self, path: &str) -> Result<AllowedModule, CaError> {
        if self.paths.contains(path) {
            return Ok(AllowedModule(path.to_string()));
        }
        let why = if self.paths.is_empty() {
            "this server allows no PKCS#11 modules"
        } else {
            "it is not on this server's list of allowed PKCS#11 modules"
        };
        Err(CaError::InvalidConfig(format!(
            "ModulePath {path:?} is not an allowed PKCS#11 module: {why}; an operator allows a \
             module in the server agent's configuration (connect {{ pkcs11_modules = [...] }} \
             or -pkcs11-module PATH), never through the API"
        )))
    }

    /// Refuses a CA configuration that names a module this server does not allow. Nothing is
    /// loaded.
    pub fn check(&self, config: &CaConfig) -> Result<(), CaError> {
        match &config.pkcs11 {
            Some(p) => self.allow(&p.module_path).map(drop),
            None => Ok(()),
        }
    }
}

/// The process's PKCS#11 modules, by path. `C_Initialize` may run once per module per process
/// (a second call fails with `CKR_CRYPTOKI_ALREADY_INITIALIZED`), and every session of a module
/// shares its login state, so each module is loaded and initialised once and kept.
fn modules() -> &'static Mutex<HashMap<String, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<String, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The initialised module at an allowed path, loading it on first use. The only place a
/// module is opened: the allow-list was checked to make `allowed`.
pub(crate) fn module(allowed: &AllowedModule) -> Result<Pkcs11, CaError> {
    let path = allowed.path();
    let mut modules = modules().lock();
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let m = Pkcs11::new(path).map_err(|e| {
        CaError::InvalidConfig(format!("cannot load the PKCS#11 module {path:?}: {e}"))
    })?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in the process (another path to the same library) got there first.
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(CaError::Crypto(format!(
                "cannot initialise the PKCS#11 module {path:?}: {e}"
            )))
        }
    }
    modules.insert(path.to_string(), m.clone());
    Ok(m)
}

fn p11(what: &str) -> impl Fn(P11Error) -> CaError + '_ {
    move |e| CaError::Crypto(format!("pkcs11: {what}: {e}"))
}

/// The EC curves the provider makes keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

/// DER `namedCurve` OIDs (`CKA_EC_PARAMS`).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

impl Curve {
    fn for_config(config: &CaConfig) -> Result<Curve, CaError> {
        match (config.private_key_type, config.private_key_bits) {
            (KeyType::Ec, 256) => Ok(Curve::P256),
            (KeyType::Ec, 384) => Ok(Curve::P384),
            (KeyType::Ec, bits) => Err(CaError::InvalidConfig(format!(
                "the pkcs11 provider supports EC keys of 256 or 384 bits, got {bits}"
            ))),
            (KeyType::Rsa, _) => Err(CaError::InvalidConfig(
                "the pkcs11 provider supports EC keys only (PrivateKeyType \"ec\", \
                 PrivateKeyBits 256 or 384); PrivateKeyType \"rsa\" is not supported"
                    .into(),
            )),
        }
    }

    fn from_params(params: &[u8]) -> Option<Curve> {
        match params {
            P256_PARAMS => Some(Curve::P256),
            P384_PARAMS => Some(Curve::P384),
            _ => None,
        }
    }

    fn params(self) -> &'static [u8] {
        match self {
            Curve::P256 => P256_PARAMS,
            Curve::P384 => P384_PARAMS,
        }
    }

    /// Bytes in one coordinate (and in each of `r`, `s`).
    fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Curve::P256 => &digest::SHA256,
            Curve::P384 => &digest::SHA384,
        }
    }
}

/// Where a key lives: enough to open a session and find it again. The PIN is a
/// `SecretString` (zeroised on drop, redacted in `Debug`).
struct KeyRef {
    module: AllowedModule,
    token_label: String,
    pin: AuthPin,
    id: Vec<u8>,
    label: String,
}

impl KeyRef {
    /// Where the key lives, once the configured module has passed the allow-list.
    fn new(
        config: &Pkcs11Config,
        modules: &Pkcs11Modules,
        id: Vec<u8>,
        label: String,
    ) -> Result<KeyRef, CaError> {
        Ok(KeyRef {
            module: modules.allow(&config.module_path)?,
            token_label: config.token_label.clone(),
            pin: AuthPin::new(config.pin.as_str().into()),
            id,
            label,
        })
    }

    /// Opens a session on the token and logs the user in.
    fn open(&self) -> Result<Session, CaError> {
        let m = module(&self.module)?;
        let mut found = Vec::new();
        for slot in m.get_slots_with_token().map_err(p11("listing slots"))? {
            let info = m.get_token_info(slot).map_err(p11("reading token info"))?;
            if info.token_initialized() && info.label() == self.token_label {
                found.push(slot);
            }
        }
        let slot = match found.as_slice() {
            [slot] => *slot,
            [] => {
                return Err(CaError::InvalidConfig(format!(
                    "no initialised PKCS#11 token labelled {:?} in {:?}",
                    self.token_label,
                    self.module.path()
                )))
            }
            _ => {
                return Err(CaError::InvalidConfig(format!(
                    "more than one PKCS#11 token is labelled {:?} in {:?}",
                    self.token_label,
                    self.module.path()
                )))
            }
        };
        let session = m.open_rw_session(slot).map_err(p11("opening a session"))?;
        match session.login(UserType::User, Some(&self.pin)) {
            // Login state is per application and token: another session may hold it already.
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(
                e @ P11Error::Pkcs11(
                    RvError::PinIncorrect
                    | RvError::PinInvalid
                    | RvError::PinLenRange
                    | RvError::PinLocked
                    | RvError::UserPinNotInitialized,
                    _,
                ),
            ) => Err(CaError::InvalidConfig(format!(
                "the PKCS#11 token {:?} refused the configured Pin: {e}",
                self.token_label
            ))),
            Err(e) => Err(p11("logging in")(e)),
        }
    }

    /// The one object of `class` with this key's ID and label.
    fn find(&self, session: &Session, class: ObjectClass) -> Result<ObjectHandle, CaError> {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Id(self.id.clone()),
                Attribute::Label(self.label.as_bytes().to_vec()),
            ])
            .map_err(p11("finding the CA key"))?;
        let what = if class == ObjectClass::PRIVATE_KEY {
            "private"
        } else {
            "public"
        };
        match found.as_slice() {
            [handle] => Ok(*handle),
            [] => Err(CaError::Crypto(format!(
                "the CA {what} key {:?} (CKA_ID {}) is not on PKCS#11 token {:?}: \
                 it was deleted, or the token was re-initialised or replaced",
                self.label,
                hex(&self.id),
                self.token_label
            ))),
            _ => Err(CaError::Crypto(format!(
                "more than one CA {what} key {:?} (CKA_ID {}) on PKCS#11 token {:?}",
                self.label,
                hex(&self.id),
                self.token_label
            ))),
        }
    }
}

/// A session and the private key handle it signs with.
struct Signer {
    session: Session,
    private: ObjectHandle,
}

/// A CA key held by a PKCS#11 token. `Session` is `!Sync`, so signing goes through a mutex:
/// one signature at a time per provider.
pub(crate) struct HsmKey {
    key: KeyRef,
    curve: Curve,
    /// Uncompressed SEC1 point (`04‖X‖Y`).
    point: Vec<u8>,
    signer: Mutex<Signer>,
}

/// Errors after which a fresh session (and login) may succeed: the session or the login was
/// lost (token reset, another session logged the application out).
fn session_lost(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::UserNotLoggedIn
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

impl HsmKey {
    /// Reads the public half and pairs it with the session and private handle.
    fn new(
        key: KeyRef,
        session: Session,
        private: ObjectHandle,
        public: ObjectHandle,
    ) -> Result<HsmKey, CaError> {
        let attrs = session
            .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(p11("reading the CA public key"))?;
        let (mut params, mut point) = (None, None);
        for a in attrs {
            match a {
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let curve = params
            .as_deref()
            .and_then(Curve::from_params)
            .ok_or_else(|| {
                CaError::Crypto(format!(
                    "the CA key {:?} is not an EC P-256 or P-384 key",
                    key.label
                ))
            })?;
        let point = point
            .as_deref()
            .and_then(|p| unwrap_ec_point(p, curve))
            .ok_or_else(|| {
                CaError::Crypto(format!(
                    "the CA key {:?} has no readable EC point",
                    key.label
                ))
            })?;
        Ok(HsmKey {
            key,
            curve,
            point,
            signer: Mutex::new(Signer { session, private }),
        })
    }

    fn reconnect(&self) -> Result<Signer, CaError> {
        let session = self.key.open()?;
        let private = self.key.find(&session, ObjectClass::PRIVATE_KEY)?;
        Ok(Signer { session, private })
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, CaError> {
        let mut signer = self.signer.lock();
        let raw = match signer
            .session
            .sign(&Mechanism::Ecdsa, signer.private, digest)
        {
            Ok(raw) => raw,
            Err(e) if session_lost(&e) => {
                tracing::warn!(key = %self.key.label, error = %e, "HSM session lost; reopening");
                *signer = self.reconnect()?;
                signer
                    .session
                    .sign(&Mechanism::Ecdsa, signer.private, digest)
                    .map_err(p11("signing"))?
            }
            Err(e) => return Err(p11("signing")(e)),
        };
        if raw.len() != 2 * self.curve.field_len() {
            return Err(CaError::Crypto(format!(
                "pkcs11: the token returned a {}-byte ECDSA signature, expected {}",
                raw.len(),
                2 * self.curve.field_len()
            )));
        }
        Ok(der_ecdsa_signature(&raw))
    }
}

impl PublicKeyData for HsmKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.curve.algorithm()
    }
}

impl SigningKey for HsmKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = digest::digest(self.curve.digest(), msg);
        self.sign_digest(digest.as_ref()).map_err(|e| {
            // rcgen's error carries no detail: log it here.
            tracing::error!(key = %self.key.label, error = %e, "HSM signing failed");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point; some modules return the bare
/// point. Either way, the uncompressed point for `curve`.
fn unwrap_ec_point(raw: &[u8], curve: Curve) -> Option<Vec<u8>> {
    let len = 1 + 2 * curve.field_len(); // < 128: short-form DER length
    match raw {
        [0x04, rest @ ..] if raw.len() == len => Some([&[0x04], rest].concat()),
        [0x04, l, point @ ..]
            if usize::from(*l) == len && point.len() == len && point[0] == 0x04 =>
        {
            Some(point.to_vec())
        }
        _ => None,
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A positive DER INTEGER from big-endian magnitude bytes.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let trimmed = &bytes[start..];
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tlv(0x02, &content)
}

/// `CKM_ECDSA`'s raw `r‖s` as X.509's `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
fn der_ecdsa_signature(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    der_tlv(0x30, &[der_uint(r), der_uint(s)].concat())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn pkcs11_config(config: &CaConfig) -> Result<&Pkcs11Config, CaError> {
    config.pkcs11.as_ref().ok_or_else(|| {
        CaError::InvalidConfig(
            "the pkcs11 provider needs ModulePath, TokenLabel, Pin and KeyLabel".into(),
        )
    })
}

impl Pkcs11Provider {
    /// Makes a new key pair on the configured token (sensitive, non-extractable, labelled
    /// `KeyLabel` plus a unique suffix) and a self-signed root for `trust_domain` with it.
    /// The configured module must be on `modules`, or it is not loaded.
    pub fn generate(
        trust_domain: &TrustDomain,
        config: &CaConfig,
        modules: &Pkcs11Modules,
    ) -> Result<Pkcs11Provider, CaError> {
        let curve = Curve::for_config(config)?;
        let p11_config = pkcs11_config(config)?;
        let mut key = KeyRef::new(p11_config, modules, Vec::new(), String::new())?;
        let session = key.open()?;
        // A fresh ID and label, so a re-generate or a rotation between two pkcs11
        // configurations never finds (or shadows) an older key.
        let taken = |a: Attribute| {
            session
                .find_objects(&[a])
                .map(|found| !found.is_empty())
                .map_err(p11("checking the key label"))
        };
        for _ in 0..8 {
            let id: [u8; 16] = rand::random();
            let label = format!("{}-{}", p11_config.key_label, hex(&id[..6]));
            if !taken(Attribute::Id(id.to_vec()))?
                && !taken(Attribute::Label(label.as_bytes().to_vec()))?
            {
                (key.id, key.label) = (id.to_vec(), label);
                break;
            }
        }
        if key.id.is_empty() {
            return Err(CaError::Crypto(format!(
                "pkcs11: found no free key label for {:?} on token {:?}",
                p11_config.key_label, p11_config.token_label
            )));
        }
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::KeyType(P11KeyType::EC),
                Attribute::Id(key.id.clone()),
                Attribute::Label(key.label.as_bytes().to_vec()),
            ]
        };
        let mut public_template = common(false);
        public_template.extend([
            Attribute::EcParams(curve.params().to_vec()),
            Attribute::Verify(true),
        ]);
        let mut private_template = common(true);
        private_template.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
        ]);
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(p11("generating the CA key pair"))?;
        tracing::info!(
            token = %p11_config.token_label,
            key = %key.label,
            "generated the CA key pair in the HSM"
        );
        let cleanup = KeyRef {
            module: key.module.clone(),
            token_label: key.token_label.clone(),
            pin: AuthPin::new(p11_config.pin.as_str().into()),
            id: key.id.clone(),
            label: key.label.clone(),
        };
        let made = HsmKey::new(key, session, private, public).and_then(|key| {
            let root_pem = self_signed_root(trust_domain, &key, config.root_cert_ttl)?;
            Pkcs11Provider::load(key, &root_pem)
        });
        if let Err(e) = &made {
            // Leave no orphan key behind (best effort: the token may be what failed).
            let removed = cleanup.open().and_then(|session| {
                for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                    let handle = cleanup.find(&session, class)?;
                    session
                        .destroy_object(handle)
                        .map_err(p11("removing the key"))?;
                }
                Ok(())
            });
            tracing::warn!(
                key = %cleanup.label,
                error = %e,
                removed = removed.is_ok(),
                "could not make a root with the new HSM key"
            );
        }
        made
    }

    /// Rebuilds the provider from its replicated state: reopens the configured module and
    /// token and finds the key pair by the stored label and `CKA_ID`. The configured module
    /// must be on `modules` (the replicated state may come from a server that allows others),
    /// or it is not loaded.
    pub fn from_state(
        state: &BTreeMap<String, String>,
        config: &CaConfig,
        modules: &Pkcs11Modules,
    ) -> Result<Pkcs11Provider, CaError> {
        let get = |k: &str| {
            state
                .get(k)
                .ok_or_else(|| CaError::Crypto(format!("pkcs11 CA state has no {k}")))
        };
        let label = get(STATE_LABEL)?;
        let id = unhex(get(STATE_ID)?)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| CaError::Crypto("pkcs11 CA state has an invalid KeyId".into()))?;
        let root = get(STATE_ROOT)?;
        let key = KeyRef::new(pkcs11_config(config)?, modules, id, label.clone())?;
        let session = key.open()?;
        let private = key.find(&session, ObjectClass::PRIVATE_KEY)?;
        let public = key.find(&session, ObjectClass::PUBLIC_KEY)?;
        Pkcs11Provider::load(HsmKey::new(key, session, private, public)?, root)
    }

    fn load(key: HsmKey, root_pem: &str) -> Result<Pkcs11Provider, CaError> {
        let state = BTreeMap::from([
            (STATE_LABEL.to_string(), key.key.label.clone()),
            (STATE_ID.to_string(), hex(&key.key.id)),
        ]);
        let mut ca = KeyedCa::load(key, root_pem, state)?;
        let root = ca.material.root_pem.clone();
        ca.material.state.insert(STATE_ROOT.to_string(), root);
        Ok(Pkcs11Provider { ca })
    }
}

impl CaProvider for Pkcs11Provider {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn root(&self) -> &RootMaterial {
        &self.ca.material
    }

    fn sign_leaf(&self, csr: &ValidatedCsr, ttl: Duration) -> Result<IssuedLeaf, CaError> {
        self.ca.sign_leaf(csr, ttl)
    }

    fn sign_intermediate(&self, csr_pem: &str, ttl: Duration) -> Result<String, CaError> {
        self.ca.sign_intermediate(csr_pem, ttl)
    }

    fn cross_sign(&self, other_root_pem: &str) -> Result<String, CaError> {
        self.ca.cross_sign(other_root_pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED_SIGNING,
    };

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_uint(&[0, 0, 0x12]), [0x02, 0x01, 0x12]);
        assert_eq!(der_uint(&[0, 0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_uint(&[0xff, 0x01]), [0x02, 0x03, 0x00, 0xff, 0x01]);
        assert_eq!(der_uint(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(der_tlv(0x04, &[7; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(
            der_ecdsa_signature(&[0, 1, 0x80, 0]),
            [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x03, 0x00, 0x80, 0x00]
        );
    }

    /// Fixed `r‖s` signatures from aws-lc, re-encoded here, verify as ASN.1 signatures: covers
    /// leading zero bytes and high bits over many random signatures.
    #[test]
    fn raw_signatures_re_encode_to_verifiable_der() {
        let rng = SystemRandom::new();
        for (fixed, asn1, len) in [
            (
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &ECDSA_P256_SHA256_ASN1,
                64,
            ),
            (
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &ECDSA_P384_SHA384_ASN1,
                96,
            ),
        ] {
            let key = EcdsaKeyPair::generate(fixed).unwrap();
            let public = UnparsedPublicKey::new(asn1, key.public_key().as_ref().to_vec());
            for i in 0u32..300 {
                let msg = i.to_be_bytes();
                let raw = key.sign(&rng, &msg).unwrap();
                assert_eq!(raw.as_ref().len(), len);
                public
                    .verify(&msg, &der_ecdsa_signature(raw.as_ref()))
                    .unwrap_or_else(|_| panic!("signature {i} of {len} bytes"));
            }
        }
    }

    #[test]
    fn ec_points_are_unwrapped_from_their_octet_string() {
        let point: Vec<u8> = [&[0x04][..], &[0xab; 64]].concat();
        let wrapped = der_tlv(0x04, &point);
        assert_eq!(unwrap_ec_point(&wrapped, Curve::P256), Some(point.clone()));
        assert_eq!(unwrap_ec_point(&point, Curve::P256), Some(point.clone()));
        assert_eq!(unwrap_ec_point(&wrapped, Curve::P384), None);
        assert_eq!(unwrap_ec_point(&point[..40], Curve::P256), None);
    }

    #[test]
    fn key_ids_round_trip_through_hex() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00ab10"), Some(vec![0x00, 0xab, 0x10]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("é0"), None);
    }

    #[test]
    fn rsa_and_unsupported_sizes_are_refused_before_touching_a_module() {
        let parse = |v: serde_json::Value| {
            let mut m = serde_json::json!({
                "ModulePath": "/nonexistent/module.so", "TokenLabel": "t", "KeyLabel": "k", "Pin": "1234"
            });
            m.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            CaConfig::parse("pkcs11", m.as_object().unwrap(), false).unwrap()
        };
        let td = TrustDomain::for_cluster("11111111-2222-3333-4444-555555555555").unwrap();
        let allowed = Pkcs11Modules::new(["/nonexistent/module.so"]).unwrap();
        let rsa = parse(serde_json::json!({"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}));
        match Pkcs11Provider::generate(&td, &rsa, &allowed) {
            Err(CaError::InvalidConfig(m)) => assert!(m.contains("EC keys only"), "{m}"),
            other => panic!("rsa: {:?}", other.err()),
        }
        // A missing module is named; the PIN never appears.
        match Pkcs11Provider::generate(&td, &parse(serde_json::json!({})), &allowed) {
            Err(CaError::InvalidConfig(m)) => {
                assert!(m.contains("/nonexistent/module.so"), "{m}");
                assert!(!m.contains("1234"), "{m}");
            }
            other => panic!("missing module: {:?}", other.err()),
        }
    }

    #[test]
    fn only_absolute_paths_can_be_allowed() {
        for bad in ["libsofthsm2.so", "./lib.so", "lib/x.so", ""] {
            let err = Pkcs11Modules::new([bad]).unwrap_err().to_string();
            assert!(err.contains("absolute path"), "{bad:?}: {err}");
        }
        let m = Pkcs11Modules::new(["/b.so", "/a.so", "/a.so"]).unwrap();
        assert_eq!(m.paths().collect::<Vec<_>>(), ["/a.so", "/b.so"]);
        assert!(Pkcs11Modules::none().is_empty());
    }

    /// Exact string match: no prefix, no normalisation, no case folding.
    #[test]
    fn the_allow_list_matches_the_exact_path() {
        let m = Pkcs11Modules::new(["/usr/lib/softhsm/libsofthsm2.so"]).unwrap();
        assert!(m.allow("/usr/lib/softhsm/libsofthsm2.so").is_ok());
        for other in [
            "/usr/lib/softhsm/../softhsm/libsofthsm2.so",
            "/usr/lib/softhsm//libsofthsm2.so",
            "/usr/lib/softhsm/libsofthsm2.so ",
            "/usr/lib/softhsm/LIBSOFTHSM2.so",
            "/usr/lib/softhsm",
            "/tmp/evil.so",
        ] {
            match m.allow(other) {
                Err(CaError::InvalidConfig(msg)) => {
                    assert!(msg.contains("is not an allowed PKCS#11 module"), "{msg}");
                    assert!(msg.contains(&format!("{other:?}")), "{msg}");
                }
                r => panic!("{other:?}: {r:?}"),
            }
        }
        let none = Pkcs11Modules::none()
            .allow("/usr/lib/softhsm/libsofthsm2.so")
            .unwrap_err()
            .to_string();
        assert!(none.contains("allows no PKCS#11 modules"), "{none}");
    }
}
