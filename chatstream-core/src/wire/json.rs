//! JSON written byte for byte like the systems chatstream replaces.
//!
//! | style | separators | escaping | floats | used by |
//! |---|---|---|---|---|
//! | [`PythonFormatter`] (`json.dumps` defaults) | `", "` and `": "` | `ensure_ascii`: everything outside printable ASCII as lowercase `\uXXXX` (astral characters as surrogate pairs, DEL too) | Python `repr` (`1e+16`, `1e-05`) | seeds 000, 001, 004 |
//! | [`GoFormatter`] (`encoding/json.Marshal`, Go ≥ 1.22) | compact | `<`, `>`, `&`, U+2028, U+2029 as `\u003c` …; `\b \f \n \r \t` short; other controls `\u00XX` | serde_json's shortest | seed 003 |
//! | `CompactFormatter` ([`to_compact_json`]) | compact | like `JSON.stringify` | serde_json's shortest | OpenAI, AI SDK |
//! | [`SpacedFormatter`] | `", "` and `": "` | like `JSON.stringify` (controls only) | serde_json's shortest | seed 002 (the document shows spaced JSON) |
//!
//! Key order is the serialization order: build bodies from structs whose fields are declared
//! in the order the original emitted them (sorted, for Go maps). Non-finite floats become
//! `null` (serde_json decides that before a formatter sees them).

use std::io::{self, Write};

use bytes::BytesMut;
use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_u_escape<W: ?Sized + Write>(w: &mut W, unit: u16) -> io::Result<()> {
    w.write_all(&u_escape(unit))
}

/// `\uXXXX`, lowercase hex.
fn u_escape(unit: u16) -> [u8; 6] {
    [
        b'\\',
        b'u',
        HEX[usize::from(unit >> 12)],
        HEX[usize::from((unit >> 8) & 0xf)],
        HEX[usize::from((unit >> 4) & 0xf)],
        HEX[usize::from(unit & 0xf)],
    ]
}

fn write_spaced_separator<W: ?Sized + Write>(w: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

/// Python `json.dumps` with default arguments: `", "`/`": "` separators, `ensure_ascii=True`,
/// floats as Python's `repr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        write_spaced_separator(w, first)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        write_spaced_separator(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, s: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            w.write_all(&s.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write_u_escape(w, *unit)?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&s.as_bytes()[start..])
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(python_float_repr(f64::from(value)).as_bytes())
    }
}

/// Go `encoding/json.Marshal`: compact, HTML-safe escaping of `<`, `>`, `&`, and U+2028/U+2029
/// escaped, as Go 1.22 and later write them.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, s: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if !matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') {
                continue;
            }
            w.write_all(&s.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write_u_escape(w, *unit)?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&s.as_bytes()[start..])
    }
}

/// `", "`/`": "` separators with `JSON.stringify`'s escaping (non-ASCII written as is).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpacedFormatter;

impl Formatter for SpacedFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        write_spaced_separator(w, first)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        write_spaced_separator(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

// All three formatters keep serde_json's control escapes (`write_char_escape`): `\"`, `\\`,
// `\b`, `\f`, `\n`, `\r`, `\t` and lowercase `\u00XX`: what Python, Go and JavaScript write.

fn to_string_with<T: Serialize + ?Sized, F: Formatter>(value: &T, formatter: F) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, formatter);
    if value.serialize(&mut ser).is_err() {
        // Only a value that cannot be JSON (a map with non-string keys, a failing custom
        // `Serialize`) gets here; chatstream's own types never do.
        return "null".to_owned();
    }
    // The formatters write only ASCII or whole `str` fragments, so this is always UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Serializes like Python's `json.dumps(value)`. A value that cannot be JSON (a map with
/// non-string keys) gives `null`.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> String {
    to_string_with(value, PythonFormatter)
}

/// Serializes like Go's `json.Marshal(value)`. A value that cannot be JSON gives `null`.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> String {
    to_string_with(value, GoFormatter)
}

/// Serializes compactly, non-ASCII as is (`JSON.stringify`, OpenAI). A value that cannot be
/// JSON gives `null`.
pub fn to_compact_json<T: Serialize + ?Sized>(value: &T) -> String {
    to_string_with(value, serde_json::ser::CompactFormatter)
}

/// Serializes compactly but with `", "`/`": "` separators and no ASCII escaping. A value that
/// cannot be JSON gives `null`.
pub fn to_spaced_json<T: Serialize + ?Sized>(value: &T) -> String {
    to_string_with(value, SpacedFormatter)
}

