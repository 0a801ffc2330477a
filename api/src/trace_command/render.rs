//! Drawing rows as text: [`trace`] (a span tree with timing bars and decisions) and [`session`]
//! (one line per run). Pure functions of their inputs, so every layout rule is unit tested.
//!
//! A trace line is `[bar] duration  tree name  details  span_id`:
//! - the bar is [`BAR_WIDTH`] cells spanning the whole trace (earliest start to latest end); a
//!   span covers at least one cell; the duration is right-aligned in [`DURATION_WIDTH`];
//! - the tree starts at [`TREE_COLUMN`]; each level indents by three characters (`├─ `, `└─ `,
//!   `│  `); children are ordered by start time (then span id); a span whose parent is not in
//!   the trace is drawn at the top level and marked as an orphan;
//! - the decisions gating a span are drawn right below it, one line each, in time order, with a
//!   `◆` in the bar where they were taken.
//!
//! Every text that came from telemetry passes through [`clean`], so a span name cannot move
//! the cursor or change colors. Widths are counted in `char`s: the fixed columns hold only
//! ASCII and single-width symbols.

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// Cells in a timing bar.
pub(crate) const BAR_WIDTH: usize = 30;
/// Characters of the right-aligned duration after the bar.
pub(crate) const DURATION_WIDTH: usize = 7;
/// Column (in chars) where the tree starts: `[` bar `]`, a space, the duration, two spaces.
pub(crate) const TREE_COLUMN: usize = BAR_WIDTH + 2 + 1 + DURATION_WIDTH + 2;

/// One row of `spans`, the columns the tree shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SpanRow {
    pub(crate) span_id: String,
    /// `None` for a root span.
    pub(crate) parent_span_id: Option<String>,
    pub(crate) name: String,
    /// Nanoseconds since the Unix epoch.
    pub(crate) start_ns: i64,
    /// Negative durations (end before start) are drawn as zero.
    pub(crate) duration_ns: i64,
    /// `unset`, `ok` or `error`.
    pub(crate) status_code: String,
    pub(crate) status_message: Option<String>,
    pub(crate) service_name: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) operation: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) request_model: Option<String>,
    pub(crate) response_model: Option<String>,
    pub(crate) agent_name: Option<String>,
    pub(crate) tool_name: Option<String>,
    pub(crate) tool_risk: Option<String>,
    pub(crate) input_tokens: Option<i64>,
    pub(crate) output_tokens: Option<i64>,
    pub(crate) error_type: Option<String>,
    /// 0 = first try; set when the span says so (explicit retries).
    pub(crate) retry_attempt: Option<i64>,
}

/// One row of the `decisions` view.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DecisionRow {
    /// The span the decision gates.
    pub(crate) span_id: String,
    pub(crate) time_ns: Option<i64>,
    pub(crate) kind: Option<String>,
    pub(crate) verdict: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) policy_id: Option<String>,
    pub(crate) risk: Option<String>,
    pub(crate) context_source: Option<String>,
    pub(crate) reasoning: Option<String>,
    pub(crate) approval_status: Option<String>,
    pub(crate) approval_latency_ms: Option<f64>,
}

/// One row of the `tool_calls` view (only its retry columns are drawn).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ToolCallRow {
    pub(crate) span_id: String,
    pub(crate) attempt: Option<i64>,
    pub(crate) is_retry: bool,
    /// `explicit` or `inferred`.
    pub(crate) retry_source: Option<String>,
}

/// Everything drawn for one trace. `None` views were not available in the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TraceRows {
    pub(crate) trace_id: String,
    pub(crate) spans: Vec<SpanRow>,
    pub(crate) decisions: Option<Vec<DecisionRow>>,
    pub(crate) tool_calls: Option<Vec<ToolCallRow>>,
}

/// One row of the `agent_runs` view.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RunRow {
    pub(crate) trace_id: String,
    pub(crate) start_ns: i64,
    pub(crate) agent_name: Option<String>,
    /// `success`, `refused` or `error`.
    pub(crate) outcome: Option<String>,
    pub(crate) duration_ns: i64,
    pub(crate) llm_calls: Option<i64>,
    pub(crate) tool_calls: Option<i64>,
    pub(crate) errors: Option<i64>,
    pub(crate) denials: Option<i64>,
    pub(crate) input_tokens: Option<i64>,
    pub(crate) output_tokens: Option<i64>,
}

