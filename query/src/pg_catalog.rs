//! The slice of PostgreSQL's system catalog that PostgreSQL clients read on their own: psql's
//! `\dt`/`\dv` (`pg_catalog.pg_class`, `pg_namespace`, `pg_am`, `pg_table_is_visible`,
//! `pg_get_userbyid`) and Grafana's query editor (`quote_ident`, `parse_ident`,
//! `current_setting`), over the relations [`crate::SqlEngine`] registers.
//!
//! The rows are built once from the real catalog: every table and view of the default schema
//! (`public`) is one `pg_class` row, so these tables list exactly what SQL can read. Object
//! ids are stable for a given set of relations (alphabetical order from 16384, where
//! PostgreSQL's user objects start), not stored anywhere.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::datasource::{MemTable, TableType};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// Schema name of the catalog tables.
const PG_CATALOG: &str = "pg_catalog";

/// `pg_namespace` object ids, as in PostgreSQL.
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
const INFORMATION_SCHEMA_OID: i64 = 13_000;

/// Owner of every relation (`pg_get_userbyid` answers its name).
const OWNER_OID: i64 = 10;
const OWNER_NAME: &str = "sightline";

/// What `current_database()` answers.
pub const DATABASE_NAME: &str = "sightline";

/// The `heap` access method, `relam` of every table.
const HEAP_OID: i64 = 2;

/// First object id of the listed relations.
const FIRST_RELATION_OID: i64 = 16_384;

/// The PostgreSQL version this catalog imitates (psql 15's `\dt` queries are the ones it
/// answers); a wire protocol announces it as `server_version`.
pub const SERVER_VERSION: &str = "15.0";

/// [`SERVER_VERSION`] as `server_version_num`.
const SERVER_VERSION_NUM: &str = "150000";

/// Registers schema `pg_catalog` (tables `pg_namespace`, `pg_class`, `pg_am`) listing
/// `relations`, and the catalog functions.
pub(crate) fn install(context: &SessionContext, relations: &[(String, TableType)]) -> Result<()> {
    let schema = Arc::new(MemorySchemaProvider::new());
    schema.register_table("pg_namespace".to_owned(), namespace_table()?)?;
    schema.register_table("pg_class".to_owned(), class_table(relations)?)?;
    schema.register_table("pg_am".to_owned(), access_method_table()?)?;
    let Some(catalog) =
        context.catalog(&context.state().config().options().catalog.default_catalog)
    else {
        return exec_err!("the default catalog is missing");
    };
    catalog.register_schema(PG_CATALOG, schema)?;
    for name in ["pg_table_is_visible", "pg_catalog.pg_table_is_visible"] {
        context.register_udf(create_udf(
            name,
            vec![DataType::Int64],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(table_is_visible),
        ));
    }
    for name in ["pg_get_userbyid", "pg_catalog.pg_get_userbyid"] {
        context.register_udf(create_udf(
            name,
            vec![DataType::Int64],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(user_by_id),
        ));
    }
    for name in ["quote_ident", "pg_catalog.quote_ident"] {
        context.register_udf(create_udf(
            name,
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(|args: &[ColumnarValue]| map_strings(args, |text| Some(quote_ident(text)))),
        ));
    }
    for name in ["current_setting", "pg_catalog.current_setting"] {
        context.register_udf(create_udf(
            name,
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(|args: &[ColumnarValue]| {
                map_strings(args, |name| setting(name).map(str::to_owned))
            }),
        ));
    }
    for (name, value) in [
        ("current_schema", "public"),
        ("pg_catalog.current_schema", "public"),
        ("current_database", DATABASE_NAME),
        ("pg_catalog.current_database", DATABASE_NAME),
    ] {
        context.register_udf(create_udf(
            name,
            vec![],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |_: &[ColumnarValue]| {
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                    value.to_owned(),
                ))))
            }),
        ));
    }
    context.register_udf(create_udf(
        "parse_ident",
        vec![DataType::Utf8],
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        Volatility::Immutable,
        Arc::new(parse_ident),
    ));
    Ok(())
}

/// The value `current_setting(name)` answers (and a wire protocol's `SHOW name` should), for
/// the settings PostgreSQL clients ask about; `None` for others.
pub fn setting(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "server_version" => SERVER_VERSION,
        "server_version_num" => SERVER_VERSION_NUM,
        "server_encoding" | "client_encoding" => "UTF8",
        "search_path" => "public",
        "timezone" => "UTC",
        "datestyle" => "ISO, MDY",
        "integer_datetimes" | "standard_conforming_strings" => "on",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "max_identifier_length" => "63",
        "lc_collate" | "lc_ctype" => "C",
        _ => return None,
    })
}

fn memory_table(batch: RecordBatch) -> Result<Arc<MemTable>> {
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

fn namespace_table() -> Result<Arc<MemTable>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int64, false),
        Field::new("nspname", DataType::Utf8, false),
        Field::new("nspowner", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![
                PG_CATALOG_OID,
                PUBLIC_OID,
                INFORMATION_SCHEMA_OID,
            ])),
            Arc::new(StringArray::from(vec![
                "pg_catalog",
                "public",
                "information_schema",
            ])),
            Arc::new(Int64Array::from(vec![OWNER_OID; 3])),
        ],
    )?;
    memory_table(batch)
}

fn access_method_table() -> Result<Arc<MemTable>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int64, false),
        Field::new("amname", DataType::Utf8, false),
        Field::new("amtype", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![HEAP_OID])),
            Arc::new(StringArray::from(vec!["heap"])),
            Arc::new(StringArray::from(vec!["t"])),
        ],
    )?;
    memory_table(batch)
}