/// Appends `s` as a JSON string, quotes included, byte for byte as [`to_python_json`]
/// writes it, escaping in place (the SSE fast path of seed 001 writes every token so).
pub(crate) fn push_python_str(out: &mut BytesMut, s: &str) {
    push_escaped(out, s, |b| {
        (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\'
    });
}

/// Appends `s` as a JSON string, quotes included, byte for byte as [`to_compact_json`]
/// writes it (serde_json's escaping: `"`, `\` and controls only).
pub(crate) fn push_compact_str(out: &mut BytesMut, s: &str) {
    push_escaped(out, s, |b| b >= b' ' && b != b'"' && b != b'\\');
}

/// Writes `"s"`, copying runs of bytes that `plain` passes and escaping the rest: `"`, `\`
/// and controls as serde_json does (`\n` …, else `\u00XX`), anything else (DEL, non-ASCII:
/// only [`PythonFormatter`]'s `plain` stops there) as `\uXXXX` per UTF-16 unit.
fn push_escaped(out: &mut BytesMut, s: &str, plain: impl Fn(u8) -> bool) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.extend_from_slice(b"\"");
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if plain(b) {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        let short = match b {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            _ => None,
        };
        if let Some(c) = short {
            out.extend_from_slice(&[b'\\', c]);
            i += 1;
        } else if b.is_ascii() {
            out.extend_from_slice(&u_escape(u16::from(b)));
            i += 1;
        } else {
            // `i` is a char boundary: every earlier char was passed over whole.
            let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.extend_from_slice(&u_escape(*unit));
            }
            i += c.len_utf8();
        }
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.extend_from_slice(b"\"");
}

/// A float as Python's `repr(float)` writes it: shortest round-trip digits, positional
/// notation for exponents from -5 to 15 (`0.0001`, `1683042123.456`, `1.0`), otherwise
/// scientific with a signed, at-least-two-digit exponent (`1e-05`, `1e+16`).
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.683042123456e9`.
    let sci = format!("{value:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = usize::try_from(exp).unwrap_or(0) + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n(
                '0',
                usize::try_from(-exp - 1).unwrap_or(0),
            ));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(if exp < 0 { "e-" } else { "e+" });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_style_matches_json_dumps() {
        // python3 -c 'import json; print(json.dumps({"a": "é😀\u2028<>&\x01\x7f\n\t\"\\"}))'
        let v = json!({"a": "é😀\u{2028}<>&\u{1}\u{7f}\n\t\"\\"});
        assert_eq!(
            to_python_json(&v),
            r#"{"a": "\u00e9\ud83d\ude00\u2028<>&\u0001\u007f\n\t\"\\"}"#
        );
        assert_eq!(
            to_python_json(&json!([1, [], {}, null, true])),
            "[1, [], {}, null, true]"
        );
        assert_eq!(
            to_python_json(&json!({"é": "\u{8}\u{c}\r"})),
            r#"{"\u00e9": "\b\f\r"}"#
        );
    }

    #[test]
    fn python_floats_match_repr() {
        // python3 -c 'print(json.dumps([1e16, 1e-05, 1683042123.456, 0.1, 1e22, 1.2345678901234568e+17]))'
        let v = json!([1e16, 1e-5, 1683042123.456, 0.1, 1e22, 123456789012345680.0]);
        assert_eq!(
            to_python_json(&v),
            "[1e+16, 1e-05, 1683042123.456, 0.1, 1e+22, 1.2345678901234568e+17]"
        );
        for (f, s) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (1e15, "1000000000000000.0"),
            (123.0, "123.0"),
            (-2.5e-7, "-2.5e-07"),
            (1e100, "1e+100"),
            (1683042124.789, "1683042124.789"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f:?}");
        }
        // serde_json's own shortest output agrees for ordinary timestamps.
        assert_eq!(
            serde_json::to_string(&1683042123.456).ok().as_deref(),
            Some("1683042123.456")
        );
    }

    #[test]
    fn go_style_escapes_html_and_line_separators() {
        let v = json!({"b": "<a href=\"x\">&</a>\u{2028}\u{2029}é\u{7f}\n\u{8}\u{1f}"});
        assert_eq!(
            to_go_json(&v),
            r#"{"b":"\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e\u2028\u2029é"#.to_owned()
                + "\u{7f}"
                + r#"\n\b\u001f"}"#
        );
        assert_eq!(to_go_json(&json!([1, "x"])), r#"[1,"x"]"#);
    }

    #[test]
    fn spaced_style_keeps_unicode() {
        assert_eq!(
            to_spaced_json(&json!({"a": ["é", 1]})),
            r#"{"a": ["é", 1]}"#
        );
    }

    #[test]
    fn unserializable_values_give_null() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(vec![1u8], 1);
        assert_eq!(to_python_json(&m), "null");
    }
}
