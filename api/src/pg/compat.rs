//! Spellings PostgreSQL clients send that Sightline SQL does not parse, rewritten to
//! equivalent SQL before the statement reaches the guard:
//! - psql's pattern matches `c.relname OPERATOR(pg_catalog.~) '^(spans)$' COLLATE
//!   pg_catalog.default` become `c.relname ~ '^(spans)$'` (our only collation is the default);
//! - Grafana's search-path subquery (`quote_ident(table_schema) IN (SELECT CASE WHEN trim(s[i])
//!   = '"$user"' ... generate_series(array_lower(string_to_array(current_setting('search_path'),
//!   ','),1), ...)`) becomes `quote_ident(table_schema) IN ('public')`: the search path is
//!   `public`, and that is what the subquery computes.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// `OPERATOR(pg_catalog.<op>)` around a regex or comparison operator.
static OPERATOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)OPERATOR\s*\(\s*pg_catalog\s*\.\s*([~!<>=*]+)\s*\)")
        .unwrap_or_else(|error| unreachable!("the pattern is valid: {error}"))
});

/// `COLLATE pg_catalog.default` (or `"default"`).
static COLLATE_DEFAULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\s+COLLATE\s+pg_catalog\s*\.\s*"?default"?"#)
        .unwrap_or_else(|error| unreachable!("the pattern is valid: {error}"))
});

/// Grafana's schema constraint (`buildSchemaConstraint` of its PostgreSQL data source), any
/// whitespace.
static GRAFANA_SEARCH_PATH: LazyLock<Regex> = LazyLock::new(|| {
    let text = r#"quote_ident ( table_schema ) IN ( SELECT CASE WHEN trim ( s [ i ] ) = '"$user"' THEN user ELSE trim ( s [ i ] ) END FROM generate_series ( array_lower ( string_to_array ( current_setting ( 'search_path' ) , ',' ) , 1 ) , array_upper ( string_to_array ( current_setting ( 'search_path' ) , ',' ) , 1 ) ) as i , string_to_array ( current_setting ( 'search_path' ) , ',' ) s )"#;
    let pattern: Vec<String> = text.split(' ').map(regex::escape).collect();
    Regex::new(&format!("(?i){}", pattern.join(r"\s*")))
        .unwrap_or_else(|error| unreachable!("the pattern is valid: {error}"))
});

/// `sql` with the spellings above rewritten (borrowed when there are none).
pub(crate) fn rewrite(sql: &str) -> Cow<'_, str> {
    let mut text = Cow::Borrowed(sql);
    for (pattern, replacement) in [
        (&*OPERATOR, "$1"),
        (&*COLLATE_DEFAULT, ""),
        (
            &*GRAFANA_SEARCH_PATH,
            "quote_ident(table_schema) IN ('public')",
        ),
    ] {
        if pattern.is_match(&text) {
            text = Cow::Owned(pattern.replace_all(&text, replacement).into_owned());
        }
    }
    text
}

/// Whether `sql` holds no statement: only whitespace, semicolons and comments (pgx's ping is
/// `-- ping`); PostgreSQL answers such text with EmptyQueryResponse.
pub(crate) fn is_blank(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            match comment.split_once("*/") {
                Some((_, after)) => rest = after,
                // An unclosed comment is a syntax error for the parser to report.
                None => return false,
            }
        } else {
            return rest.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_semicolons_alone_are_blank() {
        assert!(is_blank("-- ping"));
        assert!(is_blank(" ; /* x */ ;\n-- y\n"));
        assert!(!is_blank("-- ping\nSELECT 1"));
        assert!(!is_blank("/* open"));
        assert!(!is_blank("SELECT 1 -- one"));
    }

    #[test]
    fn psql_pattern_matches_lose_operator_and_collate() {
        assert_eq!(
            rewrite(
                "WHERE c.relname OPERATOR(pg_catalog.~) '^(spans)$' COLLATE pg_catalog.default AND x"
            ),
            "WHERE c.relname ~ '^(spans)$' AND x"
        );
        assert_eq!(rewrite("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn grafana_search_path_subquery_becomes_public() {
        let sql = "SELECT 1 FROM information_schema.tables WHERE
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )";
        assert_eq!(
            rewrite(sql),
            "SELECT 1 FROM information_schema.tables WHERE\n          quote_ident(table_schema) IN ('public')"
        );
    }
}
