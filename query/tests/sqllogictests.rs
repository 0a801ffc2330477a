//! Runs the `.slt` files under `tests/slt/<fixture>/<topic>.slt` (STYLE §11).
//!
//! Each file gets a fresh engine in its own temp dir, loaded with the fixture named by its
//! directory; files run concurrently. Arguments: a substring filter on file paths, and
//! `--complete` to rewrite the expected output in place (review that diff like code).
//!
//! Values are rendered by `query::format::to_json` (timestamps as RFC 3339, maps as JSON
//! objects), NULL as `NULL` and the empty string as `(empty)`. A cell holding several lines
//! (an EXPLAIN plan) becomes one row per line, holding only the cells that have that line.

// A harness-less test binary reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[allow(dead_code)]
#[path = "it/fixture.rs"]
mod fixture;
#[allow(dead_code)]
#[path = "it/monitoring_fixture.rs"]
mod monitoring_fixture;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use serde_json::Value;
use sqllogictest::{
    AsyncDB, DBOutput, DefaultColumnType, Runner, default_normalizer, default_validator,
    strict_column_validator,
};

use crate::fixture::Fixture;
use crate::monitoring_fixture::MonitoringFixture;

/// A loaded fixture store.
enum Loaded {
    AgentRuns(Fixture),
    Monitoring(MonitoringFixture),
}

impl Loaded {
    fn sql(&self) -> &query::SqlEngine {
        match self {
            Loaded::AgentRuns(fixture) => &fixture.sql,
            Loaded::Monitoring(fixture) => &fixture.sql,
        }
    }
}

/// One connection: the fixture's SQL engine.
struct SightlineDb {
    fixture: Arc<Loaded>,
}

#[async_trait]
impl AsyncDB for SightlineDb {
    type Error = query::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, query::Error> {
        let output = self.fixture.sql().execute(sql).await?;
        let types = output
            .schema
            .fields()
            .iter()
            .map(|field| column_type(field.data_type()))
            .collect();
        let Value::Array(json_rows) = query::format::to_json(&output)["rows"].take() else {
            return Ok(DBOutput::Rows {
                types,
                rows: Vec::new(),
            });
        };
        let mut rows = Vec::new();
        for row in json_rows {
            let cells: Vec<String> = match row {
                Value::Array(cells) => cells.into_iter().map(cell_text).collect(),
                other => vec![cell_text(other)],
            };
            let height = cells
                .iter()
                .map(|cell| cell.lines().count())
                .max()
                .unwrap_or(1);
            if height <= 1 {
                rows.push(cells);
                continue;
            }
            let lines: Vec<Vec<&str>> = cells.iter().map(|cell| cell.lines().collect()).collect();
            for line in 0..height {
                // Cells without this line are left out: the runner joins cells with a space,
                // and a blank row would end the expected-results block of the .slt file.
                let row: Vec<String> = lines
                    .iter()
                    .filter_map(|cell| cell.get(line).filter(|text| !text.trim().is_empty()))
                    .map(|text| (*text).to_owned())
                    .collect();
                if !row.is_empty() {
                    rows.push(row);
                }
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sightline"
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn cell_text(value: Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(text) if text.is_empty() => "(empty)".to_owned(),
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// The fixture a directory name stands for.
fn load_fixture(name: &str) -> Result<Loaded, String> {
    match name {
        "agent_runs" => Ok(Loaded::AgentRuns(Fixture::new())),
        "monitoring" => Ok(Loaded::Monitoring(MonitoringFixture::new())),
        other => Err(format!("unknown fixture directory {other:?}")),
    }
}

fn slt_files(root: &Path, filter: Option<&str>) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for fixture in std::fs::read_dir(root)? {
        let fixture = fixture?.path();
        if !fixture.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&fixture)? {
            let file = file?.path();
            let wanted = filter.is_none_or(|filter| file.to_string_lossy().contains(filter));
            if file.extension().is_some_and(|ext| ext == "slt") && wanted {
                files.push(file);
            }
        }
    }
    files.sort();
    Ok(files)
}

async fn run_file(path: PathBuf, fixture: Loaded, complete: bool) -> Result<(), String> {
    let fixture = Arc::new(fixture);
    let mut runner = Runner::new(move || {
        let fixture = Arc::clone(&fixture);
        async move { Ok::<_, query::Error>(SightlineDb { fixture }) }
    });
    runner.with_column_validator(strict_column_validator);
    if complete {
        runner
            .update_test_file(
                &path,
                " ",
                default_validator,
                default_normalizer,
                strict_column_validator,
            )
            .await
            .map_err(|error| format!("{}: {error}", path.display()))
    } else {
        runner
            .run_file_async(&path)
            .await
            .map_err(|error| format!("{}: {}", path.display(), error.display(true)))
    }
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let complete = arguments.iter().any(|argument| argument == "--complete");
    let filter = arguments.iter().find(|argument| !argument.starts_with('-'));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("slt");
    let files = match slt_files(&root, filter.map(String::as_str)) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("cannot list {}: {error}", root.display());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut tasks = Vec::new();
    for path in files {
        let fixture_name = path
            .parent()
            .and_then(Path::file_name)
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Loading writes and seals segments: blocking work, done before entering the runtime.
        let fixture = match load_fixture(&fixture_name) {
            Ok(fixture) => fixture,
            Err(error) => {
                eprintln!("{}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        };
        let name = path.display().to_string();
        tasks.push((name, runtime.spawn(run_file(path, fixture, complete))));
    }
    let mut failed = 0;
    for (name, task) in tasks {
        match runtime.block_on(task) {
            Ok(Ok(())) => println!("ok {name}"),
            Ok(Err(error)) => {
                failed += 1;
                eprintln!("FAILED {error}");
            }
            Err(error) => {
                failed += 1;
                eprintln!("FAILED {name}: {error}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
