//! Redaction of attribute values at ingest, before anything is written (the WAL included).
//!
//! A [`RedactionRule`] applies to every attribute (span, event, link, resource and scope
//! attributes) whose key matches one of its key patterns (`*` = any run of characters, `?` =
//! one character), and to every string inside that attribute's value (array elements and
//! key-value list values too):
//!
//! - `drop`: the attribute is removed;
//! - detectors and/or regexes: each match inside a string becomes `[REDACTED:<rule name>]`
//!   (a regex with a capture group named `secret` replaces only that group);
//! - neither: the whole string becomes `[REDACTED:<rule name>]`.
//!
//! Built-in detectors: `email`, `api_key` (OpenAI/Anthropic `sk-…`, AWS `AKIA…`, GitHub
//! `ghp_…`/`gho_…`/…, Slack `xox?-…`, Google `AIza…`, and long secrets after `key=`,
//! `secret=`, `token=`, `password=`), `bearer` (the token after `Bearer `) and `credit_card`
//! (13 to 19 digits, spaces or dashes between, Luhn-checked).

use std::borrow::Cow;
use std::fmt;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use regex::Regex;

use crate::error::{Error, Result};

/// A built-in detector of secrets inside strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detector {
    /// E-mail addresses.
    Email,
    /// API keys of common vendors and long secrets after `key=`-like prefixes.
    ApiKey,
    /// `Bearer <token>` (the token is replaced).
    Bearer,
    /// Payment card numbers (Luhn-checked).
    CreditCard,
}

impl Detector {
    /// Parses a detector name: `email`, `api_key`, `bearer`, `credit_card`.
    pub fn from_name(name: &str) -> Option<Detector> {
        Some(match name {
            "email" => Detector::Email,
            "api_key" => Detector::ApiKey,
            "bearer" => Detector::Bearer,
            "credit_card" => Detector::CreditCard,
            _ => return None,
        })
    }

