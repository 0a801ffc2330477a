//! The SQL guard: only read-only statements reach the planner.
//!
//! Allowed: one query (`SELECT`, `WITH`, `VALUES`, set operations), `EXPLAIN [ANALYZE]
//! [VERBOSE]` of such a query, and the read-only catalog statements `SHOW TABLES`,
//! `SHOW COLUMNS` and `DESCRIBE <table>`. Everything else is rejected before planning with
//! the kind of statement named. The planned `LogicalPlan` is checked again with DataFusion's
//! `SQLOptions` (no DDL, DML or statements), which catches what hides inside a query, such as
//! `SELECT ... INTO`.

use std::fmt::{self, Write as _};

use datafusion::common::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement as SqlStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};

const READ_ONLY: &str = "Sightline SQL is read-only: send one query (SELECT, WITH, VALUES, set \
                         operations), EXPLAIN of a query, SHOW TABLES, SHOW COLUMNS or DESCRIBE";

/// Parses `sql` and returns its one statement if it is allowed.
pub(crate) fn parse_allowed(sql: &str, recursion_limit: usize) -> Result<Statement> {
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&GenericDialect {})
        .with_recursion_limit(recursion_limit)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|error| match leading_keyword(sql) {
            // `COPY t FROM ...` and friends do not parse, but the caller deserves to hear that
            // the statement kind is not allowed rather than about its syntax.
            Some(keyword) if REJECTED_KEYWORDS.contains(&keyword.as_str()) => {
                rejected(keyword, READ_ONLY)
            }
            _ if error.to_string().contains("RecursionLimitExceeded") => {
                Error::TooComplex(format!(
                    "the query nests deeper than {recursion_limit} levels (parentheses, function \
                 calls, subqueries)"
                ))
            }
            _ => Error::InvalidQuery(error.strip_backtrace()),
        })?;
    if statements.len() > 1 {
        return Err(rejected(
            "multiple statements",
            "send one statement per request",
        ));
    }
    let Some(statement) = statements.pop_front() else {
        return Err(Error::InvalidQuery("no SQL statement".to_owned()));
    };
    check(&statement)?;
    Ok(statement)
}

/// First words of statements that are never allowed, for SQL that does not even parse.
const REJECTED_KEYWORDS: [&str; 27] = [
    "ALTER",
    "ANALYZE",
    "ATTACH",
    "BEGIN",
    "CALL",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DELETE",
    "DETACH",
    "DROP",
    "EXECUTE",
    "GRANT",
    "INSERT",
    "INSTALL",
    "LOAD",
    "MERGE",
    "PREPARE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SET",
    "START",
    "TRUNCATE",
    "UPDATE",
    "VACUUM",
];

/// The first word of `sql`, uppercased, skipping whitespace and comments.
fn leading_keyword(sql: &str) -> Option<String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    match tokens
        .into_iter()
        .find(|token| !matches!(token, Token::Whitespace(_)))?
    {
        Token::Word(word) => Some(word.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// The plan-level check, after planning.
pub(crate) fn verify_plan(plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|error: DataFusionError| Error::Rejected {
            statement_kind: plan_kind(&error),
            reason: format!("{READ_ONLY} ({})", error.strip_backtrace()),
        })
}

/// Whether `plan` scans the table `name` anywhere, subqueries included.
pub(crate) fn reads_table(plan: &LogicalPlan, name: &str) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.table() == name
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn plan_kind(error: &DataFusionError) -> String {
    let message = error.strip_backtrace();
    for kind in ["DDL", "DML", "Statement"] {
        if message.contains(&format!("{kind} not supported")) {
            return kind.to_uppercase();
        }
    }
    "statement".to_owned()
}

fn rejected(kind: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Rejected {
        statement_kind: kind.into(),
        reason: reason.into(),
    }
}

fn check(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Statement(statement) => check_sql(statement),
        Statement::Explain(explain) => check(&explain.statement),
        Statement::CreateExternalTable(_) => Err(rejected("CREATE EXTERNAL TABLE", READ_ONLY)),
        Statement::CopyTo(_) => Err(rejected("COPY", READ_ONLY)),
        Statement::Reset(_) => Err(rejected("RESET", READ_ONLY)),
    }
}

