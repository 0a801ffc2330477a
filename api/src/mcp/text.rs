//! Tool answers as compact text for a model's context: query results as one header line and
//! one JSON array per row, text cut at line ends, each within a byte cap and saying when it
//! was cut.

use std::fmt::Write as _;

use serde_json::Value;

/// Query result rows as text, at most `max_bytes` long:
///
/// ```text
/// columns: ["trace_id","runs"]
/// types: ["Utf8","Int64"]
/// ["4bf9...",3]
/// rows: 1, truncated: false
/// ```
///
/// The last line says `truncated: true (...)` with the reason when rows were left out: the
/// query had more than the row cap (`output.truncated`), or the text reached `max_bytes`.
pub(crate) fn rows_text(output: &query::QueryOutput, max_rows: usize, max_bytes: usize) -> String {
    let json = query::format::to_json(output);
    let columns = json["columns"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let names: Vec<&Value> = columns.iter().map(|column| &column["name"]).collect();
    let types: Vec<&Value> = columns.iter().map(|column| &column["type"]).collect();
    let rows = json["rows"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = format!(
        "columns: {}\ntypes: {}\n",
        serde_json::to_string(&names).unwrap_or_default(),
        serde_json::to_string(&types).unwrap_or_default()
    );
    // Room for the closing line, whatever it says.
    let budget = max_bytes.saturating_sub(160);
    let mut shown = 0usize;
    for row in rows {
        let line = serde_json::to_string(row).unwrap_or_default();
        if out.len() + line.len() + 1 > budget {
            break;
        }
        out.push_str(&line);
        out.push('\n');
        shown += 1;
    }
    if shown < rows.len() {
        let _ = writeln!(
            out,
            "rows: {shown} of {}{}, truncated: true (the answer is capped at {max_bytes} \
             bytes: select fewer columns, or fewer rows with max_rows or filters)",
            rows.len(),
            if output.truncated { "+" } else { "" },
        );
    } else if output.truncated {
        let _ = writeln!(
            out,
            "rows: {shown}, truncated: true (more rows than max_rows = {max_rows}; raise \
             max_rows up to {} or narrow the query)",
            super::MAX_ROWS
        );
    } else {
        let _ = writeln!(out, "rows: {shown}, truncated: false");
    }
    out
}

/// `text` cut at the last line end within `max_bytes` (less room for the note), with a last
/// line saying how many lines were left out; `text` itself when it fits.
pub(crate) fn capped_lines(text: &str, max_lines: usize, max_bytes: usize) -> String {
    let total = text.lines().count();
    if total <= max_lines && text.len() <= max_bytes {
        return text.to_owned();
    }
    let budget = max_bytes.saturating_sub(200);
    let mut out = String::new();
    let mut shown = 0usize;
    for line in text.lines().take(max_lines) {
        if out.len() + line.len() + 1 > budget {
            break;
        }
        out.push_str(line);
        out.push('\n');
        shown += 1;
    }
    let _ = writeln!(
        out,
        "(truncated: {} more lines not shown; the answer is capped at {max_lines} lines and \
         {max_bytes} bytes)",
        total - shown
    );
    out
}

/// `text` with at most `max_chars` characters, control characters escaped, and `…` where it
/// was cut: one line of a listing.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (count, character) in text.chars().enumerate() {
        if count == max_chars {
            out.push('…');
            break;
        }
        if character.is_control() {
            out.extend(character.escape_debug());
        } else {
            out.push(character);
        }
    }
    out
}

/// A JSON result value as text (strings without quotes, NULL as `-`).
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn output(rows: i64, truncated: bool) -> query::QueryOutput {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let names: Vec<Option<String>> = (0..rows)
            .map(|row| (row % 2 == 0).then(|| format!("row \"{row}\"")))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from((0..rows).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let mut output = query::QueryOutput::new(schema, vec![batch]);
        output.truncated = truncated;
        output
    }

    #[test]
    fn rows_are_json_lines_under_a_header_and_a_count() {
        let text = rows_text(&output(2, false), 100, 65_536);
        assert_eq!(
            text,
            "columns: [\"name\",\"n\"]\ntypes: [\"Utf8\",\"Int64\"]\n[\"row \\\"0\\\"\",0]\n[null,1]\nrows: 2, truncated: false\n"
        );
        let capped = rows_text(&output(3, true), 3, 65_536);
        assert!(
            capped.ends_with("rows: 3, truncated: true (more rows than max_rows = 3; raise max_rows up to 1000 or narrow the query)\n"),
            "{capped}"
        );
    }

    #[test]
    fn rows_stop_at_the_byte_cap_and_say_how_many_were_shown() {
        let text = rows_text(&output(1_000, false), 1_000, 2_000);
        assert!(text.len() <= 2_000, "{}", text.len());
        let shown = text.lines().filter(|line| line.starts_with('[')).count();
        assert!(shown > 10 && shown < 1_000, "{shown}");
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with(&format!("rows: {shown} of 1000, truncated: true")),
            "{text}"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_line_end_with_a_note() {
        let text: String = (0..100).map(|line| format!("line {line}\n")).collect();
        assert_eq!(capped_lines(&text, 100, 10_000), text);
        let cut = capped_lines(&text, 10, 10_000);
        assert_eq!(cut.lines().count(), 11);
        assert!(cut.ends_with("(truncated: 90 more lines not shown; the answer is capped at 10 lines and 10000 bytes)\n"), "{cut}");
        let small = capped_lines(&text, 100, 300);
        assert!(small.len() <= 300);
        assert!(small.starts_with("line 0\nline 1\n"));
        assert!(small.contains("more lines not shown"));
    }

    #[test]
    fn one_line_escapes_and_cuts() {
        assert_eq!(one_line("a\nb", 10), "a\\nb");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(value_text(&Value::Null), "-");
        assert_eq!(value_text(&Value::from("x")), "x");
        assert_eq!(value_text(&Value::from(3)), "3");
    }
}
