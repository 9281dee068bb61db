//! Percent-encoding of SPIFFE ID path segments (RFC 3986 `pchar`).

use std::fmt;

use crate::{IdError, Segment};

/// Whether `b` may appear unescaped in a path segment: unreserved, sub-delims, ':' and '@'.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Writes `segment` with every byte outside `pchar` escaped as `%XX` (upper-case hex).
pub(crate) fn write_segment(f: &mut impl fmt::Write, segment: &str) -> fmt::Result {
    let mut rest = segment;
    while !rest.is_empty() {
        let plain = rest.bytes().take_while(|&b| is_pchar(b)).count();
        // `plain` counts ASCII bytes only, so it is always a char boundary.
        f.write_str(&rest[..plain])?;
        rest = &rest[plain..];
        let Some(c) = rest.chars().next() else { break };
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            write!(f, "%{b:02X}")?;
        }
        rest = &rest[c.len_utf8()..];
    }
    Ok(())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one raw path segment: rejects an empty segment, a malformed `%` escape, or escapes
/// that decode to invalid UTF-8. Other characters are taken as they are.
pub(crate) fn unescape_segment(raw: &str, segment: Segment) -> Result<String, IdError> {
    if raw.is_empty() {
        return Err(IdError::EmptySegment(segment));
    }
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    return Err(IdError::InvalidEscape {
                        segment,
                        escape: raw[i..].chars().take(3).collect(),
                    })
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| IdError::InvalidUtf8(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_segment(&mut out, s).unwrap();
        out
    }

    #[test]
    fn escapes_only_what_is_not_a_pchar() {
        assert_eq!(escaped("web-1.api_v2~x"), "web-1.api_v2~x");
        assert_eq!(escaped("a:b@c!$&'()*+,;="), "a:b@c!$&'()*+,;=");
        assert_eq!(escaped("a/b"), "a%2Fb");
        assert_eq!(escaped("100%"), "100%25");
        assert_eq!(escaped("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!(escaped("é"), "%C3%A9");
        assert_eq!(escaped("\0"), "%00");
    }

    #[test]
    fn unescapes_both_hex_cases() {
        assert_eq!(
            unescape_segment("a%2fb%2Fc", Segment::Service).unwrap(),
            "a/b/c"
        );
        assert_eq!(unescape_segment("%C3%a9", Segment::Service).unwrap(), "é");
        assert_eq!(unescape_segment("plain", Segment::Node).unwrap(), "plain");
    }

    #[test]
    fn rejects_bad_escapes() {
        for (raw, bad) in [
            ("a%zz", "%zz"),
            ("a%2", "%2"),
            ("%", "%"),
            ("x%g1y", "%g1"),
            ("%éa", "%éa"),
        ] {
            assert_eq!(
                unescape_segment(raw, Segment::Datacenter),
                Err(IdError::InvalidEscape {
                    segment: Segment::Datacenter,
                    escape: bad.to_owned()
                }),
                "{raw}"
            );
        }
        let err = unescape_segment("a%zz", Segment::Service).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid service in SPIFFE ID: invalid URL escape \"%zz\""
        );
    }

    #[test]
    fn rejects_escapes_that_are_not_utf8() {
        let err = unescape_segment("%FF", Segment::Namespace).unwrap_err();
        assert_eq!(err, IdError::InvalidUtf8(Segment::Namespace));
        assert_eq!(
            err.to_string(),
            "invalid namespace in SPIFFE ID: escaped bytes are not valid UTF-8"
        );
    }

    #[test]
    fn rejects_empty_segment() {
        let err = unescape_segment("", Segment::Node).unwrap_err();
        assert_eq!(err.to_string(), "SPIFFE ID has an empty node segment");
    }
}