/// ANSI styles, or none at all.
#[derive(Debug, Clone, Copy)]
struct Paint {
    enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Bold,
    Dim,
    Red,
    Green,
    Yellow,
    Cyan,
}

impl Paint {
    fn paint(self, style: Style, text: &str) -> String {
        if !self.enabled || text.is_empty() {
            return text.to_owned();
        }
        let code = match style {
            Style::Bold => "1",
            Style::Dim => "2",
            Style::Red => "31",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Cyan => "36",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// Telemetry text made safe for a terminal: control characters (escape, newline, ...) are
/// shown as escapes instead of being sent.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        if character.is_control() {
            out.extend(character.escape_debug());
        } else {
            out.push(character);
        }
    }
    Cow::Owned(out)
}

/// A duration in at most [`DURATION_WIDTH`] characters, three significant digits:
/// `850ns`, `12.3µs`, `412ms`, `3.21s`, `2m05s`, `1h02m`.
pub(crate) fn format_duration(ns: i64) -> String {
    fn three_digits(ns: i64, unit_ns: f64, suffix: &str) -> String {
        let value = ns as f64 / unit_ns;
        if value < 9.995 {
            format!("{value:.2}{suffix}")
        } else if value < 99.95 {
            format!("{value:.1}{suffix}")
        } else {
            format!("{value:.0}{suffix}")
        }
    }
    let ns = ns.max(0);
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 999_500 {
        three_digits(ns, 1e3, "µs")
    } else if ns < 999_500_000 {
        three_digits(ns, 1e6, "ms")
    } else if ns < 59_950_000_000 {
        three_digits(ns, 1e9, "s")
    } else if ns < 3_600_000_000_000 {
        let seconds = ns / 1_000_000_000;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        let minutes = ns / 60_000_000_000;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    }
}

/// RFC 3339 UTC with milliseconds: `2026-11-01T00:00:00.000Z`.
pub(crate) fn format_time(ns: i64) -> String {
    let seconds = ns.div_euclid(1_000_000_000);
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

/// (year, month, day) of a day number counted from 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Why a span is drawn at the top level although it names a parent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Orphan {
    /// The parent is not in the trace (not received yet, or dropped).
    MissingParent(String),
    /// The span names itself, or an ancestor names it, as parent.
    Cycle,
}

/// One span's place in the drawing.
#[derive(Debug)]
struct Placed {
    index: usize,
    /// Tree text before the name (`│  ├─ `).
    prefix: String,
    /// Tree text continued below this span (for its decision lines).
    below: String,
    parent: Option<usize>,
    orphan: Option<Orphan>,
}

/// Orders the spans into the tree, depth first, each span exactly once.
fn place(spans: &[SpanRow]) -> Vec<Placed> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&spans[a], &spans[b]);
        (a.start_ns, &a.span_id, &a.name).cmp(&(b.start_ns, &b.span_id, &b.name))
    });
    // Spans may share an id (they are all kept); children hang under the earliest.
    let mut first_with_id: HashMap<&str, usize> = HashMap::new();
    for &index in &order {
        first_with_id
            .entry(spans[index].span_id.as_str())
            .or_insert(index);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut parents: Vec<Option<usize>> = vec![None; spans.len()];
    // (span, why it is at the top level although it has a parent id)
    let mut top: Vec<(usize, Option<Orphan>)> = Vec::new();
    for &index in &order {
        match spans[index].parent_span_id.as_deref() {
            None => top.push((index, None)),
            Some(parent_id) => match first_with_id.get(parent_id) {
                Some(&parent) if parent != index => {
                    children[parent].push(index);
                    parents[index] = Some(parent);
                }
                Some(_) => top.push((index, Some(Orphan::Cycle))),
                None => top.push((index, Some(Orphan::MissingParent(parent_id.to_owned())))),
            },
        }
    }

    let mut placed = Vec::with_capacity(spans.len());
    let mut visited = vec![false; spans.len()];
    for (index, orphan) in top {
        draw_subtree(
            index,
            orphan,
            &children,
            &parents,
            &mut visited,
            &mut placed,
        );
    }
    // Whatever is left hangs off a parent cycle: cut each cycle at its first span met while
    // walking up from the earliest span left.
    for &start in &order {
        if visited[start] {
            continue;
        }
        let mut seen = HashSet::new();
        let mut node = start;
        while seen.insert(node) {
            match parents[node] {
                Some(parent) if !visited[parent] => node = parent,
                _ => break,
            }
        }
        draw_subtree(
            node,
            Some(Orphan::Cycle),
            &children,
            &parents,
            &mut visited,
            &mut placed,
        );
    }
    debug_assert_eq!(placed.len(), spans.len(), "every span is drawn once");
    placed
}

