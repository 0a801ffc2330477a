use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use serde_json::json;

use super::*;

fn decode(document: Value) -> Result<ExportTraceServiceRequest> {
    decode_traces_json(&serde_json::to_vec(&document).unwrap())
}

/// Decodes a request holding one span given as JSON.
fn decode_span(span: Value) -> Result<Span> {
    let request = decode(json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))?;
    Ok(request.resource_spans[0].scope_spans[0].spans[0].clone())
}

fn error_text(document: Value) -> String {
    let error = decode(document).unwrap_err();
    assert!(error.is_caller_error(), "{error:?}");
    error.to_string()
}

/// Decodes one attribute value given as JSON.
fn decode_value(value: Value) -> Result<Option<V>> {
    let span = decode_span(json!({"attributes": [{"key": "k", "value": value}]}))?;
    Ok(span.attributes[0]
        .value
        .clone()
        .and_then(|value| value.value))
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[test]
fn camel_case_and_snake_case_names_are_both_accepted() {
    let camel = decode_span(json!({
        "traceId": TRACE, "spanId": "00f067aa0ba902b7", "parentSpanId": "00f067aa0ba902b8",
        "traceState": "a=b", "startTimeUnixNano": "5", "endTimeUnixNano": "6",
        "droppedAttributesCount": 1, "droppedEventsCount": 2, "droppedLinksCount": 3,
        "events": [{"timeUnixNano": "7", "droppedAttributesCount": 4}],
        "links": [{"traceId": TRACE, "spanId": "00f067aa0ba902b7", "traceState": "c=d",
                   "droppedAttributesCount": 5}],
        "attributes": [{"key": "x", "value": {"stringValue": "y"}}],
    }))
    .unwrap();
    let snake = decode_span(json!({
        "trace_id": TRACE, "span_id": "00f067aa0ba902b7", "parent_span_id": "00f067aa0ba902b8",
        "trace_state": "a=b", "start_time_unix_nano": "5", "end_time_unix_nano": "6",
        "dropped_attributes_count": 1, "dropped_events_count": 2, "dropped_links_count": 3,
        "events": [{"time_unix_nano": "7", "dropped_attributes_count": 4}],
        "links": [{"trace_id": TRACE, "span_id": "00f067aa0ba902b7", "trace_state": "c=d",
                   "dropped_attributes_count": 5}],
        "attributes": [{"key": "x", "value": {"string_value": "y"}}],
    }))
    .unwrap();
    assert_eq!(camel, snake);
    assert_eq!(
        camel.parent_span_id,
        vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb8]
    );
    assert_eq!(camel.events[0].time_unix_nano, 7);
    assert_eq!(camel.links[0].dropped_attributes_count, 5);

    let request = decode(json!({"resource_spans": [{
        "resource": {"dropped_attributes_count": 2},
        "schema_url": "r",
        "scope_spans": [{"scope": {"name": "s", "dropped_attributes_count": 3}, "schema_url": "u"}],
    }]}))
    .unwrap();
    let resource_spans = &request.resource_spans[0];
    assert_eq!(
        resource_spans
            .resource
            .as_ref()
            .unwrap()
            .dropped_attributes_count,
        2
    );
    assert_eq!(resource_spans.schema_url, "r");
    assert_eq!(resource_spans.scope_spans[0].schema_url, "u");
    assert_eq!(
        resource_spans.scope_spans[0]
            .scope
            .as_ref()
            .unwrap()
            .dropped_attributes_count,
        3
    );
}

#[test]
fn sixty_four_bit_integers_are_exact_as_strings_and_numbers() {
    let span = decode_span(json!({
        "startTimeUnixNano": 18446744073709551615u64,
        "endTimeUnixNano": "9007199254740993",
    }))
    .unwrap();
    assert_eq!(span.start_time_unix_nano, u64::MAX);
    assert_eq!(span.end_time_unix_nano, 9_007_199_254_740_993);
    // 2^53 + 1 as a bare JSON number is not rounded to a double.
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":9007199254740993}]}]}]}"#;
    let request = decode_traces_json(body).unwrap();
    assert_eq!(
        request.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano,
        9_007_199_254_740_993
    );

    assert_eq!(
        decode_value(json!({"intValue": "-9223372036854775808"})).unwrap(),
        Some(V::IntValue(i64::MIN))
    );
    assert_eq!(
        decode_value(json!({"intValue": 9223372036854775807i64})).unwrap(),
        Some(V::IntValue(i64::MAX))
    );
    assert_eq!(
        decode_value(json!({"intValue": -3})).unwrap(),
        Some(V::IntValue(-3))
    );
    assert_eq!(
        decode_value(json!({"intValue": 1e3})).unwrap(),
        Some(V::IntValue(1000))
    );
}