    /// The detector's name.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::ApiKey => "api_key",
            Detector::Bearer => "bearer",
            Detector::CreditCard => "credit_card",
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            Detector::Email => {
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
            }
            Detector::ApiKey => concat!(
                r"\b(?:sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{16,}",
                r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
                r"|gh[pousr]_[A-Za-z0-9]{30,}",
                r"|github_pat_[A-Za-z0-9_]{30,}",
                r"|xox[abposr]-[A-Za-z0-9\-]{10,}",
                r"|AIza[0-9A-Za-z_\-]{35})",
                r"|(?i:(?:api[_\-]?key|secret|token|password|passwd|key)[\x22']?\s*[=:]\s*[\x22']?)",
                r"(?P<secret>[A-Za-z0-9+/_\-]{16,}={0,2})"
            ),
            Detector::Bearer => r"(?i:bearer)\s+(?P<secret>[A-Za-z0-9._~+/\-]+=*)",
            Detector::CreditCard => r"\b\d(?:[ \-]?\d){12,18}\b",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A redaction rule as configured: plain values, checked by [`RedactionRule::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionRuleConfig {
    /// Rule name, shown in `[REDACTED:<name>]`.
    pub name: String,
    /// Attribute key patterns (`*`, `?` wildcards).
    pub keys: Vec<String>,
    /// Detector names.
    pub detectors: Vec<String>,
    /// Regular expressions (Rust `regex` syntax).
    pub regexes: Vec<String>,
    /// Remove matching attributes altogether.
    pub drop: bool,
}

/// A checked redaction rule.
#[derive(Debug, Clone)]
pub struct RedactionRule {
    name: String,
    keys: Vec<String>,
    detectors: Vec<Detector>,
    matchers: Vec<Matcher>,
    drop: bool,
}

#[derive(Debug, Clone)]
struct Matcher {
    regex: Regex,
    luhn: bool,
}

impl RedactionRule {
    /// Checks a configured rule: known detectors, valid regexes, at least one key pattern.
    pub fn new(config: &RedactionRuleConfig) -> Result<RedactionRule> {
        let bad = |problem: String| Error::Redaction {
            rule: config.name.clone(),
            problem,
        };
        if config.name.is_empty() {
            return Err(bad("the rule has no name".into()));
        }
        if config.keys.is_empty() {
            return Err(bad("the rule has no key patterns".into()));
        }
        let mut detectors = Vec::new();
        let mut matchers = Vec::new();
        for name in &config.detectors {
            let detector = Detector::from_name(name).ok_or_else(|| {
                bad(format!(
                    "unknown detector {name:?} (known: email, api_key, bearer, credit_card)"
                ))
            })?;
            detectors.push(detector);
            matchers.push(Matcher {
                regex: Regex::new(detector.pattern())
                    .map_err(|error| bad(format!("detector {name}: {error}")))?,
                luhn: detector == Detector::CreditCard,
            });
        }
        for pattern in &config.regexes {
            matchers.push(Matcher {
                regex: Regex::new(pattern)
                    .map_err(|error| bad(format!("regex {pattern:?}: {error}")))?,
                luhn: false,
            });
        }
        Ok(RedactionRule {
            name: config.name.clone(),
            keys: config.keys.clone(),
            detectors,
            matchers,
            drop: config.drop,
        })
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's detectors.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// True when the rule applies to attribute `key`.
    pub fn matches_key(&self, key: &str) -> bool {
        self.keys.iter().any(|pattern| glob_match(pattern, key))
    }

    /// `text` with this rule applied (a whole-value rule replaces everything).
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.matchers.is_empty() {
            return Cow::Owned(self.marker());
        }
        let mut current = Cow::Borrowed(text);
        for matcher in &self.matchers {
            // Most values match nothing: a plain search (which skips to the pattern's literals)
            // before the capturing pass and the marker.
            if !matcher.regex.is_match(&current) {
                continue;
            }
            if let Some(replaced) = replace_matches(&current, matcher, &self.marker()) {
                current = Cow::Owned(replaced);
            }
        }
        current
    }

    fn marker(&self) -> String {
        format!("[REDACTED:{}]", self.name)
    }
}

/// Replaces each match (or its `secret` group) with `marker`; `None` when nothing matched.
fn replace_matches(text: &str, matcher: &Matcher, marker: &str) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    for captures in matcher.regex.captures_iter(text) {
        let Some(whole) = captures.get(0) else {
            continue;
        };
        let target = captures.name("secret").unwrap_or(whole);
        if matcher.luhn && !luhn_valid(target.as_str()) {
            continue;
        }
        out.push_str(&text[last..target.start()]);
        out.push_str(marker);
        last = target.end();
    }
    if last == 0 && out.is_empty() {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// Luhn check of the digits in `text` (13 to 19 of them).
fn luhn_valid(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            if !index.is_multiple_of(2) {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `*` matches any run of characters (also empty), `?` exactly one; everything else itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    // Called for every attribute of every span: the common patterns without allocating.
    if pattern == "*" {
        return true;
    }
    if !pattern.contains(['*', '?']) {
        return pattern == text;
    }
    if pattern.is_ascii() && text.is_ascii() {
        return glob_match_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    glob_match_units(&pattern, &text, '*', '?')
}

/// [`glob_match`] over units (bytes of ASCII text, or chars).
fn glob_match_units<T: PartialEq + Copy>(pattern: &[T], text: &[T], star: T, one: T) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == one || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == star {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star_at, matched)) = backtrack {
            p = star_at + 1;
            t = matched + 1;
            backtrack = Some((star_at, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == star)
}

/// Applies `rules` to a list of attributes in place.
pub(crate) fn redact_attributes(rules: &[RedactionRule], attributes: &mut Vec<KeyValue>) {
    if rules.is_empty() {
        return;
    }
    attributes.retain_mut(|pair| {
        for rule in rules {
            if !rule.matches_key(&pair.key) {
                continue;
            }
            if rule.drop {
                return false;
            }
            if let Some(value) = pair.value.as_mut() {
                redact_value(rule, value);
            }
        }
        true
    });
}

fn redact_value(rule: &RedactionRule, value: &mut AnyValue) {
    use any_value::Value as V;
    match value.value.as_mut() {
        Some(V::StringValue(text)) => {
            if let Cow::Owned(redacted) = rule.redact(text) {
                *text = redacted;
            }
        }
        Some(V::ArrayValue(array)) => {
            for element in &mut array.values {
                redact_value(rule, element);
            }
        }
        Some(V::KvlistValue(list)) => {
            for pair in &mut list.values {
                if let Some(value) = pair.value.as_mut() {
                    redact_value(rule, value);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(detectors: &[&str], regexes: &[&str]) -> RedactionRule {
        RedactionRule::new(&RedactionRuleConfig {
            name: "r".into(),
            keys: vec!["*".into()],
            detectors: detectors.iter().map(|d| (*d).to_owned()).collect(),
            regexes: regexes.iter().map(|r| (*r).to_owned()).collect(),
            drop: false,
        })
        .unwrap()
    }

    #[test]
    fn each_detector_replaces_only_what_it_finds() {
        let cases = [
            (
                "email",
                "mail jane.doe+x@example.co.uk now",
                "mail [REDACTED:r] now",
            ),
            (
                "api_key",
                "use sk-proj-abcdefghijklmnop1234 ok",
                "use [REDACTED:r] ok",
            ),
            ("api_key", "aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:r]"),
            (
                "api_key",
                "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "gh [REDACTED:r]",
            ),
            (
                "api_key",
                "slack xoxb-1234567890-abcdef",
                "slack [REDACTED:r]",
            ),
            (
                "api_key",
                "url?api_key=0123456789abcdef0123&x=1",
                "url?api_key=[REDACTED:r]&x=1",
            ),
            (
                "bearer",
                "Authorization: Bearer eyJhbGciOi.J9.abc",
                "Authorization: Bearer [REDACTED:r]",
            ),
            (
                "credit_card",
                "card 4111 1111 1111 1111.",
                "card [REDACTED:r].",
            ),
            (
                "credit_card",
                "card 4111-1111-1111-1111",
                "card [REDACTED:r]",
            ),
        ];
        for (detector, input, expected) in cases {
            assert_eq!(rule(&[detector], &[]).redact(input), expected, "{detector}");
        }
        // Not Luhn-valid: an order number, not a card.
        assert_eq!(
            rule(&["credit_card"], &[]).redact("order 1234 5678 9012 3456"),
            "order 1234 5678 9012 3456"
        );
        assert_eq!(rule(&["email"], &[]).redact("no address"), "no address");
    }

    #[test]
    fn regexes_replace_matches_or_their_secret_group() {
        assert_eq!(
            rule(&[], &[r"ACCT-\d+"]).redact("a ACCT-1 b ACCT-22"),
            "a [REDACTED:r] b [REDACTED:r]"
        );
        assert_eq!(
            rule(&[], &[r"pin=(?P<secret>\d+)"]).redact("pin=1234;"),
            "pin=[REDACTED:r];"
        );
        assert_eq!(rule(&[], &[]).redact("anything"), "[REDACTED:r]");
    }

    #[test]
    fn bad_rules_are_named_in_the_error() {
        let error = RedactionRule::new(&RedactionRuleConfig {
            name: "mine".into(),
            keys: vec!["*".into()],
            detectors: vec!["phone".into()],
            ..RedactionRuleConfig::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("mine"), "{error}");
        let error = RedactionRule::new(&RedactionRuleConfig {
            name: "re".into(),
            keys: vec!["*".into()],
            regexes: vec!["(".into()],
            ..RedactionRuleConfig::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("re"), "{error}");
    }

    #[test]
    fn globs_match_keys() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match(
            "http.request.header.*",
            "http.request.header.authorization"
        ));
        assert!(glob_match("user.?d", "user.id"));
        assert!(glob_match("*.email", "user.email"));
        assert!(!glob_match("*.email", "user.emails"));
        assert!(!glob_match("db.*", "http.db"));
        // Exact patterns, and `?` is one character (not one byte) in non-ASCII keys.
        assert!(glob_match("user.email", "user.email"));
        assert!(!glob_match("user.email", "user.emai"));
        assert!(glob_match("n?me", "näme"));
        assert!(glob_match("*ä*", "bär"));
        assert!(!glob_match("n?me", "nääme"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn redact_leaves_clean_text_borrowed_and_marks_each_match() {
        let rule = rule(&["email"], &[]);
        assert!(matches!(rule.redact("no address here"), Cow::Borrowed(_)));
        assert_eq!(
            rule.redact("a@example.com and b@example.org"),
            "[REDACTED:r] and [REDACTED:r]"
        );
    }
}