/// Appends `root` and its not yet drawn descendants, depth first (iteratively: traces can be
/// deep).
fn draw_subtree(
    root: usize,
    orphan: Option<Orphan>,
    children: &[Vec<usize>],
    parents: &[Option<usize>],
    visited: &mut [bool],
    placed: &mut Vec<Placed>,
) {
    // (span, prefix before its name, prefix for its children, orphan mark)
    let mut stack = vec![(root, String::new(), String::new(), orphan)];
    while let Some((index, prefix, child_prefix, orphan)) = stack.pop() {
        if visited[index] {
            continue;
        }
        visited[index] = true;
        let drawn: Vec<usize> = children[index]
            .iter()
            .copied()
            .filter(|&child| !visited[child])
            .collect();
        let below = if drawn.is_empty() {
            format!("{child_prefix}   ")
        } else {
            format!("{child_prefix}│  ")
        };
        for (position, &child) in drawn.iter().enumerate().rev() {
            let last = position + 1 == drawn.len();
            let connector = if last { "└─ " } else { "├─ " };
            let continuation = if last { "   " } else { "│  " };
            stack.push((
                child,
                format!("{child_prefix}{connector}"),
                format!("{child_prefix}{continuation}"),
                None,
            ));
        }
        placed.push(Placed {
            index,
            prefix,
            below,
            parent: if orphan.is_some() {
                None
            } else {
                parents[index]
            },
            orphan,
        });
    }
}

/// The time axis of a trace: its first start and its length.
#[derive(Debug, Clone, Copy)]
struct Axis {
    start_ns: i64,
    length_ns: i64,
}

impl Axis {
    fn of(spans: &[SpanRow]) -> Axis {
        let start_ns = spans.iter().map(|span| span.start_ns).min().unwrap_or(0);
        let end_ns = spans
            .iter()
            .map(|span| span.start_ns.saturating_add(span.duration_ns.max(0)))
            .max()
            .unwrap_or(start_ns);
        Axis {
            start_ns,
            length_ns: end_ns.saturating_sub(start_ns),
        }
    }

    /// The cell holding `time_ns`, in `0..BAR_WIDTH`.
    fn cell(self, time_ns: i64) -> usize {
        let offset = i128::from(time_ns.saturating_sub(self.start_ns).max(0));
        let cell = offset * BAR_WIDTH as i128 / i128::from(self.length_ns.max(1));
        usize::try_from(cell)
            .unwrap_or(usize::MAX)
            .min(BAR_WIDTH - 1)
    }

    /// The cells `[first, end)` a span covers: at least one.
    fn cells(self, start_ns: i64, duration_ns: i64) -> (usize, usize) {
        let first = self.cell(start_ns);
        let length = i128::from(self.length_ns.max(1));
        let end_offset = i128::from(
            start_ns
                .saturating_add(duration_ns.max(0))
                .saturating_sub(self.start_ns)
                .max(0),
        );
        // Round the end up, so a span ending inside a cell covers it.
        let end = (end_offset * BAR_WIDTH as i128 + length - 1) / length;
        let end = usize::try_from(end).unwrap_or(usize::MAX).min(BAR_WIDTH);
        (first, end.max(first + 1))
    }
}

fn bar(axis: Axis, span: &SpanRow, style: Style, paint: Paint) -> String {
    let (first, end) = axis.cells(span.start_ns, span.duration_ns);
    format!(
        "[{}{}{}]",
        " ".repeat(first),
        paint.paint(style, &"█".repeat(end - first)),
        " ".repeat(BAR_WIDTH - end)
    )
}