#[test]
fn bad_integers_are_errors_naming_the_path() {
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "12a"}]}]}]})
        ),
        r#"resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: expected an unsigned 64-bit integer, found "12a""#
    );
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": -1}]}]}]})
        ),
        "resourceSpans[0].scopeSpans[0].spans[0].endTimeUnixNano: expected an unsigned 64-bit integer, found -1"
    );
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": 1.5}]}]}]})
        ),
        "resourceSpans[0].scopeSpans[0].spans[0].endTimeUnixNano: expected an unsigned 64-bit integer, found 1.5"
    );
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"flags": 4294967296u64}]}]}]})
        ),
        "resourceSpans[0].scopeSpans[0].spans[0].flags: expected an unsigned 32-bit integer, found 4294967296"
    );
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"droppedLinksCount": true}]}]}]})
        ),
        "resourceSpans[0].scopeSpans[0].spans[0].droppedLinksCount: expected an unsigned 64-bit integer, found a boolean"
    );
    assert!(decode_value(json!({"intValue": "9223372036854775808"})).is_err());
}

#[test]
fn enums_are_accepted_as_numbers_and_names() {
    let span =
        decode_span(json!({"kind": "SPAN_KIND_SERVER", "status": {"code": "STATUS_CODE_ERROR"}}))
            .unwrap();
    assert_eq!(span.kind, 2);
    assert_eq!(span.status.unwrap().code, 2);
    let span = decode_span(json!({"kind": 9, "status": {"code": 5, "message": "m"}})).unwrap();
    assert_eq!(span.kind, 9);
    assert_eq!(span.status.unwrap().code, 5);
    assert_eq!(decode_span(json!({"kind": "3"})).unwrap().kind, 3);
    assert_eq!(
        error_text(json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SERVER"}]}]}]})),
        r#"resourceSpans[0].scopeSpans[0].spans[0].kind: unknown span kind "SERVER""#
    );
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"status": {"code": 1.5}}]}]}]})
        ),
        "resourceSpans[0].scopeSpans[0].spans[0].status.code: expected a signed 64-bit integer, found 1.5"
    );
}

#[test]
fn hex_ids_in_either_case_and_wrong_lengths() {
    let span = decode_span(json!({"traceId": TRACE.to_uppercase(), "spanId": "00F067AA0BA902B7"}))
        .unwrap();
    assert_eq!(hex::encode(&span.trace_id), TRACE);
    assert_eq!(hex::encode(&span.span_id), "00f067aa0ba902b7");

    assert_eq!(
        error_text(
            json!({"resourceSpans": [{}, {"scopeSpans": [{}, {"spans": [{}, {}, {}, {"traceId": &TRACE[1..]}]}]}]})
        ),
        "resourceSpans[1].scopeSpans[1].spans[3].traceId: expected 32 hex characters, found 31"
    );
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "00f067aa0ba902bz"}]}]}]})
        ),
        r#"resourceSpans[0].scopeSpans[0].spans[0].spanId: expected a hex string, found "00f067aa0ba902bz""#
    );
    assert_eq!(
        error_text(
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{"spanId": "abc"}]}]}]}]})
        ),
        "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: expected 16 hex characters, found 3"
    );
    assert_eq!(
        error_text(json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 12}]}]}]})),
        "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected a hex string, found a number"
    );
}

#[test]
fn empty_parent_span_id_means_a_root_span() {
    let span = decode_span(json!({"parentSpanId": ""})).unwrap();
    assert!(span.parent_span_id.is_empty());
    let span = decode_span(json!({"parentSpanId": null})).unwrap();
    assert!(span.parent_span_id.is_empty());
}

#[test]
fn doubles_accept_numbers_and_special_strings() {
    let double = |value: Value| match decode_value(json!({"doubleValue": value})).unwrap() {
        Some(V::DoubleValue(number)) => number,
        other => panic!("not a double: {other:?}"),
    };
    assert!(double(json!("NaN")).is_nan());
    assert_eq!(double(json!("Infinity")), f64::INFINITY);
    assert_eq!(double(json!("-Infinity")), f64::NEG_INFINITY);
    assert_eq!(double(json!(2.5)), 2.5);
    assert_eq!(double(json!(3)), 3.0);
    assert_eq!(double(json!("0.1")), 0.1);
    let negative_zero = decode_traces_json(
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"doubleValue":-0.0}}]}]}]}]}"#,
    )
    .unwrap();
    let value = negative_zero.resource_spans[0].scope_spans[0].spans[0].attributes[0]
        .value
        .clone()
        .unwrap()
        .value;
    assert!(
        matches!(value, Some(V::DoubleValue(number)) if number.to_bits() == (-0.0f64).to_bits())
    );
    assert_eq!(
        decode_value(json!({"doubleValue": "lots"}))
            .unwrap_err()
            .to_string(),
        r#"resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.doubleValue: expected a double, found "lots""#
    );
}