/// One row per relation: `relkind` `r` for tables, `v` for views.
fn class_table(relations: &[(String, TableType)]) -> Result<Arc<MemTable>> {
    let mut sorted: Vec<&(String, TableType)> = relations.iter().collect();
    sorted.sort_by(|left, right| left.0.cmp(&right.0));
    let count = sorted.len();
    let oids: Vec<i64> = (0..count)
        .map(|index| FIRST_RELATION_OID.saturating_add(i64::try_from(index).unwrap_or(i64::MAX)))
        .collect();
    let names: Vec<&str> = sorted.iter().map(|(name, _)| name.as_str()).collect();
    let kinds: Vec<&str> = sorted
        .iter()
        .map(|(_, kind)| match kind {
            TableType::View => "v",
            TableType::Base | TableType::Temporary => "r",
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int64, false),
        Field::new("relname", DataType::Utf8, false),
        Field::new("relnamespace", DataType::Int64, false),
        Field::new("relkind", DataType::Utf8, false),
        Field::new("relowner", DataType::Int64, false),
        Field::new("relam", DataType::Int64, false),
        Field::new("relpersistence", DataType::Utf8, false),
        Field::new("relhasindex", DataType::Boolean, false),
        Field::new("relispartition", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(oids)),
            Arc::new(StringArray::from(names)),
            Arc::new(Int64Array::from(vec![PUBLIC_OID; count])),
            Arc::new(StringArray::from(kinds)),
            Arc::new(Int64Array::from(vec![OWNER_OID; count])),
            Arc::new(Int64Array::from(vec![HEAP_OID; count])),
            Arc::new(StringArray::from(vec!["p"; count])),
            Arc::new(BooleanArray::from(vec![false; count])),
            Arc::new(BooleanArray::from(vec![false; count])),
        ],
    )?;
    memory_table(batch)
}

/// `pg_table_is_visible(oid)`: every relation is in `public`, the whole search path.
fn table_is_visible(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let Some(arg) = args.first() else {
        return exec_err!("pg_table_is_visible takes one argument");
    };
    Ok(match arg {
        ColumnarValue::Scalar(value) => {
            ColumnarValue::Scalar(ScalarValue::Boolean((!value.is_null()).then_some(true)))
        }
        ColumnarValue::Array(array) => ColumnarValue::Array(Arc::new(
            (0..array.len())
                .map(|row| array.is_valid(row).then_some(true))
                .collect::<BooleanArray>(),
        )),
    })
}

/// `pg_get_userbyid(oid)`: the one owner's name.
fn user_by_id(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let Some(arg) = args.first() else {
        return exec_err!("pg_get_userbyid takes one argument");
    };
    Ok(match arg {
        ColumnarValue::Scalar(value) => ColumnarValue::Scalar(ScalarValue::Utf8(
            (!value.is_null()).then(|| OWNER_NAME.to_owned()),
        )),
        ColumnarValue::Array(array) => ColumnarValue::Array(Arc::new(
            (0..array.len())
                .map(|row| array.is_valid(row).then_some(OWNER_NAME))
                .collect::<StringArray>(),
        )),
    })
}

/// Applies `map` to a one-argument string function's values (nulls stay null).
fn map_strings(
    args: &[ColumnarValue],
    map: impl Fn(&str) -> Option<String>,
) -> Result<ColumnarValue> {
    let Some(arg) = args.first() else {
        return exec_err!("expected one argument");
    };
    let array = arg.to_array(1)?;
    let Some(strings) = array.as_any().downcast_ref::<StringArray>() else {
        return exec_err!("expected a string argument, got {}", array.data_type());
    };
    let mapped: StringArray = strings.iter().map(|value| value.and_then(&map)).collect();
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&mapped, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(mapped)),
    })
}

/// `quote_ident(text)`: the identifier, in double quotes unless it is lowercase letters,
/// digits and underscores not starting with a digit.
fn quote_ident(text: &str) -> String {
    let plain = text
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        text.to_owned()
    } else {
        format!("\"{}\"", text.replace('"', "\"\""))
    }
}

/// `parse_ident(text)`: the dot-separated parts of a qualified name, unquoted (quoted parts
/// keep their case and may contain dots; unquoted ones are lowercased).
fn parse_ident(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let Some(arg) = args.first() else {
        return exec_err!("parse_ident takes one argument");
    };
    let array = arg.to_array(1)?;
    let Some(strings) = array.as_any().downcast_ref::<StringArray>() else {
        return exec_err!("parse_ident expects a string, got {}", array.data_type());
    };
    let mut builder = ListBuilder::new(StringBuilder::new());
    for value in strings.iter() {
        match value {
            None => builder.append_null(),
            Some(text) => {
                for part in identifier_parts(text)? {
                    builder.values().append_value(part);
                }
                builder.append(true);
            }
        }
    }
    let list: ArrayRef = Arc::new(builder.finish());
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&list, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(list),
    })
}

fn identifier_parts(text: &str) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') => quoted = true,
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            (true, '"') => quoted = false,
            (false, '.') => parts.push(std::mem::take(&mut current)),
            (true, c) => current.push(c),
            (false, c) => current.push(c.to_ascii_lowercase()),
        }
    }
    if quoted {
        return Err(DataFusionError::Execution(format!(
            "string is not a valid identifier: {text:?} (unclosed double quote)"
        )));
    }
    parts.push(current);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_quote_and_parse_like_postgres() {
        assert_eq!(quote_ident("spans"), "spans");
        assert_eq!(quote_ident("Spans"), "\"Spans\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
        assert_eq!(
            identifier_parts("public.Spans").unwrap_or_default(),
            ["public", "spans"]
        );
        assert_eq!(
            identifier_parts("\"My.Schema\".t").unwrap_or_default(),
            ["My.Schema", "t"]
        );
        assert!(identifier_parts("\"open").is_err());
    }
}
