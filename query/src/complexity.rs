//! The size check every SQL text passes before it is parsed.
//!
//! The parser bounds nesting (parentheses, function calls, subqueries) with its recursion
//! limit, but it reads a chain of binary operators (`a + b + c ...`, `x OR y OR ...`,
//! `s || t || ...`, `UNION`, `JOIN`) in a loop and builds a tree as deep as the chain is long.
//! Planning, optimizing, evaluating and even dropping that tree recurse once per level, so a
//! long enough chain overflows any stack. This check counts the operators with the tokenizer
//! (which never recurses) and refuses text with more than [`MAX_OPERATORS`] of them before a
//! tree exists.
//!
//! Invariant: a chain deeper than [`MAX_OPERATORS`] never reaches the parser; every chain
//! that does is at most that deep, which the query threads' stack holds (tested at the limit).

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};

/// Most operators (binary, `AND`/`OR`, set operations, joins, casts, subscripts) one SQL text
/// may hold. Generous for hand-written and generated dashboards' queries (hundreds at most).
pub const MAX_OPERATORS: usize = 2_000;

/// Most bytes of SQL text accepted (1 MiB): a long `IN (...)` list fits easily.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// Refuses SQL text too large or with too many operators to plan safely.
pub(crate) fn check(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::TooComplex(format!(
            "the SQL text is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    // Text that does not tokenize fails in the parser with its own message.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let operators = tokens.iter().filter(|token| is_operator(token)).count();
    if operators > MAX_OPERATORS {
        return Err(Error::TooComplex(format!(
            "the query has {operators} operators (AND, OR, +, ||, UNION, JOIN, ...); at most \
             {MAX_OPERATORS} are accepted: use IN (...) for long lists of alternatives"
        )));
    }
    Ok(())
}

/// Keywords that join two operands into one more level of a tree.
const OPERATOR_KEYWORDS: [&str; 12] = [
    "AND",
    "OR",
    "XOR",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "JOIN",
    "LIKE",
    "ILIKE",
    "IS",
    "BETWEEN",
    "SIMILAR",
];

fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(word) => OPERATOR_KEYWORDS
            .iter()
            .any(|keyword| word.quote_style.is_none() && word.value.eq_ignore_ascii_case(keyword)),
        Token::EOF
        | Token::Whitespace(_)
        | Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::Period
        | Token::SemiColon
        | Token::Placeholder(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(operator: &str, terms: usize) -> String {
        let mut sql = String::from("SELECT 1");
        for _ in 1..terms {
            sql.push_str(operator);
            sql.push('1');
        }
        sql
    }

    #[test]
    fn long_operator_chains_are_refused_before_parsing() {
        for operator in [" + ", " OR ", " and ", " || ", " = ", "::int::int"] {
            assert!(check(&chain(operator, 100)).is_ok(), "{operator}");
            let error = check(&chain(operator, 50_000)).unwrap_err();
            assert!(matches!(error, Error::TooComplex(_)), "{operator}: {error}");
            assert!(error.to_string().contains("operators"), "{error}");
        }
        assert!(check(&chain(" + ", MAX_OPERATORS + 1)).is_ok());
        assert!(check(&chain(" + ", MAX_OPERATORS + 2)).is_err());
    }

    #[test]
    fn lists_literals_and_quoted_names_are_not_operators() {
        let list: Vec<String> = (0..20_000).map(|n| format!("'s-{n} OR x + y'")).collect();
        let sql = format!(
            "SELECT \"and\", * FROM spans WHERE session_id IN ({})",
            list.join(", ")
        );
        assert!(check(&sql).is_ok());
        let huge = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        assert!(matches!(check(&huge), Err(Error::TooComplex(_))));
    }
}