#[test]
fn bytes_values_are_base64_with_or_without_padding() {
    let expected = Some(V::BytesValue(vec![0xfb, 0xff, 0x01]));
    assert_eq!(
        decode_value(json!({"bytesValue": "+/8B"})).unwrap(),
        expected
    );
    assert_eq!(
        decode_value(json!({"bytesValue": "-_8B"})).unwrap(),
        expected
    );
    assert_eq!(
        decode_value(json!({"bytesValue": "aGk="})).unwrap(),
        Some(V::BytesValue(b"hi".to_vec()))
    );
    assert_eq!(
        decode_value(json!({"bytesValue": "aGk"})).unwrap(),
        Some(V::BytesValue(b"hi".to_vec()))
    );
    let error = decode_value(json!({"bytesValue": "a*b"}))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.bytesValue: invalid base64"
        ),
        "{error}"
    );
}

#[test]
fn every_any_value_kind_decodes() {
    assert_eq!(
        decode_value(json!({"stringValue": ""})).unwrap(),
        Some(V::StringValue(String::new()))
    );
    assert_eq!(
        decode_value(json!({"boolValue": false})).unwrap(),
        Some(V::BoolValue(false))
    );
    assert_eq!(
        decode_value(json!({"stringValueStrindex": 4})).unwrap(),
        Some(V::StringValueStrindex(4))
    );
    assert_eq!(decode_value(json!({})).unwrap(), None);
    let nested = decode_value(json!({"arrayValue": {"values": [
        {"intValue": "1"},
        {},
        {"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": true}}, {"key": "b"}]}},
    ]}}))
    .unwrap();
    let Some(V::ArrayValue(array)) = nested else {
        panic!("not an array: {nested:?}");
    };
    assert_eq!(array.values.len(), 3);
    assert_eq!(array.values[0].value, Some(V::IntValue(1)));
    assert_eq!(array.values[1].value, None);
    let Some(V::KvlistValue(list)) = &array.values[2].value else {
        panic!("not a kvlist");
    };
    assert_eq!(list.values[0].key, "a");
    assert_eq!(list.values[1].value, None);
    assert_eq!(
        decode_value(json!({"arrayValue": {}})).unwrap(),
        Some(V::ArrayValue(ArrayValue::default()))
    );

    assert_eq!(
        decode_value(json!({"stringValue": "a", "intValue": "1"}))
            .unwrap_err()
            .to_string(),
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value: more than one value field set"
    );
    assert_eq!(
        decode_value(json!({"boolValue": "true"}))
            .unwrap_err()
            .to_string(),
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.boolValue: expected a boolean, found a string"
    );
    assert_eq!(
        decode_value(json!({"arrayValue": {"values": [{"intValue": []}]}}))
            .unwrap_err()
            .to_string(),
        "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.arrayValue.values[0].intValue: expected a signed 64-bit integer, found an array"
    );
}

#[test]
fn unknown_fields_and_nulls_are_ignored() {
    let request = decode(json!({
        "resourceSpans": [{
            "futureField": {"anything": [1, 2]},
            "resource": null,
            "scopeSpans": [{"scope": null, "spans": [{"name": "n", "status": null, "extra": 1}]}],
        }],
        "other": true,
    }))
    .unwrap();
    let resource_spans = &request.resource_spans[0];
    assert!(resource_spans.resource.is_none());
    assert!(resource_spans.scope_spans[0].scope.is_none());
    let span = &resource_spans.scope_spans[0].spans[0];
    assert_eq!(span.name, "n");
    assert!(span.status.is_none());
    assert_eq!(
        decode(json!({})).unwrap(),
        ExportTraceServiceRequest::default()
    );
}

#[test]
fn structural_type_errors_name_the_path() {
    assert_eq!(
        error_text(json!([])),
        "(document): expected an object, found an array"
    );
    assert_eq!(
        error_text(json!({"resourceSpans": {}})),
        "resourceSpans: expected an array, found an object"
    );
    assert_eq!(
        error_text(json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]})),
        "resourceSpans[0].scopeSpans[0].spans[0].name: expected a string, found a number"
    );
    assert_eq!(
        error_text(json!({"resourceSpans": [{"resource": {"entityRefs": [{"idKeys": [1]}]}}]})),
        "resourceSpans[0].resource.entityRefs[0].idKeys[0]: expected a string, found a number"
    );
    let error = decode_traces_json(b"{\"resourceSpans\": [").unwrap_err();
    assert!(matches!(error, Error::JsonSyntax(_)), "{error:?}");
    assert!(error.is_caller_error());
}

#[test]
fn resource_entity_refs_and_strindexes_decode() {
    let request = decode(json!({"resourceSpans": [{"resource": {
        "attributes": [{"key": "", "keyStrindex": 3, "value": {"stringValueStrindex": 2}}],
        "entityRefs": [{"schemaUrl": "s", "type": "service", "idKeys": ["service.name"],
                        "descriptionKeys": ["a", "b"]}],
    }}]}))
    .unwrap();
    let resource = request.resource_spans[0].resource.clone().unwrap();
    assert_eq!(resource.attributes[0].key_strindex, 3);
    assert_eq!(
        resource.entity_refs,
        vec![EntityRef {
            schema_url: "s".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            description_keys: vec!["a".into(), "b".into()],
        }]
    );
}