fn check_sql(statement: &SqlStatement) -> Result<()> {
    match statement {
        SqlStatement::Query(query) => check_query(query),
        SqlStatement::Explain { statement, .. } => check_sql(statement),
        SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. }
        | SqlStatement::ExplainTable { .. } => Ok(()),
        SqlStatement::Drop { object_type, .. } => {
            Err(rejected(format!("DROP {object_type}"), READ_ONLY))
        }
        other => Err(rejected(statement_kind(other), READ_ONLY)),
    }
}

/// Rejects data-changing statements nested in a query body (`WITH ... INSERT`) and
/// `SELECT ... INTO`.
fn check_query(query: &Query) -> Result<()> {
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            check_query(&cte.query)?;
        }
    }
    check_set_expr(&query.body)
}

fn check_set_expr(body: &SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => Err(rejected("SELECT INTO", READ_ONLY)),
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        SetExpr::Query(query) => check_query(query),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Insert(statement)
        | SetExpr::Update(statement)
        | SetExpr::Delete(statement)
        | SetExpr::Merge(statement) => Err(rejected(statement_kind(statement), READ_ONLY)),
    }
}

/// `CREATE VIEW`, `INSERT`, `SHOW VARIABLE`...: the statement's variant name in SQL words.
fn statement_kind(statement: &SqlStatement) -> String {
    let variant = variant_name(statement);
    match variant.as_str() {
        name if name.starts_with("Attach") => "ATTACH".to_owned(),
        name if name.starts_with("Detach") => "DETACH".to_owned(),
        _ => {
            let mut words = String::new();
            let mut previous_lowercase = false;
            for character in variant.chars() {
                if character.is_ascii_uppercase() && previous_lowercase {
                    words.push(' ');
                }
                previous_lowercase = character.is_ascii_lowercase();
                words.push(character.to_ascii_uppercase());
            }
            if words.is_empty() {
                "statement".to_owned()
            } else {
                words
            }
        }
    }
}

/// The enum variant name from the derived `Debug` output, without formatting the rest.
fn variant_name(statement: &SqlStatement) -> String {
    struct FirstIdentifier(String);
    impl fmt::Write for FirstIdentifier {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            for character in text.chars() {
                if !character.is_ascii_alphanumeric() {
                    // Stop formatting: the variant name is complete.
                    return Err(fmt::Error);
                }
                self.0.push(character);
            }
            Ok(())
        }
    }
    let mut name = FirstIdentifier(String::new());
    // The error only signals that the name is complete.
    let _ = write!(name, "{statement:?}");
    name.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> String {
        match parse_allowed(sql, 50) {
            Err(Error::Rejected { statement_kind, .. }) => statement_kind,
            other => panic!("{sql}: expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn queries_and_catalog_reads_are_allowed() {
        for sql in [
            "SELECT 1",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
            "VALUES (1), (2)",
            "SELECT 1 UNION ALL SELECT 2",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE VERBOSE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM spans",
            "DESCRIBE spans",
        ] {
            assert!(parse_allowed(sql, 50).is_ok(), "{sql} should be allowed");
        }
    }

    #[test]
    fn statement_kinds_are_named_in_sql_words() {
        assert_eq!(kind("CREATE VIEW v AS SELECT 1"), "CREATE VIEW");
        assert_eq!(kind("INSERT INTO spans VALUES (1)"), "INSERT");
        assert_eq!(kind("DROP TABLE spans"), "DROP TABLE");
        assert_eq!(kind("SET datafusion.execution.batch_size = 1"), "SET");
        assert_eq!(kind("EXPLAIN CREATE TABLE t (x INT)"), "CREATE TABLE");
        assert_eq!(kind("SELECT 1; SELECT 2"), "multiple statements");
        assert_eq!(kind("SELECT * INTO t FROM spans"), "SELECT INTO");
        assert_eq!(
            kind("  -- load it\n copy spans FROM 'x.csv' (WITH HEADER)"),
            "COPY"
        );
        assert!(matches!(
            parse_allowed("SELEC 1", 50),
            Err(Error::InvalidQuery(_))
        ));
    }
}
