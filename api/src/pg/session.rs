//! Session statements PostgreSQL clients and drivers send around their queries, answered
//! without the SQL engine and without changing what a query may do: `SET`/`RESET` (accepted,
//! no effect), `BEGIN`/`COMMIT`/`ROLLBACK` (every transaction is read-only: writes are refused
//! inside one as outside), `DISCARD`, `DEALLOCATE`, and `SHOW <setting>` for the settings
//! clients ask about.

use std::sync::Arc;

use futures::stream;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::PgWireResult;

/// A session statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Session {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `SET ...`: accepted without effect.
    Set,
    /// `RESET ...`.
    Reset,
    /// `DISCARD ...`.
    Discard,
    /// `DEALLOCATE ...`.
    Deallocate,
    /// `SHOW <name>` (not DataFusion's `SHOW TABLES` / `SHOW COLUMNS`, which are queries).
    Show(String),
}

impl Session {
    /// The session statement `sql` is, if it is one. Text with more than one statement never
    /// is (the guard refuses it), so nothing rides along unchecked.
    pub(crate) fn classify(sql: &str) -> Option<Session> {
        let text = sql
            .trim()
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        if text.contains(';') {
            return None;
        }
        let mut words = text.split_whitespace();
        let first = words.next()?.to_ascii_uppercase();
        let second = words.next().map(str::to_ascii_uppercase);
        Some(match first.as_str() {
            "BEGIN" => Session::Begin,
            "START" if second.as_deref() == Some("TRANSACTION") => Session::Begin,
            "COMMIT" | "END" => Session::Commit,
            "ROLLBACK" | "ABORT" => Session::Rollback,
            "SET" => Session::Set,
            "RESET" => Session::Reset,
            "DISCARD" => Session::Discard,
            "DEALLOCATE" => Session::Deallocate,
            "SHOW" => match second.as_deref() {
                None | Some("TABLES" | "COLUMNS" | "FULL") => return None,
                Some(_) => {
                    let name = text
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_ascii_lowercase();
                    Session::Show(name)
                }
            },
            _ => return None,
        })
    }

    /// The result columns (one for `SHOW`, none otherwise).
    pub(crate) fn fields(&self, format: &Format) -> Vec<FieldInfo> {
        match self {
            Session::Show(name) => vec![FieldInfo::new(
                name.clone(),
                None,
                None,
                Type::TEXT,
                format.format_for(0),
            )],
            _ => Vec::new(),
        }
    }

    /// The answer: a command tag, or `SHOW`'s one row (SQLSTATE 42704 for a setting this
    /// server does not know).
    pub(crate) fn respond(&self, format: &Format) -> PgWireResult<Response> {
        Ok(match self {
            Session::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Session::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Session::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            Session::Set => Response::Execution(Tag::new("SET")),
            Session::Reset => Response::Execution(Tag::new("RESET")),
            Session::Discard => Response::Execution(Tag::new("DISCARD ALL")),
            Session::Deallocate => Response::Execution(Tag::new("DEALLOCATE")),
            Session::Show(name) => {
                let Some(value) = query::pg_catalog::setting(name) else {
                    return Err(super::pg_error(
                        "ERROR",
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    ));
                };
                let fields = Arc::new(self.fields(format));
                let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
                encoder.encode_field(&value)?;
                let row = encoder.take_row();
                Response::Query(QueryResponse::new(fields, stream::iter([Ok(row)])))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statements_are_recognised_and_queries_are_not() {
        assert_eq!(Session::classify("BEGIN READ ONLY;"), Some(Session::Begin));
        assert_eq!(Session::classify("start transaction"), Some(Session::Begin));
        assert_eq!(
            Session::classify("SET extra_float_digits = 3"),
            Some(Session::Set)
        );
        assert_eq!(
            Session::classify("SHOW TimeZone"),
            Some(Session::Show("timezone".to_owned()))
        );
        assert_eq!(Session::classify("SHOW TABLES"), None);
        assert_eq!(Session::classify("SELECT 1"), None);
        assert_eq!(Session::classify("start_time"), None);
        // A second statement must reach the guard, not ride along with SET.
        assert_eq!(Session::classify("SET x = 1; DELETE FROM spans"), None);
    }
}
