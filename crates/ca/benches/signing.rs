//! Leaf signing rate on one core, against the raw sign+verify rate of the same crypto library.
//!
//! End to end per leaf: CSR PEM parse, Consul's validation (including the CSR's own signature
//! check), signing by the CA key, PEM encoding. The baseline per operation: one signature by a
//! key of the CA's type plus one ECDSA P-256 verification (the CSR's), with aws-lc-rs directly.
//! Both run alternately, three rounds each, on the calling thread; the ratio is the figure.
//!
//! `cargo bench -p trellis-ca --bench signing`

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use trellis_ca::{leaf_key_and_csr, validate_csr, BuiltinProvider, CaConfig, CaProvider};
use trellis_identity::TrustDomain;

const ROUND: Duration = Duration::from_secs(2);

fn rate(mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let td = TrustDomain::for_cluster("11111111-2222-3333-4444-555555555555").unwrap();
    let uri = format!("spiffe://{}/ns/default/dc/dc1/svc/web", td.as_str());
    let csr = leaf_key_and_csr(&uri).unwrap().csr_pem;
    let rng = SystemRandom::new();
    let leaf_key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let msg = vec![7u8; 300];
    let csr_sig = leaf_key.sign(&rng, &msg).unwrap();
    let leaf_pub = UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        leaf_key.public_key().as_ref().to_vec(),
    );

    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "CA key", "leafs/s", "raw ops/s", "ratio"
    );
    for (name, cfg) in [
        ("ec-256", serde_json::json!({})),
        (
            "rsa-2048",
            serde_json::json!({"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}),
        ),
    ] {
        let config = CaConfig::parse("consul", cfg.as_object().unwrap(), false).unwrap();
        let ca = BuiltinProvider::generate(&td, &config).unwrap();
        let ec_ca = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let rsa_ca = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let raw_op = || {
            if name.starts_with("ec") {
                std::hint::black_box(ec_ca.sign(&rng, &msg).unwrap());
            } else {
                let mut sig = vec![0u8; rsa_ca.public_modulus_len()];
                rsa_ca
                    .sign(&signature::RSA_PKCS1_SHA256, &rng, &msg, &mut sig)
                    .unwrap();
                std::hint::black_box(sig);
            }
            leaf_pub.verify(&msg, csr_sig.as_ref()).unwrap();
        };
        let leaf_op = || {
            let v = validate_csr(&csr, &td, "dc1").unwrap();
            std::hint::black_box(ca.sign_leaf(&v, Duration::from_secs(72 * 3600)).unwrap());
        };
        let (mut leafs, mut raws) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            leafs.push(rate(leaf_op));
            raws.push(rate(raw_op));
        }
        let (l, r) = (median(leafs), median(raws));
        println!("{name:<10} {l:>14.0} {r:>14.0} {:>7.2}x", l / r);
    }
}
