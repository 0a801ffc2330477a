//! String forms of OTLP attribute values, as stored in the attribute map columns.
//!
//! | `AnyValue`            | string form                                              |
//! |-----------------------|----------------------------------------------------------|
//! | `stringValue`         | the string itself                                        |
//! | `boolValue`           | `true` / `false`                                         |
//! | `intValue`            | decimal, e.g. `-42`                                      |
//! | `doubleValue`         | Rust `f64` `Display`: shortest digits that parse back, no exponent (`1.5`, `1` for 1.0, `-0` for -0.0, `NaN`, `inf`, `-inf`) |
//! | `bytesValue`          | standard base64 with padding                             |
//! | `arrayValue`          | compact JSON array of the elements (see below)           |
//! | `kvlistValue`         | compact JSON object, keys in order (duplicates kept)     |
//! | `stringValueStrindex` | the index in decimal (a profiles dictionary reference)   |
//! | no value set          | the empty string                                         |
//!
//! Inside arrays and key-value lists values are typed naturally: strings, base64 bytes and
//! non-finite doubles (`"NaN"`, `"inf"`, `"-inf"`) as JSON strings; ints (exact, even past
//! 2^53), finite doubles (written like their top-level form) and string indexes as JSON numbers;
//! booleans as JSON booleans; a missing value as `null`. Escaping matches `serde_json`'s
//! compact output, so the text equals `serde_json::to_string` of the same JSON value.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// The string form of a value that can be borrowed as is (a string value), or `None` when the
/// form has to be written out with [`write_string_form`].
pub(crate) fn borrowed_form(value: Option<&AnyValue>) -> Option<&str> {
    match value.and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) => Some(text),
        _ => None,
    }
}

/// Appends the string form of `value` to `out`.
pub(crate) fn write_string_form(value: Option<&AnyValue>, out: &mut String) {
    let Some(value) = value.and_then(|value| value.value.as_ref()) else {
        return;
    };
    match value {
        Value::StringValue(text) => out.push_str(text),
        Value::BoolValue(flag) => out.push_str(if *flag { "true" } else { "false" }),
        // Writing into a String cannot fail.
        Value::IntValue(number) => {
            let _ = write!(out, "{number}");
        }
        Value::DoubleValue(number) => {
            let _ = write!(out, "{number}");
        }
        Value::StringValueStrindex(index) => {
            let _ = write!(out, "{index}");
        }
        Value::BytesValue(bytes) => STANDARD.encode_string(bytes, out),
        Value::ArrayValue(array) => write_json_array(&array.values, out),
        Value::KvlistValue(list) => write_json_object(&list.values, out),
    }
}

/// The string form of an attribute value as stored in the attribute map columns (see the module
/// docs): what attribute searches, such as Jaeger's, compare against.
pub fn string_form(value: Option<&AnyValue>) -> String {
    let mut out = String::new();
    write_string_form(value, &mut out);
    out
}

fn write_json_value(value: Option<&AnyValue>, out: &mut String) {
    let Some(value) = value.and_then(|value| value.value.as_ref()) else {
        out.push_str("null");
        return;
    };
    match value {
        Value::StringValue(text) => write_json_string(text, out),
        Value::BoolValue(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::IntValue(number) => {
            let _ = write!(out, "{number}");
        }
        Value::DoubleValue(number) if number.is_finite() => {
            let _ = write!(out, "{number}");
        }
        Value::DoubleValue(number) => {
            let _ = write!(out, "\"{number}\"");
        }
        Value::StringValueStrindex(index) => {
            let _ = write!(out, "{index}");
        }
        Value::BytesValue(bytes) => {
            out.push('"');
            STANDARD.encode_string(bytes, out);
            out.push('"');
        }
        Value::ArrayValue(array) => write_json_array(&array.values, out),
        Value::KvlistValue(list) => write_json_object(&list.values, out),
    }
}

fn write_json_array(values: &[AnyValue], out: &mut String) {
    out.push('[');
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_json_value(Some(value), out);
    }
    out.push(']');
}

fn write_json_object(values: &[KeyValue], out: &mut String) {
    out.push('{');
    for (index, pair) in values.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_json_string(&pair.key, out);
        out.push(':');
        write_json_value(pair.value.as_ref(), out);
    }
    out.push('}');
}

/// Writes `text` as a JSON string literal, escaped exactly like `serde_json` does.
fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..index]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = index + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn any(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    fn form(value: Value) -> String {
        string_form(Some(&any(value)))
    }

    #[test]
    fn scalar_string_forms() {
        assert_eq!(form(Value::StringValue("a b".into())), "a b");
        assert_eq!(form(Value::BoolValue(true)), "true");
        assert_eq!(form(Value::BoolValue(false)), "false");
        assert_eq!(form(Value::IntValue(-42)), "-42");
        assert_eq!(form(Value::IntValue(i64::MIN)), "-9223372036854775808");
        assert_eq!(form(Value::DoubleValue(1.0)), "1");
        assert_eq!(form(Value::DoubleValue(0.1)), "0.1");
        assert_eq!(form(Value::DoubleValue(-0.0)), "-0");
        assert_eq!(form(Value::DoubleValue(f64::NAN)), "NaN");
        assert_eq!(form(Value::DoubleValue(f64::INFINITY)), "inf");
        assert_eq!(form(Value::DoubleValue(f64::NEG_INFINITY)), "-inf");
        assert_eq!(form(Value::BytesValue(vec![0, 1, 2, 255])), "AAEC/w==");
        assert_eq!(form(Value::StringValueStrindex(7)), "7");
        assert_eq!(string_form(Some(&AnyValue { value: None })), "");
        assert_eq!(string_form(None), "");
    }

    #[test]
    fn doubles_parse_back_to_the_same_value() {
        for number in [0.1, 1.0 / 3.0, 1e300, 5e-324, f64::MAX, -123.456e-7] {
            let text = form(Value::DoubleValue(number));
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), number.to_bits());
        }
    }

    #[test]
    fn arrays_and_kvlists_are_compact_json_with_natural_types() {
        let nested = any(Value::KvlistValue(KeyValueList {
            values: vec![
                KeyValue {
                    key: "model".into(),
                    value: Some(any(Value::StringValue("gpt-4o".into()))),
                    key_strindex: 0,
                },
                KeyValue {
                    key: "q\"uote\n".into(),
                    value: None,
                    key_strindex: 0,
                },
            ],
        }));
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                any(Value::StringValue("x".into())),
                any(Value::IntValue(i64::MAX)),
                any(Value::DoubleValue(2.5)),
                any(Value::DoubleValue(1.0)),
                any(Value::DoubleValue(f64::NAN)),
                any(Value::DoubleValue(f64::NEG_INFINITY)),
                any(Value::BoolValue(true)),
                any(Value::BytesValue(b"hi".to_vec())),
                AnyValue { value: None },
                any(Value::ArrayValue(ArrayValue { values: vec![] })),
                nested,
            ],
        });
        assert_eq!(
            form(array),
            r#"["x",9223372036854775807,2.5,1,"NaN","-inf",true,"aGk=",null,[],{"model":"gpt-4o","q\"uote\n":null}]"#
        );
    }

    #[test]
    fn json_string_escaping_matches_serde_json() {
        for text in [
            "plain",
            "quote\" back\\ slash",
            "\u{0}\u{1f}\u{8}\u{c}\t\r\n",
            "é✓/<>",
        ] {
            let mut out = String::new();
            write_json_string(text, &mut out);
            assert_eq!(out, serde_json::to_string(text).unwrap());
        }
    }
}