fn mark(axis: Axis, time_ns: Option<i64>, style: Style, paint: Paint) -> String {
    match time_ns {
        Some(time) => {
            let cell = axis.cell(time);
            format!(
                "[{}{}{}]",
                " ".repeat(cell),
                paint.paint(style, "◆"),
                " ".repeat(BAR_WIDTH - cell - 1)
            )
        }
        None => format!("[{}]", " ".repeat(BAR_WIDTH)),
    }
}

fn is_error(span: &SpanRow) -> bool {
    span.status_code == "error" || span.error_type.is_some()
}

/// A retry mark: the attempt number when known (`None` e.g. for a tool call whose HTTP request
/// was resent within its first attempt), and whether the retry was inferred rather than stated
/// by the span.
type Retry = (Option<i64>, bool);

fn retry_of(span: &SpanRow, tool_call: Option<&ToolCallRow>) -> Option<Retry> {
    if let Some(call) = tool_call.filter(|call| call.is_retry) {
        let attempt = call
            .attempt
            .or(span.retry_attempt)
            .filter(|attempt| *attempt > 0);
        let inferred = call.retry_source.as_deref() == Some("inferred");
        return Some((attempt, inferred));
    }
    span.retry_attempt
        .filter(|attempt| *attempt > 0)
        .map(|attempt| (Some(attempt), false))
}

fn verdict_style(verdict: &str) -> (&'static str, Style) {
    match verdict {
        "allow" => ("✓", Style::Green),
        "deny" => ("✗", Style::Red),
        "escalate" => ("?", Style::Yellow),
        "warn" => ("!", Style::Yellow),
        "modify" => ("~", Style::Yellow),
        _ => ("•", Style::Bold),
    }
}

fn key_value(out: &mut Vec<String>, key: &str, value: &str, paint: Paint) {
    out.push(format!(
        "{}{}",
        paint.paint(Style::Dim, &format!("{key}=")),
        clean(value)
    ));
}

fn tokens_text(input: Option<i64>, output: Option<i64>) -> String {
    let side = |count: Option<i64>| count.map_or_else(|| "-".to_owned(), |count| count.to_string());
    format!("{}/{}", side(input), side(output))
}

/// `provider/model`: the model that answered, preceded by the requested one where the two
/// differ (`openai/gpt-4o → gpt-4o-2024-08-06`, an alias resolved to a snapshot or a fallback);
/// whichever of the two is known otherwise.
fn model_text(span: &SpanRow) -> Option<String> {
    let model = match (&span.request_model, &span.response_model) {
        (Some(request), Some(response)) if request != response => {
            format!("{request} → {response}")
        }
        (_, Some(model)) | (Some(model), None) => model.clone(),
        (None, None) => return None,
    };
    Some(match &span.provider {
        Some(provider) => format!("{provider}/{model}"),
        None => model,
    })
}

/// The text after a span's name.
fn span_details(
    span: &SpanRow,
    parent: Option<&SpanRow>,
    placed: &Placed,
    retry: Option<Retry>,
    paint: Paint,
) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(service) = &span.service_name
        && parent.is_none_or(|parent| parent.service_name.as_ref() != Some(service))
    {
        key_value(&mut parts, "service", service, paint);
    }
    if let Some(operation) = &span.operation
        && !span.name.starts_with(operation.as_str())
    {
        key_value(&mut parts, "op", operation, paint);
    }
    if let Some(agent) = &span.agent_name
        && parent.is_none_or(|parent| parent.agent_name.as_ref() != Some(agent))
    {
        key_value(&mut parts, "agent", agent, paint);
    }
    if let Some(model) = model_text(span) {
        key_value(&mut parts, "model", &model, paint);
    }
    if let Some(tool) = &span.tool_name {
        key_value(&mut parts, "tool", tool, paint);
    }
    if let Some(risk) = &span.tool_risk {
        key_value(&mut parts, "risk", risk, paint);
    }
    if span.input_tokens.is_some() || span.output_tokens.is_some() {
        key_value(
            &mut parts,
            "tokens",
            &tokens_text(span.input_tokens, span.output_tokens),
            paint,
        );
    }
    if is_error(span) {
        let mut text = String::from("ERROR");
        if let Some(error_type) = &span.error_type {
            let _ = write!(text, " {}", clean(error_type));
        }
        if let Some(message) = &span.status_message
            && span.error_type.as_ref() != Some(message)
        {
            let _ = write!(text, " \"{}\"", clean(message));
        }
        parts.push(paint.paint(Style::Red, &text));
    }
    if let Some((attempt, inferred)) = retry {
        let mut text = String::from("retry");
        if let Some(attempt) = attempt {
            let _ = write!(text, " #{attempt}");
        }
        if inferred {
            text.push_str(" (inferred)");
        }
        parts.push(paint.paint(Style::Yellow, &text));
    }
    match &placed.orphan {
        Some(Orphan::MissingParent(parent_id)) => parts.push(paint.paint(
            Style::Yellow,
            &format!("orphan: parent {} not in trace", clean(parent_id)),
        )),
        Some(Orphan::Cycle) => parts.push(paint.paint(Style::Yellow, "orphan: parent cycle")),
        None => {}
    }
    parts.push(paint.paint(Style::Dim, &clean(&span.span_id)));
    parts
}

