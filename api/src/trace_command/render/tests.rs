use super::*;

/// 2026-11-01T00:00:00Z, the testdata base time.
const T0: i64 = 1_793_491_200_000_000_000;

fn span(id: &str, parent: Option<&str>, start: i64, duration: i64) -> SpanRow {
    SpanRow {
        span_id: id.to_owned(),
        parent_span_id: parent.map(str::to_owned),
        name: format!("span {id}"),
        start_ns: T0 + start,
        duration_ns: duration,
        status_code: "unset".to_owned(),
        ..SpanRow::default()
    }
}

fn rows(spans: Vec<SpanRow>) -> TraceRows {
    TraceRows {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
        spans,
        decisions: Some(Vec::new()),
        tool_calls: Some(Vec::new()),
    }
}

/// The span lines of a drawing: (tree prefix, span name), by the span id that ends each line.
fn tree_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| line.starts_with('[') && line.contains("span "))
        .map(|line| {
            let tree: String = line.chars().skip(TREE_COLUMN).collect();
            let name_at = tree.find("span ").unwrap();
            let name = tree[name_at..].split("  ").next().unwrap().to_owned();
            (tree[..name_at].to_owned(), name)
        })
        .collect()
}

fn line_of<'a>(text: &'a str, needle: &str) -> (usize, &'a str) {
    text.lines()
        .enumerate()
        .find(|(_, line)| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
}

#[test]
fn children_are_ordered_by_start_time_and_indented_three_per_level() {
    let text = trace(
        &rows(vec![
            span("a", Some("r"), 200, 50),
            span("a1", Some("a"), 210, 10),
            span("r", None, 0, 300),
            span("b", Some("r"), 100, 50),
            span("b1", Some("b"), 110, 5),
            span("b2", Some("b"), 105, 5),
        ]),
        false,
    );
    let expected = [
        ("", "span r"),
        ("├─ ", "span b"),
        ("│  ├─ ", "span b2"),
        ("│  └─ ", "span b1"),
        ("└─ ", "span a"),
        ("   └─ ", "span a1"),
    ];
    let found = tree_lines(&text);
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(prefix, name)| (prefix.as_str(), name.as_str()))
        .collect();
    assert_eq!(found, expected, "\n{text}");
}

