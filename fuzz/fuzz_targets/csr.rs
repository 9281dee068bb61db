//! Any input as a leaf CSR, both as PEM text and as DER wrapped in PEM: validation answers or
//! refuses, never panics, and nothing it accepts breaks Consul's rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_identity::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::for_cluster("11111111-2222-3333-4444-555555555555").unwrap();
    let mut inputs = vec![pem::encode(&pem::Pem::new(
        "CERTIFICATE REQUEST",
        data.to_vec(),
    ))];
    if let Ok(text) = std::str::from_utf8(data) {
        inputs.push(text.to_string());
    }
    for input in inputs {
        if let Ok(csr) = trellis_ca::validate_csr(&input, &td, "dc1") {
            match &csr.id {
                SpiffeId::Service(s) => assert_eq!(s.datacenter, "dc1"),
                SpiffeId::MeshGateway { datacenter, .. } => assert_eq!(datacenter, "dc1"),
                other => panic!("accepted a non-service ID {other}"),
            }
        }
    }
});