fn decision_text(decision: &DecisionRow, paint: Paint) -> String {
    let verdict = decision.verdict.as_deref().unwrap_or("?");
    let (marker, style) = verdict_style(verdict);
    let mut parts = vec![paint.paint(style, &format!("{marker} {:<8}", clean(verdict)))];
    for (key, value) in [
        ("kind", &decision.kind),
        ("policy", &decision.policy_id),
        ("risk", &decision.risk),
        ("context", &decision.context_source),
        ("action", &decision.action),
    ] {
        if let Some(value) = value {
            key_value(&mut parts, key, value, paint);
        }
    }
    if let Some(reasoning) = &decision.reasoning {
        parts.push(format!("\"{}\"", clean(reasoning)));
    }
    if let Some(status) = &decision.approval_status {
        let style = match status.as_str() {
            "approved" => Style::Green,
            "rejected" => Style::Red,
            _ => Style::Yellow,
        };
        let mut text = format!("→ {}", clean(status));
        if let Some(latency) = decision.approval_latency_ms {
            let _ = write!(text, " after {}", format_duration((latency * 1e6) as i64));
        }
        parts.push(paint.paint(style, &text));
    }
    parts.join(" ")
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Draws one trace; `color` adds ANSI styles.
pub(crate) fn trace(rows: &TraceRows, color: bool) -> String {
    let paint = Paint { enabled: color };
    let spans = &rows.spans;
    let axis = Axis::of(spans);
    let placed = place(spans);

    let tool_calls: HashMap<&str, &ToolCallRow> = rows
        .tool_calls
        .iter()
        .flatten()
        .map(|call| (call.span_id.as_str(), call))
        .collect();
    let retries: Vec<Option<Retry>> = spans
        .iter()
        .map(|span| retry_of(span, tool_calls.get(span.span_id.as_str()).copied()))
        .collect();
    // Decisions under the first drawn span with their span id, in time order.
    let mut decisions: BTreeMap<usize, Vec<&DecisionRow>> = BTreeMap::new();
    let mut unplaced: Vec<&DecisionRow> = Vec::new();
    let mut drawn_with_id: HashMap<&str, usize> = HashMap::new();
    for (position, placed) in placed.iter().enumerate() {
        drawn_with_id
            .entry(spans[placed.index].span_id.as_str())
            .or_insert(position);
    }
    for decision in rows.decisions.iter().flatten() {
        match drawn_with_id.get(decision.span_id.as_str()) {
            Some(&position) => decisions.entry(position).or_default().push(decision),
            None => unplaced.push(decision),
        }
    }
    for list in decisions.values_mut() {
        list.sort_by_key(|decision| decision.time_ns);
    }

    let mut out = String::new();
    // Header: what, when, how big.
    let _ = writeln!(
        out,
        "{} {}  {}  {}  started {}",
        paint.paint(Style::Bold, "trace"),
        paint.paint(Style::Bold, &rows.trace_id),
        plural(spans.len(), "span", "spans"),
        format_duration(axis.length_ns),
        format_time(axis.start_ns)
    );
    let mut summary = Vec::new();
    let mut services: Vec<&str> = spans
        .iter()
        .filter_map(|span| span.service_name.as_deref())
        .collect();
    services.sort_unstable();
    services.dedup();
    if !services.is_empty() {
        key_value(&mut summary, "services", &services.join(","), paint);
    }
    if let Some(session) = spans.iter().find_map(|span| span.session_id.as_deref()) {
        key_value(&mut summary, "session", session, paint);
    }
    // A side no span reports is `-`, as on the span lines, not 0.
    let total = |side: fn(&SpanRow) -> Option<i64>| {
        spans
            .iter()
            .filter_map(side)
            .fold(None, |sum: Option<i64>, count| {
                Some(sum.unwrap_or(0) + count)
            })
    };
    let (input, output) = (
        total(|span| span.input_tokens),
        total(|span| span.output_tokens),
    );
    if input.is_some() || output.is_some() {
        key_value(&mut summary, "tokens", &tokens_text(input, output), paint);
    }
    let errors = spans.iter().filter(|span| is_error(span)).count();
    if errors > 0 {
        summary.push(paint.paint(Style::Red, &plural(errors, "error", "errors")));
    }
    let retried = retries.iter().flatten().count();
    if retried > 0 {
        summary.push(paint.paint(Style::Yellow, &plural(retried, "retry", "retries")));
    }
    if let Some(all) = &rows.decisions
        && !all.is_empty()
    {
        let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
        for decision in all {
            *verdicts
                .entry(decision.verdict.as_deref().unwrap_or("?"))
                .or_default() += 1;
        }
        let counts: Vec<String> = verdicts
            .iter()
            .map(|(verdict, count)| format!("{count} {}", clean(verdict)))
            .collect();
        summary.push(format!(
            "{} ({})",
            plural(all.len(), "decision", "decisions"),
            counts.join(", ")
        ));
    }
    if !summary.is_empty() {
        let _ = writeln!(out, "{}", summary.join("  "));
    }
    out.push('\n');

    // Ruler: where the bar's ends are in time.
    let end_label = format_duration(axis.length_ns);
    let _ = writeln!(
        out,
        "{}",
        paint.paint(
            Style::Dim,
            &format!("[0{end_label:>width$}]", width = BAR_WIDTH - 1)
        )
    );

    for (position, placed_span) in placed.iter().enumerate() {
        let span = &spans[placed_span.index];
        let parent = placed_span.parent.map(|parent| &spans[parent]);
        let error = is_error(span);
        let bar_style = if error { Style::Red } else { Style::Cyan };
        let name = clean(&span.name);
        let name = if error {
            paint.paint(Style::Red, &name)
        } else if placed_span.prefix.is_empty() {
            paint.paint(Style::Bold, &name)
        } else {
            name.into_owned()
        };
        let details = span_details(span, parent, placed_span, retries[placed_span.index], paint);
        let head = format!(
            "{} {:>width$}  ",
            bar(axis, span, bar_style, paint),
            format_duration(span.duration_ns),
            width = DURATION_WIDTH
        );
        debug_assert!(color || head.chars().count() == TREE_COLUMN, "{head:?}");
        let _ = writeln!(
            out,
            "{head}{}{}  {}",
            paint.paint(Style::Dim, &placed_span.prefix),
            name,
            details.join("  "),
        );
        for decision in decisions.get(&position).into_iter().flatten() {
            let verdict = decision.verdict.as_deref().unwrap_or("?");
            let _ = writeln!(
                out,
                "{} {:width$}  {}{}",
                mark(axis, decision.time_ns, verdict_style(verdict).1, paint),
                "",
                paint.paint(Style::Dim, &placed_span.below),
                decision_text(decision, paint),
                width = DURATION_WIDTH
            );
        }
    }
    if !unplaced.is_empty() {
        let _ = writeln!(out, "\ndecisions on spans not in this trace:");
        for decision in unplaced {
            let _ = writeln!(
                out,
                "  {}  {}",
                paint.paint(Style::Dim, &clean(&decision.span_id)),
                decision_text(decision, paint)
            );
        }
    }
    let missing: Vec<&str> = [
        ("decisions", rows.decisions.is_none()),
        ("tool_calls", rows.tool_calls.is_none()),
    ]
    .into_iter()
    .filter_map(|(view, missing)| missing.then_some(view))
    .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            paint.paint(
                Style::Dim,
                &format!(
                    "\n(no {} view in this store: decisions and inferred retries are not shown)",
                    missing.join(" or ")
                )
            )
        );
    }
    out
}

