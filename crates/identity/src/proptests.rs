//! Property tests: formatting and parsing round-trip, and parsing never panics.

use proptest::prelude::*;

use crate::{ServiceId, SpiffeId, TrustDomain};

/// Characters for names: mostly plain, plus everything that needs escaping or lower-cases
/// oddly ('İ' grows when lower-cased, 'K' is the Kelvin sign), plus any char at all.
fn name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        1 => prop::char::range('A', 'Z'),
        1 => prop::char::range('0', '9'),
        3 => prop::sample::select(vec![
            '/', '%', ' ', '?', '#', '@', ':', '.', '-', '_', '~', '+', '=', '\0', '\n', '\u{7f}',
            'é', '日', '🦀', 'İ', '\u{212A}', 'ß', '\u{0301}',
        ]),
        2 => any::<char>(),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(name_char(), 1..12).prop_map(String::from_iter)
}

fn partition() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("default".to_owned()),
        name().prop_map(|p| p.to_lowercase()),
    ]
}

fn trust_domain() -> impl Strategy<Value = TrustDomain> {
    prop_oneof![
        "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,8}){1,3}"
            .prop_map(|s| TrustDomain::parse(&s).expect("generated trust domain is valid")),
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
            .prop_map(|s| TrustDomain::for_cluster(&s).expect("a UUID is a valid cluster ID")),
    ]
}

fn spiffe_id() -> impl Strategy<Value = SpiffeId> {
    prop_oneof![
        trust_domain().prop_map(SpiffeId::signing),
        (trust_domain(), partition(), name(), name(), name()).prop_map(
            |(trust_domain, partition, namespace, datacenter, service)| {
                SpiffeId::Service(ServiceId {
                    trust_domain,
                    partition,
                    namespace,
                    datacenter,
                    service,
                })
            }
        ),
        (trust_domain(), partition(), name(), name()).prop_map(
            |(trust_domain, partition, datacenter, node)| SpiffeId::Agent {
                trust_domain,
                partition,
                datacenter,
                node,
            }
        ),
        (trust_domain(), name()).prop_map(|(trust_domain, datacenter)| SpiffeId::Server {
            trust_domain,
            datacenter,
        }),
        (trust_domain(), partition(), name()).prop_map(|(trust_domain, partition, datacenter)| {
            SpiffeId::MeshGateway {
                trust_domain,
                partition,
                datacenter,
            }
        }),
    ]
}

/// Strings assembled from the pieces of SPIFFE IDs, so that many of them parse and the rest
/// fail deep inside the parser rather than at the scheme.
fn uri_ish() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        8 => Just("spiffe://"),
        1 => Just("SPIFFE://"),
        1 => Just("spiffe:"),
        1 => Just("http://"),
        1 => Just(""),
    ];
    let host = prop_oneof![
        8 => Just("abc.consul".to_owned()),
        2 => Just("ABC.Consul".to_owned()),
        1 => Just(String::new()),
        1 => Just("u@abc.consul".to_owned()),
        1 => Just("abc.consul:8443".to_owned()),
        1 => name(),
    ];
    let piece = prop_oneof![
        Just("spiffe://".to_owned()),
        Just("SPIFFE://".to_owned()),
        Just("abc.consul".to_owned()),
        Just("ABC.Consul".to_owned()),
        Just("/".to_owned()),
        Just("/ns/".to_owned()),
        Just("/dc/".to_owned()),
        Just("/svc/".to_owned()),
        Just("/ap/".to_owned()),
        Just("/agent/client/dc/".to_owned()),
        Just("/agent/server/dc/".to_owned()),
        Just("/id/".to_owned()),
        Just("/gateway/mesh/dc/".to_owned()),
        Just("%2F".to_owned()),
        Just("%2f".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        Just("%C3%A9".to_owned()),
        Just("%FF".to_owned()),
        Just("?".to_owned()),
        Just("#".to_owned()),
        Just("@".to_owned()),
        Just(":".to_owned()),
        Just("default".to_owned()),
        name(),
    ];
    prop_oneof![
        (scheme, host, prop::collection::vec(piece, 0..12))
            .prop_map(|(scheme, host, pieces)| format!("{scheme}{host}{}", pieces.concat())),
        // A valid ID with a random slice cut out or text spliced in.
        (
            spiffe_id(),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            "\\PC{0,3}"
        )
            .prop_map(|(id, a, b, insert)| {
                let s = id.to_string();
                let cuts: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
                let (mut from, mut to) = (*a.get(&cuts), *b.get(&cuts));
                if from > to {
                    std::mem::swap(&mut from, &mut to);
                }
                format!("{}{insert}{}", &s[..from], &s[to..])
            }),
    ]
}

/// Whatever `input` is: parsing must not panic, and if it parses, the value is canonical and
/// its formatted form parses back to the same value and formats identically.
fn check_parse(input: &str) -> Result<(), TestCaseError> {
    if let Ok(id) = input.parse::<SpiffeId>() {
        prop_assert_eq!(id.validate(), Ok(()));
        let formatted = id.to_string();
        let again: SpiffeId = formatted
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{formatted:?} does not parse: {e}")))?;
        prop_assert_eq!(&again, &id);
        prop_assert_eq!(again.to_string(), formatted);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_ids_round_trip(id in spiffe_id()) {
        prop_assert_eq!(id.validate(), Ok(()));
        let formatted = id.to_string();
        let parsed: SpiffeId = formatted
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{formatted:?} does not parse: {e}")))?;
        prop_assert_eq!(parsed, id);
    }

    #[test]
    fn arbitrary_strings_never_panic_and_round_trip(s in "(?s).{0,300}") {
        check_parse(&s)?;
    }

    #[test]
    fn uri_like_strings_never_panic_and_round_trip(s in uri_ish()) {
        check_parse(&s)?;
    }

    #[test]
    fn trust_domains_round_trip(s in "(?s).{0,40}|[a-zA-Z0-9.-]{0,40}") {
        if let Ok(td) = TrustDomain::parse(&s) {
            prop_assert_eq!(td.as_str(), s.to_ascii_lowercase());
            prop_assert_eq!(TrustDomain::parse(td.as_str()), Ok(td.clone()));
            prop_assert!(td.as_str().starts_with(td.cluster_id()));
        }
    }
}