#[test]
fn a_whole_trace_draws_as_documented() {
    let mut root = span("00000000000000r0", None, 0, 3_000_000_000);
    root.name = "invoke_agent triage".to_owned();
    root.service_name = Some("support-agent-0".to_owned());
    root.operation = Some("invoke_agent".to_owned());
    root.agent_name = Some("triage".to_owned());
    root.session_id = Some("sess_1".to_owned());
    let mut chat = span(
        "00000000000000c1",
        Some("00000000000000r0"),
        0,
        1_000_000_000,
    );
    chat.name = "chat gpt-4o".to_owned();
    chat.service_name = Some("support-agent-0".to_owned());
    chat.operation = Some("chat".to_owned());
    chat.agent_name = Some("triage".to_owned());
    chat.provider = Some("openai".to_owned());
    chat.request_model = Some("gpt-4o".to_owned());
    chat.response_model = Some("gpt-4o-2024-08-06".to_owned());
    chat.input_tokens = Some(1200);
    chat.output_tokens = Some(45);
    let mut tool = span(
        "00000000000000t1",
        Some("00000000000000r0"),
        1_500_000_000,
        1_500_000_000,
    );
    tool.name = "execute_tool refund".to_owned();
    tool.service_name = Some("support-agent-0".to_owned());
    tool.operation = Some("execute_tool".to_owned());
    tool.agent_name = Some("triage".to_owned());
    tool.tool_name = Some("refund".to_owned());
    tool.tool_risk = Some("write".to_owned());
    tool.status_code = "error".to_owned();
    tool.error_type = Some("PaymentDeclined".to_owned());
    tool.status_message = Some("card declined".to_owned());
    tool.retry_attempt = Some(1);
    let mut data = rows(vec![root, chat, tool]);
    data.decisions = Some(vec![DecisionRow {
        span_id: "00000000000000t1".to_owned(),
        time_ns: Some(T0 + 1_600_000_000),
        kind: Some("policy".to_owned()),
        verdict: Some("deny".to_owned()),
        policy_id: Some("payments.limit".to_owned()),
        risk: Some("write".to_owned()),
        reasoning: Some("over the limit".to_owned()),
        ..DecisionRow::default()
    }]);
    let text = trace(&data, false);
    let expected = "\
trace 4bf92f3577b34da6a3ce929d0e0e4736  3 spans  3.00s  started 2026-11-01T00:00:00.000Z
services=support-agent-0  session=sess_1  tokens=1200/45  1 error  1 retry  1 decision (1 deny)

[0                        3.00s]
[██████████████████████████████]   3.00s  invoke_agent triage  service=support-agent-0  agent=triage  00000000000000r0
[██████████                    ]   1.00s  ├─ chat gpt-4o  model=openai/gpt-4o → gpt-4o-2024-08-06  tokens=1200/45  00000000000000c1
[               ███████████████]   1.50s  └─ execute_tool refund  tool=refund  risk=write  ERROR PaymentDeclined \"card declined\"  retry #1  00000000000000t1
[                ◆             ]                ✗ deny     kind=policy policy=payments.limit risk=write \"over the limit\"
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn spans_whose_parent_is_missing_are_top_level_orphans_in_start_order() {
    let text = trace(
        &rows(vec![
            span("late", Some("gone"), 50, 10),
            span("r", None, 10, 100),
            span("early", Some("gone"), 0, 5),
            span("child", Some("late"), 55, 1),
        ]),
        false,
    );
    let found = tree_lines(&text);
    let names: Vec<&str> = found.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(
        names,
        ["span early", "span r", "span late", "span child"],
        "\n{text}"
    );
    assert_eq!(found[0].0, "");
    assert_eq!(found[2].0, "");
    assert_eq!(found[3].0, "└─ ");
    let (_, early) = line_of(&text, "span early");
    assert!(
        early.contains("orphan: parent gone not in trace"),
        "{early}"
    );
    let (_, root) = line_of(&text, "span r ");
    assert!(!root.contains("orphan"), "{root}");
    let (_, child) = line_of(&text, "span child");
    assert!(!child.contains("orphan"), "{child}");
}

#[test]
fn parent_cycles_and_self_parents_still_draw_every_span_once() {
    let data = rows(vec![
        span("a", Some("b"), 10, 10),
        span("b", Some("a"), 20, 10),
        span("c", Some("b"), 0, 10),
        span("s", Some("s"), 5, 1),
    ]);
    let text = trace(&data, false);
    for id in ["span a", "span b", "span c", "span s"] {
        assert_eq!(
            text.matches(&format!("{id}  ")).count(),
            1,
            "{id} once in\n{text}"
        );
    }
    let (_, s) = line_of(&text, "span s ");
    assert!(s.contains("orphan: parent cycle"), "{s}");
    // The cycle is cut at a span on it: c (earliest) hangs under b, not at the top.
    let found = tree_lines(&text);
    let c = found.iter().find(|(_, name)| name == "span c").unwrap();
    assert!(!c.0.is_empty(), "{text}");
}

#[test]
fn spans_sharing_an_id_are_all_drawn_and_children_hang_under_the_first() {
    let text = trace(
        &rows(vec![
            span("r", None, 0, 100),
            span("d", Some("r"), 10, 10),
            span("d", Some("r"), 30, 10),
            span("k", Some("d"), 12, 1),
        ]),
        false,
    );
    let found = tree_lines(&text);
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(prefix, name)| (prefix.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("", "span r"),
            ("├─ ", "span d"),
            ("│  └─ ", "span k"),
            ("└─ ", "span d"),
        ],
        "\n{text}"
    );
}

#[test]
fn bars_are_placed_relative_to_the_trace_start_with_a_fixed_width() {
    // 300 ns over 30 cells: 10 ns a cell.
    let data = rows(vec![
        span("r", None, 0, 300),
        span("m", Some("r"), 100, 50),
        span("z", Some("r"), 299, 0),
        span("p", Some("r"), 101, 2),
    ]);
    let text = trace(&data, false);
    let bar_of = |id: &str| -> String {
        let (_, line) = line_of(&text, &format!("span {id}  "));
        line.chars().take(BAR_WIDTH + 2).collect()
    };
    assert_eq!(bar_of("r"), format!("[{}]", "█".repeat(30)));
    assert_eq!(
        bar_of("m"),
        format!("[{}{}{}]", " ".repeat(10), "█".repeat(5), " ".repeat(15))
    );
    // Shorter than a cell still shows one; the last instant lands in the last cell.
    assert_eq!(
        bar_of("p"),
        format!("[{}█{}]", " ".repeat(10), " ".repeat(19))
    );
    assert_eq!(bar_of("z"), format!("[{}█]", " ".repeat(29)));
    for line in text.lines().filter(|line| line.starts_with('[')) {
        assert_eq!(line.chars().nth(BAR_WIDTH + 1), Some(']'), "{line}");
    }
}