fn outcome_style(outcome: &str) -> Option<Style> {
    match outcome {
        "success" => Some(Style::Green),
        "error" => Some(Style::Red),
        "refused" => Some(Style::Yellow),
        _ => None,
    }
}

/// Lists the runs of a session, oldest first, with a summary line.
pub(crate) fn session(session_id: &str, runs: &[RunRow], color: bool) -> String {
    let paint = Paint { enabled: color };
    let mut runs: Vec<&RunRow> = runs.iter().collect();
    runs.sort_by(|a, b| (a.start_ns, &a.trace_id).cmp(&(b.start_ns, &b.trace_id)));
    let count =
        |value: Option<i64>| value.map_or_else(|| "-".to_owned(), |value| value.to_string());

    const HEADERS: [&str; 10] = [
        "start", "trace_id", "agent", "outcome", "duration", "llm", "tools", "errors", "denials",
        "tokens",
    ];
    // Right-aligned columns: the numbers.
    const RIGHT: [bool; 10] = [
        false, false, false, false, true, true, true, true, true, true,
    ];
    let mut table: Vec<[String; 10]> = Vec::with_capacity(runs.len() + 1);
    table.push(HEADERS.map(str::to_owned));
    for run in &runs {
        table.push([
            format_time(run.start_ns),
            clean(&run.trace_id).into_owned(),
            clean(run.agent_name.as_deref().unwrap_or("-")).into_owned(),
            clean(run.outcome.as_deref().unwrap_or("-")).into_owned(),
            format_duration(run.duration_ns),
            count(run.llm_calls),
            count(run.tool_calls),
            count(run.errors),
            count(run.denials),
            tokens_text(run.input_tokens, run.output_tokens),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    let first = runs.first().map_or(0, |run| run.start_ns);
    let last_end = runs
        .iter()
        .map(|run| run.start_ns.saturating_add(run.duration_ns.max(0)))
        .max()
        .unwrap_or(first);
    let _ = writeln!(
        out,
        "{} {}  {}  {} → {}\n",
        paint.paint(Style::Bold, "session"),
        paint.paint(Style::Bold, &clean(session_id)),
        plural(runs.len(), "run", "runs"),
        format_time(first),
        format_time(last_end)
    );
    for (row_number, row) in table.iter().enumerate() {
        let mut cells = Vec::with_capacity(row.len());
        for (column, cell) in row.iter().enumerate() {
            let padding = " ".repeat(widths[column] - cell.chars().count());
            let padded = if RIGHT[column] {
                format!("{padding}{cell}")
            } else {
                format!("{cell}{padding}")
            };
            let style = if row_number == 0 {
                Some(Style::Dim)
            } else {
                match column {
                    3 => outcome_style(cell),
                    7 if cell != "0" && cell != "-" => Some(Style::Red),
                    8 if cell != "0" && cell != "-" => Some(Style::Yellow),
                    _ => None,
                }
            };
            cells.push(match style {
                Some(style) => paint.paint(style, &padded),
                None => padded,
            });
        }
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }

    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        *outcomes
            .entry(run.outcome.as_deref().unwrap_or("unknown"))
            .or_default() += 1;
    }
    let outcomes: Vec<String> = outcomes
        .iter()
        .map(|(outcome, runs)| {
            let text = format!("{runs} {}", clean(outcome));
            match outcome_style(outcome) {
                Some(style) => paint.paint(style, &text),
                None => text,
            }
        })
        .collect();
    let sum =
        |field: fn(&RunRow) -> Option<i64>| runs.iter().filter_map(|run| field(run)).sum::<i64>();
    let total_ns: i64 = runs.iter().map(|run| run.duration_ns.max(0)).sum();
    let _ = writeln!(
        out,
        "\n{}: {}  llm calls {}  tool calls {}  errors {}  denials {}  tokens {}/{}  run time {}",
        plural(runs.len(), "run", "runs"),
        outcomes.join(", "),
        sum(|run| run.llm_calls),
        sum(|run| run.tool_calls),
        sum(|run| run.errors),
        sum(|run| run.denials),
        sum(|run| run.input_tokens),
        sum(|run| run.output_tokens),
        format_duration(total_ns)
    );
    out
}
