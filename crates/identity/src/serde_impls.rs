//! Serde support: every identity type serialises as its string form.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ServiceId, SpiffeId, TrustDomain};

/// Deserialises any `FromStr` type from a string, reporting the parse error.
struct FromStrVisitor<T> {
    expecting: &'static str,
    marker: PhantomData<T>,
}

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

macro_rules! string_serde {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(FromStrVisitor {
                    expecting: $expecting,
                    marker: PhantomData,
                })
            }
        }
    };
}

string_serde!(TrustDomain, "a trust domain such as '<cluster-id>.consul'");
string_serde!(
    SpiffeId,
    "a SPIFFE ID URI such as 'spiffe://<trust-domain>/...'"
);
string_serde!(ServiceId, "a service SPIFFE ID URI");

#[cfg(test)]
mod tests {
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;

    use super::*;

    fn de<'a, T: Deserialize<'a>>(s: &'a str) -> Result<T, Error> {
        let d: StrDeserializer<'a, Error> = s.into_deserializer();
        T::deserialize(d)
    }

    /// Serialises through serde's `Serializer` for `fmt::Formatter`, which takes strings.
    fn ser<T: Serialize>(value: &T) -> String {
        struct Show<'a, T>(&'a T);
        impl<T: Serialize> fmt::Display for Show<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.serialize(f)
            }
        }
        Show(value).to_string()
    }

    #[test]
    fn serialises_as_strings() {
        let s = "spiffe://abc.consul/ap/p1/ns/default/dc/dc1/svc/a%2Fb";
        let id: SpiffeId = s.parse().unwrap();
        assert_eq!(ser(&id), s);
        let SpiffeId::Service(svc) = id else {
            panic!("service")
        };
        assert_eq!(ser(&svc), s);
        assert_eq!(ser(&svc.trust_domain), "abc.consul");
    }

    #[test]
    fn deserialises_from_strings() {
        let s = "spiffe://abc.consul/ns/default/dc/dc1/svc/web";
        let id: SpiffeId = de(s).unwrap();
        assert_eq!(id.to_string(), s);
        let svc: ServiceId = de(s).unwrap();
        assert_eq!(SpiffeId::from(svc), id);
        let td: TrustDomain = de("ABC.consul").unwrap();
        assert_eq!(td.as_str(), "abc.consul");
    }

    #[test]
    fn deserialise_reports_the_parse_error() {
        let err = de::<SpiffeId>("http://abc.consul").unwrap_err();
        assert_eq!(err.to_string(), "SPIFFE ID must have 'spiffe' scheme");
        let err = de::<ServiceId>("spiffe://abc.consul").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SPIFFE ID spiffe://abc.consul is not a service identity"
        );
        let err = de::<TrustDomain>("abc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid trust domain \"abc\": must contain a '.'"
        );
    }
}