#[test]
fn a_trace_of_zero_length_and_negative_durations_draw() {
    let text = trace(
        &rows(vec![span("r", None, 0, 0), span("n", Some("r"), 0, -5)]),
        false,
    );
    let (_, line) = line_of(&text, "span n");
    assert!(
        line.starts_with(&format!("[█{}]", " ".repeat(29))),
        "{line}"
    );
    assert!(line.contains(" 0ns  "), "{line}");
}

#[test]
fn the_header_token_total_marks_a_side_no_span_reports() {
    let mut chat = span("c", Some("r"), 10, 10);
    chat.input_tokens = Some(101);
    let mut other = span("d", Some("r"), 20, 10);
    other.input_tokens = Some(9);
    let text = trace(&rows(vec![span("r", None, 0, 100), chat, other]), false);
    let header = text
        .lines()
        .find(|line| !line.starts_with('[') && line.contains("tokens="))
        .unwrap_or_default();
    assert!(header.contains("tokens=110/-"), "{header}");
    let (_, line) = line_of(&text, "span c");
    assert!(line.contains("tokens=101/-"), "{line}");
}

#[test]
fn colors_only_when_asked() {
    let mut failed = span("f", Some("r"), 10, 10);
    failed.status_code = "error".to_owned();
    let data = rows(vec![span("r", None, 0, 100), failed]);
    let plain = trace(&data, false);
    assert!(!plain.contains('\x1b'), "{plain}");
    assert!(plain.contains("ERROR"));
    let colored = trace(&data, true);
    assert!(colored.contains("\x1b[31mERROR\x1b[0m"), "{colored:?}");
    // Colors never shift the columns: stripped of escapes, the text is the plain text.
    assert_eq!(strip_ansi(&colored), plain);
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(character) = chars.next() {
        if character == '\x1b' {
            for inner in chars.by_ref() {
                if inner == 'm' {
                    break;
                }
            }
        } else {
            out.push(character);
        }
    }
    out
}

#[test]
fn decisions_are_drawn_under_the_span_they_gate_in_time_order() {
    let mut data = rows(vec![
        span("r", None, 0, 300),
        span("t", Some("r"), 100, 100),
        span("u", Some("t"), 150, 10),
        span("v", Some("r"), 250, 10),
    ]);
    let decision = |verdict: &str, time: i64| DecisionRow {
        span_id: "t".to_owned(),
        time_ns: Some(T0 + time),
        verdict: Some(verdict.to_owned()),
        ..DecisionRow::default()
    };
    data.decisions = Some(vec![
        DecisionRow {
            approval_status: Some("approved".to_owned()),
            approval_latency_ms: Some(12_300.0),
            reasoning: Some("needs a human".to_owned()),
            ..decision("escalate", 140)
        },
        decision("warn", 120),
    ]);
    let text = trace(&data, false);
    let lines: Vec<&str> = text.lines().collect();
    let (t, _) = line_of(&text, "span t ");
    assert!(lines[t + 1].contains("! warn "), "{text}");
    assert!(
        lines[t + 2].contains("? escalate \"needs a human\" → approved after 12.3s"),
        "{text}"
    );
    assert!(lines[t + 3].contains("span u"), "{text}");
    // The decision lines continue t's tree: t has a sibling below (│) and a child (│).
    let tree: String = lines[t + 1].chars().skip(TREE_COLUMN).take(6).collect();
    assert_eq!(tree, "│  │  ", "{text}");
    // The ◆ sits where the decision was taken: 120 ns of 300 is cell 12.
    assert_eq!(lines[t + 1].chars().position(|c| c == '◆'), Some(1 + 12));
}

#[test]
fn decisions_on_unknown_spans_are_listed_after_the_tree() {
    let mut data = rows(vec![span("r", None, 0, 10)]);
    data.decisions = Some(vec![DecisionRow {
        span_id: "elsewhere".to_owned(),
        verdict: Some("deny".to_owned()),
        ..DecisionRow::default()
    }]);
    let text = trace(&data, false);
    assert!(
        text.contains("decisions on spans not in this trace:\n  elsewhere  ✗ deny"),
        "{text}"
    );
}

