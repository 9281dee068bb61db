//! Request path normalization: the one form of a path that L7 intentions are decided on and
//! that the application is sent, so that no spelling of a path reaches the application under
//! a decision taken for another (CVE-2024-10005 is this class in Consul's Envoy setup).
//!
//! [`normalize`] does what Consul asks of Envoy (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`), in Envoy's order:
//!
//! 1. Percent-escapes: one of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded
//!    (`%61` is `a`, `%2e` is `.`); any other is kept with upper-case hex digits (`%3a` becomes
//!    `%3A`); an escaped slash or backslash (`%2F`, `%5C`, either case) is refused, as is a
//!    raw backslash (Envoy would read it as a slash); a `%` not followed by two hex digits is
//!    refused. A character that may not appear raw in an RFC 3986 path (anything but
//!    unreserved, sub-delims, `:`, `@` and `/`: `"`, `{`, `|`, bytes of non-ASCII UTF-8, ...)
//!    is percent-encoded, so each octet has exactly one spelling in the output.
//! 2. Dot segments are removed (RFC 3986 §5.2.4): `.` goes, `..` takes the segment before it
//!    (an empty one too, as Envoy does), never above the root. A segment whose part before
//!    its first `;` is `.` or `..` (`..;x`, which some servers read as `..`) is refused: it has
//!    no safe reading.
//! 3. Runs of slashes are merged into one.
//!
//! Escaped slashes are refused rather than decoded and redirected (Consul's other choice,
//! `UNESCAPE_AND_REDIRECT`): a refusal needs no round trip and no client cooperation, and a
//! path that means `/` in one server and a literal character in another cannot be decided
//! safely either way. Letter case is kept (Envoy's path matches are case-sensitive).
//!
//! The result is idempotent (a normalized path normalizes to itself, borrowed), contains no
//! empty, `.` or `..` segment except a trailing slash, and is ASCII.

use std::borrow::Cow;

/// Why a path cannot be normalized safely; the request is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path (`*`, an authority, or empty).
    #[error("the request target is not a path")]
    NotAPath,
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// `%2F` or `%5C` (either case).
    #[error("the path has an escaped slash or backslash")]
    EscapedSlash,
    /// A raw `\`.
    #[error("the path has a backslash")]
    Backslash,
    /// A segment `.;…` or `..;…`.
    #[error("the path has a dot segment with parameters")]
    DotSegmentParams,
}

impl PathError {
    /// The body of the 400 answer.
    pub fn body(self) -> &'static str {
        match self {
            PathError::NotAPath => "bad request target\n",
            PathError::BadEscape => "bad request path: malformed percent-escape\n",
            PathError::EscapedSlash => "bad request path: escaped slash or backslash\n",
            PathError::Backslash => "bad request path: backslash\n",
            PathError::DotSegmentParams => "bad request path: dot segment with parameters\n",
        }
    }
}

/// The normalized form of `path` (the path of a request target, without its query), borrowed
/// when `path` is already normal, which is the common case and costs one scan.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAPath);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    rewrite(bytes).map(Cow::Owned)
}

/// Unreserved characters (RFC 3986 §2.3): their escapes mean the same as themselves.
const fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters left as they are in a path: unreserved, sub-delims, `:`, `@` and `/`.
const KEPT: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = unreserved(b as u8)
            || matches!(
                b as u8,
                b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            )
            || matches!(b as u8, b':' | b'@' | b'/');
        b += 1;
    }
    table
};

