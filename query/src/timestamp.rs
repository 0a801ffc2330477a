//! Rendering of timestamps as RFC 3339 text with nanoseconds and `Z`.

use arrow::datatypes::TimeUnit;
use arrow::temporal_conversions::{
    timestamp_ms_to_datetime, timestamp_ns_to_datetime, timestamp_s_to_datetime,
    timestamp_us_to_datetime,
};

/// `2024-05-01T12:00:00.000000000Z` for a count of `unit`s since the Unix epoch, read as a
/// UTC instant. `None` when the value is outside the representable calendar range.
pub(crate) fn format_timestamp(value: i64, unit: TimeUnit) -> Option<String> {
    let datetime = match unit {
        TimeUnit::Second => timestamp_s_to_datetime(value),
        TimeUnit::Millisecond => timestamp_ms_to_datetime(value),
        TimeUnit::Microsecond => timestamp_us_to_datetime(value),
        TimeUnit::Nanosecond => timestamp_ns_to_datetime(value),
    }?;
    Some(datetime.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
}

/// [`format_timestamp`] for nanoseconds; every `i64` nanosecond count is representable, the
/// raw number is the fallback all the same.
pub(crate) fn format_timestamp_ns(value: i64) -> String {
    format_timestamp(value, TimeUnit::Nanosecond).unwrap_or_else(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_rfc3339_with_nanoseconds() {
        assert_eq!(format_timestamp_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_timestamp_ns(1_714_564_800_123_456_789),
            "2024-05-01T12:00:00.123456789Z"
        );
        assert_eq!(
            format_timestamp(-1, TimeUnit::Second).as_deref(),
            Some("1969-12-31T23:59:59.000000000Z")
        );
    }
}