#[test]
fn retries_are_marked_explicit_or_inferred() {
    let mut explicit = span("e", Some("r"), 10, 10);
    explicit.retry_attempt = Some(2);
    let mut first_try = span("f", Some("r"), 5, 1);
    first_try.retry_attempt = Some(0);
    let mut data = rows(vec![
        span("r", None, 0, 100),
        first_try,
        explicit,
        span("i", Some("r"), 30, 10),
        span("n", Some("r"), 40, 10),
        span("h", Some("r"), 50, 10),
    ]);
    data.tool_calls = Some(vec![
        ToolCallRow {
            span_id: "i".to_owned(),
            attempt: Some(1),
            is_retry: true,
            retry_source: Some("inferred".to_owned()),
        },
        ToolCallRow {
            span_id: "n".to_owned(),
            attempt: Some(0),
            is_retry: false,
            retry_source: None,
        },
        // Its HTTP request was resent within the first attempt.
        ToolCallRow {
            span_id: "h".to_owned(),
            attempt: Some(0),
            is_retry: true,
            retry_source: Some("explicit".to_owned()),
        },
    ]);
    let text = trace(&data, false);
    assert!(line_of(&text, "span e").1.contains("retry #2  e"), "{text}");
    assert!(
        line_of(&text, "span i").1.contains("retry #1 (inferred)"),
        "{text}"
    );
    assert!(!line_of(&text, "span f").1.contains("retry"), "{text}");
    assert!(!line_of(&text, "span n").1.contains("retry"), "{text}");
    assert!(line_of(&text, "span h").1.contains("retry  h"), "{text}");
    assert!(text.lines().nth(1).unwrap().contains("3 retries"), "{text}");
}

#[test]
fn service_and_agent_are_shown_where_they_change_and_op_where_the_name_hides_it() {
    let mut root = span("r", None, 0, 100);
    root.service_name = Some("front".to_owned());
    root.agent_name = Some("planner".to_owned());
    let mut same = span("s", Some("r"), 10, 10);
    same.service_name = Some("front".to_owned());
    same.agent_name = Some("planner".to_owned());
    same.operation = Some("chat".to_owned());
    same.name = "chat gpt-4o".to_owned();
    let mut other = span("o", Some("r"), 20, 10);
    other.service_name = Some("back".to_owned());
    other.agent_name = Some("worker".to_owned());
    other.operation = Some("chat".to_owned());
    other.name = "span o ChatCompletion".to_owned();
    let text = trace(&rows(vec![root, same, other]), false);
    let (_, root) = line_of(&text, "span r ");
    assert!(root.contains("service=front  agent=planner"), "{root}");
    let (_, same) = line_of(&text, "chat gpt-4o");
    assert!(
        !same.contains("service=") && !same.contains("agent=") && !same.contains("op="),
        "{same}"
    );
    let (_, other) = line_of(&text, "ChatCompletion");
    assert!(
        other.contains("service=back  op=chat  agent=worker"),
        "{other}"
    );
}