fn kept(b: u8) -> bool {
    KEPT[usize::from(b)]
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a segment (no `/`) is a dot segment or one with parameters (`.;x`, `..;x`).
fn dotted(segment: &[u8]) -> bool {
    if segment.first() != Some(&b'.') {
        return false;
    }
    let base = segment.split(|&b| b == b';').next().unwrap_or(segment);
    base == b"." || base == b".."
}

/// Whether `p` (starting with `/`) is already normal: only kept characters and upper-case
/// escapes that must stay escaped, no empty segment but a last one, no dotted segment.
fn is_normal(p: &[u8]) -> bool {
    let mut start = 1;
    let mut i = 1;
    while i < p.len() {
        match p[i] {
            b'/' => {
                let segment = &p[start..i];
                if segment.is_empty() || dotted(segment) {
                    return false;
                }
                start = i + 1;
            }
            b'%' => {
                // Upper-case hex digits only: a lower-case escape is rewritten.
                let digit = |k: usize| {
                    p.get(k)
                        .copied()
                        .filter(|b| !b.is_ascii_lowercase())
                        .and_then(hex)
                };
                let (Some(h), Some(l)) = (digit(i + 1), digit(i + 2)) else {
                    return false;
                };
                let v = (h << 4) | l;
                if unreserved(v) || v == b'/' || v == b'\\' {
                    return false;
                }
                i += 3;
                continue;
            }
            b if kept(b) => {}
            _ => return false,
        }
        i += 1;
    }
    !dotted(&p[start..])
}

/// The slow path: escapes, then dot segments, then slashes.
fn rewrite(p: &[u8]) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let escape = |s: &mut String, b: u8| {
        s.push('%');
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    };
    let mut s = String::with_capacity(p.len() + 8);
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    p.get(i + 1).copied().and_then(hex),
                    p.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = (h << 4) | l;
                if v == b'/' || v == b'\\' {
                    return Err(PathError::EscapedSlash);
                }
                if unreserved(v) {
                    s.push(v as char);
                } else {
                    escape(&mut s, v);
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b if kept(b) => s.push(b as char),
            b => escape(&mut s, b),
        }
        i += 1;
    }

    // `s` starts with `/`; its segments are what follows, split on `/`.
    let mut kept_segments: Vec<&str> = Vec::new();
    let mut segments = s[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                kept_segments.pop();
            }
            _ if dotted(segment.as_bytes()) => return Err(PathError::DotSegmentParams),
            _ => {
                kept_segments.push(segment);
                continue;
            }
        }
        // A path ending in a dot segment ends in a slash: `/a/b/..` is `/a/`.
        if last {
            kept_segments.push("");
        }
    }

    let mut out = String::with_capacity(s.len());
    out.push('/');
    for (k, segment) in kept_segments.iter().enumerate() {
        if segment.is_empty() {
            continue;
        }
        out.push_str(segment);
        if k + 1 < kept_segments.len() {
            out.push('/');
        }
    }
    // A trailing empty segment (`/a/`) was written as the slash after the segment before it;
    // merged runs leave at most one.
    if kept_segments.last().is_some_and(|s| s.is_empty()) && !out.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/api/v1/items",
            "/a/",
            "/a%20b/%3A/%C3%A9",
            "/x;y=1/z",
            "/...",
            "/a.b/.c/..d",
            "/!$&'()*+,;=:@-._~",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(b)) if b == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        for (p, want) in [
            ("/api/../admin/secret", "/admin/secret"),
            ("/api/./../admin", "/admin"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/..", "/"),
            ("/../../admin", "/admin"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/./", "/a/"),
            ("/./a", "/a"),
            ("/.", "/"),
        ] {
            assert_eq!(n(p).as_deref(), Ok(want), "{p}");
        }
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_others_upper_cased() {
        for (p, want) in [
            ("/api/%2e%2e/admin/secret", "/admin/secret"),
            ("/api/%2E%2E/admin", "/admin"),
            ("/api/.%2E/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%7e%5F%2d%30", "/~_-0"),
            ("/a%3ab%3fc", "/a%3Ab%3Fc"),
            ("/%25%32%65", "/%252e"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/%00", "/%00"),
        ] {
            assert_eq!(n(p).as_deref(), Ok(want), "{p}");
        }
    }

    #[test]
    fn characters_outside_rfc_3986_are_encoded() {
        for (p, want) in [
            ("/café", "/caf%C3%A9"),
            ("/a\"b", "/a%22b"),
            ("/{x}|^[y]`", "/%7Bx%7D%7C%5E%5By%5D%60"),
            ("/a b", "/a%20b"),
        ] {
            assert_eq!(n(p).as_deref(), Ok(want), "{p}");
        }
    }

    #[test]
    fn slashes_are_merged_after_dot_segments_as_envoy_does() {
        for (p, want) in [
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a//", "/a/"),
            ("///", "/"),
            // The `..` takes the empty segment, as Envoy's normalize_path does before
            // merge_slashes.
            ("/a//../b", "/a/b"),
            ("/admin//.", "/admin/"),
        ] {
            assert_eq!(n(p).as_deref(), Ok(want), "{p}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for (p, e) in [
            ("/api/..%2fadmin/secret", PathError::EscapedSlash),
            ("/api/..%2Fadmin", PathError::EscapedSlash),
            ("/api/..%5cadmin", PathError::EscapedSlash),
            ("/api/%5C", PathError::EscapedSlash),
            ("/api/..\\admin", PathError::Backslash),
            ("\\admin", PathError::NotAPath),
            ("/a%", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/api/..;/admin", PathError::DotSegmentParams),
            ("/api/%2e%2e;x/admin", PathError::DotSegmentParams),
            ("/.;", PathError::DotSegmentParams),
            ("*", PathError::NotAPath),
            ("", PathError::NotAPath),
            ("admin", PathError::NotAPath),
        ] {
            assert_eq!(n(p), Err(e), "{p}");
        }
    }

    /// Checks every rule of the normal form, returning the first broken.
    fn broken_rule(out: &str) -> Option<&'static str> {
        if !out.starts_with('/') {
            return Some("starts with /");
        }
        if !out.is_ascii() {
            return Some("ASCII");
        }
        if out.contains("//") {
            return Some("no //");
        }
        if out.contains("/./")
            || out.contains("/../")
            || out.ends_with("/.")
            || out.ends_with("/..")
        {
            return Some("no dot segment");
        }
        if out.contains('\\') {
            return Some("no backslash");
        }
        let b = out.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b'%' {
                let esc = b.get(i + 1..i + 3);
                let ok = esc.is_some_and(|e| {
                    e.iter()
                        .all(|d| d.is_ascii_digit() || (b'A'..=b'F').contains(d))
                        && {
                            let v =
                                u8::from_str_radix(std::str::from_utf8(e).unwrap(), 16).unwrap();
                            !unreserved(v) && v != b'/' && v != b'\\'
                        }
                });
                if !ok {
                    return Some("escapes upper-case and needed");
                }
            } else if !kept(c) {
                return Some("only kept characters");
            }
        }
        None
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        // Segments built from the pieces that matter, so that dots, slashes and escapes meet.
        let piece = prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%2f".to_string()),
            Just("%5c".to_string()),
            Just("%41".to_string()),
            Just("%3a".to_string()),
            Just("%".to_string()),
            Just(";".to_string()),
            Just("\\".to_string()),
            "[a-z]{1,3}",
            "[ -~]",
            "\\PC",
        ];
        prop::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Normalizing twice is normalizing once, the second time borrowed; every output
        /// keeps every rule of the normal form.
        #[test]
        fn normalization_is_idempotent_and_normal(p in path_strategy()) {
            if let Ok(once) = normalize(&p) {
                prop_assert_eq!(broken_rule(&once), None, "{:?} -> {:?}", p, once);
                let twice = normalize(&once);
                prop_assert!(
                    matches!(&twice, Ok(Cow::Borrowed(t)) if *t == once.as_ref()),
                    "{:?} -> {:?} -> {:?}", p, once, twice
                );
            }
        }

        /// The fast path answers exactly as the slow one.
        #[test]
        fn the_fast_path_agrees_with_the_slow_one(p in path_strategy()) {
            if is_normal(p.as_bytes()) {
                prop_assert_eq!(rewrite(p.as_bytes()), Ok(p.clone()));
            }
        }

        /// A path with no dots, escapes or odd characters changes only by merged slashes.
        #[test]
        fn plain_paths_only_lose_extra_slashes(p in "(/[a-z0-9]{0,4}){1,8}") {
            let mut merged = p.clone();
            while merged.contains("//") {
                merged = merged.replace("//", "/");
            }
            prop_assert_eq!(n(&p), Ok(merged));
        }
    }
}
