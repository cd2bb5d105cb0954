//! Record headers as what Kafka says they are: bytes, keys included.
//!
//! rust-rdkafka's `Headers` accessors turn a key into `&str` and panic when it
//! is not UTF-8 (legal in Kafka, and kcat can write it), so kdeck never calls
//! them on records it did not make: it reads and edits headers through
//! librdkafka's own calls. Where headers become text (JSON, the screen) a key or
//! value that is not UTF-8 is shown lossily, and the exact bytes travel beside
//! it in base64.

use std::ffi::CString;

use rdkafka::message::{BorrowedHeaders, Message, OwnedHeaders, OwnedMessage};
use rdkafka_sys as rdsys;
use serde_json::{Map, Value};

/// One header, borrowed from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

fn native(h: &BorrowedHeaders) -> *mut rdsys::rd_kafka_headers_t {
    // A `&BorrowedHeaders` is librdkafka's `rd_kafka_headers_t *` itself
    // (rust-rdkafka makes it by casting that pointer).
    h as *const BorrowedHeaders as *mut rdsys::rd_kafka_headers_t
}

/// Every header of a header list, in order.
pub fn all(h: &BorrowedHeaders) -> Vec<RawHeader<'_>> {
    let ptr = native(h);
    let mut out = Vec::new();
    for idx in 0.. {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `ptr` is a live header list borrowed for 'a; librdkafka returns
        // pointers into it (a NUL-terminated name, a value of `size` bytes or NULL).
        let err = unsafe { rdsys::rd_kafka_header_get_all(ptr, idx, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value as *const u8, size) });
        out.push(RawHeader { key, value });
    }
    out
}

/// Every header of a record.
pub fn of(record: &OwnedMessage) -> Vec<RawHeader<'_>> {
    record.headers().map(|h| all(h.as_borrowed())).unwrap_or_default()
}

/// (lossy key, exact value) pairs, for reading dead-letter conventions.
pub fn pairs(record: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    of(record).iter().map(|h| (text(h.key), h.value.map(<[u8]>::to_vec))).collect()
}

/// The value of the last header named `key`.
pub fn last<'a>(record: &'a OwnedMessage, key: &str) -> Option<&'a [u8]> {
    of(record).into_iter().rev().find(|h| h.key == key.as_bytes()).and_then(|h| h.value)
}

/// The record's headers with every one named in `drop` removed; the rest keep
/// their exact bytes and order.
pub fn without(record: &OwnedMessage, drop: impl Fn(&[u8]) -> bool) -> OwnedHeaders {
    let headers = record.headers().cloned().unwrap_or_default();
    let names: Vec<Vec<u8>> = all(headers.as_borrowed()).iter().filter(|h| drop(h.key)).map(|h| h.key.to_vec()).collect();
    for name in names {
        if let Ok(name) = CString::new(name) {
            // SAFETY: `headers` is our own copy, not shared; the name is NUL-terminated.
            unsafe { rdsys::rd_kafka_header_remove(native(headers.as_borrowed()), name.as_ptr()) };
        }
    }
    headers
}

/// Bytes as text: lossy where they are not UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// True when every key and value is UTF-8 (then the text form is exact).
pub fn all_text(headers: &[RawHeader<'_>]) -> bool {
    headers.iter().all(|h| std::str::from_utf8(h.key).is_ok() && h.value.is_none_or(|v| std::str::from_utf8(v).is_ok()))
}

/// Headers as a JSON object of text (the last of a repeated key wins, as in most
/// clients' maps; a null value stays null).
pub fn to_json(headers: &[RawHeader<'_>]) -> Map<String, Value> {
    headers.iter().map(|h| (text(h.key), h.value.map(text).into())).collect()
}

/// The exact headers, in order, as `[key base64, value base64 or null]` pairs:
/// given beside the text form whenever that form is not exact.
pub fn to_base64(headers: &[RawHeader<'_>]) -> Value {
    Value::Array(
        headers.iter().map(|h| serde_json::json!([super::sink::base64(h.key), h.value.map(super::sink::base64)])).collect(),
    )
}

/// A header owned: key and value bytes.
pub type OwnedHeader = (Vec<u8>, Option<Vec<u8>>);

/// Decodes `to_base64`'s form back into headers.
pub fn from_base64(v: &Value) -> Option<Vec<OwnedHeader>> {
    use base64::Engine as _;
    let decode = |s: &Value| base64::engine::general_purpose::STANDARD.decode(s.as_str()?).ok();
    v.as_array()?
        .iter()
        .map(|pair| {
            let key = decode(pair.get(0)?)?;
            let value = match pair.get(1)? {
                Value::Null => None,
                s => Some(decode(s)?),
            };
            Some((key, value))
        })
        .collect()
}

/// Builds a header list from raw keys and values (keys need not be UTF-8).
pub fn build<'a>(headers: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> OwnedHeaders {
    let out = OwnedHeaders::new();
    for (key, value) in headers {
        let (vptr, vlen) = match value {
            Some(v) => (v.as_ptr() as *const std::ffi::c_void, v.len() as isize),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `out` is our own list; librdkafka copies the name and value.
        unsafe {
            rdsys::rd_kafka_header_add(native(out.as_borrowed()), key.as_ptr() as *const _, key.len() as isize, vptr, vlen);
        }
    }
    out
}

/// Headers as `key: value` lines for a person: lossy text, and the exact bytes in
/// base64 after any key or value that is not UTF-8.
pub fn display(headers: &[RawHeader<'_>]) -> Vec<(String, String)> {
    let shown = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("{} (base64 {})", text(b), super::sink::base64(b)),
    };
    headers.iter().map(|h| (shown(h.key), h.value.map_or_else(|| "(null)".to_string(), shown))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(None, None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, 0, Some(headers))
    }

    #[test]
    fn keys_that_are_not_utf8_round_trip_without_a_panic() {
        let h = build([(&b"\xff\xfe"[..], Some(&b"v\x80"[..])), (b"plain", Some(b"ok")), (b"nothing", None)]);
        let r = record(h);
        let raw = of(&r);
        assert_eq!(raw.len(), 3);
        assert_eq!(raw[0], RawHeader { key: b"\xff\xfe", value: Some(b"v\x80") });
        assert_eq!(raw[2].value, None);
        assert!(!all_text(&raw));
        let json = to_json(&raw);
        assert_eq!(json["plain"], "ok");
        assert_eq!(json["\u{fffd}\u{fffd}"], "v\u{fffd}");
        assert_eq!(json["nothing"], Value::Null);
        let exact = from_base64(&to_base64(&raw)).unwrap();
        assert_eq!(exact[0], (b"\xff\xfe".to_vec(), Some(b"v\x80".to_vec())));
        assert_eq!(exact[2], (b"nothing".to_vec(), None));
        assert_eq!(display(&raw)[0].0, "\u{fffd}\u{fffd} (base64 //4=)");
        assert_eq!(last(&r, "plain"), Some(&b"ok"[..]));
    }

    #[test]
    fn without_drops_named_headers_and_keeps_the_rest_exact() {
        let r = record(build([(&b"kdeck.error.stage"[..], Some(&b"old"[..])), (b"\xff", Some(b"\x00\x01")), (b"a", None)]));
        let kept = without(&r, |k| k.starts_with(b"kdeck."));
        let raw = all(kept.as_borrowed());
        assert_eq!(raw, vec![RawHeader { key: b"\xff", value: Some(b"\x00\x01") }, RawHeader { key: b"a", value: None }]);
    }
}