#[test]
fn the_requested_model_is_shown_where_the_response_names_another() {
    let model = |request: Option<&str>, response: Option<&str>, provider: Option<&str>| {
        let mut call = span("c", None, 0, 10);
        call.request_model = request.map(str::to_owned);
        call.response_model = response.map(str::to_owned);
        call.provider = provider.map(str::to_owned);
        let text = trace(&rows(vec![call]), false);
        let (_, line) = line_of(&text, "span c ");
        line.split("  ")
            .find_map(|part| part.strip_prefix("model="))
            .map(str::to_owned)
    };
    assert_eq!(
        model(Some("gpt-4o"), Some("gpt-4o-2024-08-06"), Some("openai")).as_deref(),
        Some("openai/gpt-4o → gpt-4o-2024-08-06")
    );
    assert_eq!(
        model(Some("claude-3-5-sonnet"), Some("claude-3-5-haiku"), None).as_deref(),
        Some("claude-3-5-sonnet → claude-3-5-haiku")
    );
    assert_eq!(
        model(Some("gpt-4o"), Some("gpt-4o"), Some("openai")).as_deref(),
        Some("openai/gpt-4o")
    );
    assert_eq!(model(Some("gpt-4o"), None, None).as_deref(), Some("gpt-4o"));
    assert_eq!(
        model(None, Some("gpt-4o-mini"), None).as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(model(None, None, Some("openai")), None);
    // Telemetry text in either name is cleaned.
    assert_eq!(
        model(Some("a\x1b[31m"), Some("b"), None).as_deref(),
        Some("a\\u{1b}[31m → b")
    );
}

#[test]
fn telemetry_text_cannot_drive_the_terminal() {
    let mut evil = span("r", None, 0, 10);
    evil.name = "pwn\x1b[2J\nnext".to_owned();
    evil.status_message = Some("bad\rline".to_owned());
    evil.status_code = "error".to_owned();
    let text = trace(&rows(vec![evil]), false);
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
    assert!(text.contains("pwn\\u{1b}[2J\\nnext"), "{text}");
    assert_eq!(clean("plain"), Cow::Borrowed("plain"));
}

#[test]
fn a_note_says_when_the_views_are_missing() {
    let mut data = rows(vec![span("r", None, 0, 10)]);
    assert!(!trace(&data, false).contains("view in this store"));
    data.decisions = None;
    data.tool_calls = None;
    let text = trace(&data, false);
    assert!(
        text.contains("(no decisions or tool_calls view in this store"),
        "{text}"
    );
}

#[test]
fn deep_traces_draw_without_recursion() {
    let depth = 5_000usize;
    let mut spans = vec![span("s0", None, 0, 10_000)];
    for level in 1..depth {
        spans.push(span(
            &format!("s{level}"),
            Some(&format!("s{}", level - 1)),
            level as i64,
            1,
        ));
    }
    let text = trace(&rows(spans), false);
    let found = tree_lines(&text);
    assert_eq!(found.len(), depth);
    for (level, (prefix, name)) in found.iter().enumerate() {
        assert_eq!(name, &format!("span s{level}"));
        assert_eq!(prefix.chars().count(), 3 * level);
    }
}

#[test]
fn durations_have_three_significant_digits_in_seven_columns() {
    for (ns, text) in [
        (-5, "0ns"),
        (0, "0ns"),
        (999, "999ns"),
        (1_000, "1.00µs"),
        (12_345, "12.3µs"),
        (999_499, "999µs"),
        (999_500, "1.00ms"),
        (412_000_000, "412ms"),
        (3_210_000_000, "3.21s"),
        (59_949_000_000, "59.9s"),
        (59_950_000_000, "0m59s"),
        (125_000_000_000, "2m05s"),
        (3_720_000_000_000, "1h02m"),
        (i64::MAX, "2562047h47m"),
    ] {
        assert_eq!(format_duration(ns), text, "{ns}");
    }
    for ns in [
        1,
        1_234,
        99_949,
        99_950_000,
        9_994_999_999,
        3_599_999_999_999,
    ] {
        assert!(
            format_duration(ns).chars().count() <= DURATION_WIDTH,
            "{ns}"
        );
    }
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_time(T0), "2026-11-01T00:00:00.000Z");
    assert_eq!(
        format_time(T0 + 86_399_999_999_999),
        "2026-11-01T23:59:59.999Z"
    );
    // 2024-02-29T12:00:00Z, a leap day.
    assert_eq!(
        format_time(1_709_208_000_000_000_000),
        "2024-02-29T12:00:00.000Z"
    );
    assert_eq!(format_time(-1_000_000), "1969-12-31T23:59:59.999Z");
}

fn run(trace_id: &str, start: i64, outcome: &str) -> RunRow {
    RunRow {
        trace_id: trace_id.to_owned(),
        start_ns: T0 + start,
        agent_name: Some("triage".to_owned()),
        outcome: Some(outcome.to_owned()),
        duration_ns: 2_000_000_000,
        llm_calls: Some(3),
        tool_calls: Some(2),
        errors: Some(if outcome == "error" { 1 } else { 0 }),
        denials: Some(0),
        input_tokens: Some(1000),
        output_tokens: Some(100),
    }
}

#[test]
fn a_session_lists_its_runs_oldest_first_with_a_summary() {
    let runs = vec![
        run("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 60_000_000_000, "error"),
        run("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0, "success"),
        RunRow {
            agent_name: None,
            llm_calls: None,
            ..run(
                "cccccccccccccccccccccccccccccccc",
                120_000_000_000,
                "refused",
            )
        },
    ];
    let text = session("sess_1", &runs, false);
    let expected = "\
session sess_1  3 runs  2026-11-01T00:00:00.000Z → 2026-11-01T00:02:02.000Z

start                     trace_id                          agent   outcome  duration  llm  tools  errors  denials    tokens
2026-11-01T00:00:00.000Z  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  triage  success     2.00s    3      2       0        0  1000/100
2026-11-01T00:01:00.000Z  bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  triage  error       2.00s    3      2       1        0  1000/100
2026-11-01T00:02:00.000Z  cccccccccccccccccccccccccccccccc  -       refused     2.00s    -      2       0        0  1000/100

3 runs: 1 error, 1 refused, 1 success  llm calls 6  tool calls 6  errors 1  denials 0  tokens 3000/300  run time 6.00s
";
    assert_eq!(text, expected, "\n{text}");
    let colored = session("sess_1", &runs, true);
    assert!(colored.contains("\x1b[32msuccess\x1b[0m"), "{colored:?}");
    assert!(colored.contains("\x1b[31merror  \x1b[0m"), "{colored:?}");
    assert_eq!(strip_ansi(&colored), text);
}
