//! Any string as a request path: `normalize` answers or refuses, never panics; what it answers
//! keeps every rule of the normal form (starts with `/`, ASCII, no empty, `.` or `..` segment
//! but a trailing slash, no backslash, only escapes that must stay escaped, upper-case), is
//! idempotent (normalizing it again borrows it unchanged), and for paths of plain characters
//! equals RFC 3986 §5.2.4's own buffer algorithm followed by merging slashes.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use trellis_intentions::path::normalize;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn kept(b: u8) -> bool {
    unreserved(b) || b"!$&'()*+,;=:@/".contains(&b)
}

/// The first rule of the normal form `out` breaks, if any.
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
    if out.contains("/./") || out.contains("/../") || out.ends_with("/.") || out.ends_with("/..") {
        return Some("no dot segment");
    }
    if out
        .split('/')
        .any(|s| s.starts_with(".;") || s.starts_with("..;"))
    {
        return Some("no dot segment with parameters");
    }
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let Some(e) = b.get(i + 1..i + 3) else {
                return Some("complete escapes");
            };
            if !e
                .iter()
                .all(|d| d.is_ascii_digit() || (b'A'..=b'F').contains(d))
            {
                return Some("upper-case hex escapes");
            }
            let v = u8::from_str_radix(std::str::from_utf8(e).unwrap_or("00"), 16).unwrap_or(0);
            if unreserved(v) || v == b'/' || v == b'\\' {
                return Some("only escapes that must stay escaped");
            }
            i += 3;
        } else if !kept(b[i]) {
            return Some("only characters allowed raw");
        } else {
            i += 1;
        }
    }
    None
}

/// RFC 3986 §5.2.4 as written: an input buffer consumed into an output buffer.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_string();
    let mut output = String::new();
    let pop = |output: &mut String| {
        let cut = output.rfind('/').unwrap_or(0);
        output.truncate(cut);
    };
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".into();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop(&mut output);
        } else if input == "/.." {
            input = "/".into();
            pop(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |k| k + start);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    output
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = normalize(path) else {
        return;
    };
    if let Some(rule) = broken_rule(&once) {
        panic!("{path:?} -> {once:?} breaks {rule:?}");
    }
    match normalize(&once) {
        Ok(Cow::Borrowed(again)) if again == once.as_ref() => {}
        other => panic!("{path:?} -> {once:?} -> {other:?}"),
    }
    // Plain characters only: nothing to decode, encode or refuse.
    if path.bytes().all(|b| unreserved(b) || b == b'/') {
        let mut want = remove_dot_segments(path);
        while want.contains("//") {
            want = want.replace("//", "/");
        }
        if want.is_empty() {
            want.push('/');
        }
        assert_eq!(once.as_ref(), want, "{path:?}");
    }
});
