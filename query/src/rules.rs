//! Retention rules: SQL boolean expressions over the span columns, compiled once and evaluated
//! on every ingested batch, in order; the first rule that is true places the row in its tier.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use engine::schema::{HIDDEN_COLUMNS, columns};

use crate::error::{Error, Result};

/// One configured rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRule {
    /// Rule name, used in errors.
    pub name: String,
    /// The tier rows matching it go to.
    pub tier: String,
    /// SQL boolean expression over the `spans` columns, e.g. `decision_verdict IS NOT NULL`.
    pub when: String,
}

/// Compiled rules, in order.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<(RetentionRule, Arc<dyn PhysicalExpr>)>,
}

impl RuleSet {
    /// Compiles `rules` against the span schema. Fails with the first rule that does not parse,
    /// names an unknown or hidden column, or is not boolean, naming the rule and the problem.
    pub fn compile(rules: &[RetentionRule]) -> Result<RuleSet> {
        let schema = engine::span_schema();
        let df_schema = DFSchema::try_from(Arc::clone(&schema)).map_err(Error::from_datafusion)?;
        let context = SessionContext::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let problem = |detail: String| {
                Error::InvalidRule(format!("retention rule {:?}: {detail}", rule.name))
            };
            let expr = context
                .parse_sql_expr(&rule.when, &df_schema)
                .map_err(|error| problem(first_line(&error.to_string())))?;
            for column in expr.column_refs() {
                if HIDDEN_COLUMNS.contains(&column.name.as_str())
                    || column.name == columns::RETENTION_TIER
                {
                    return Err(problem(format!(
                        "column {} cannot be used in a rule",
                        column.name
                    )));
                }
            }
            let data_type = expr
                .get_type(&df_schema)
                .map_err(|error| problem(first_line(&error.to_string())))?;
            if data_type != DataType::Boolean {
                return Err(problem(format!(
                    "`{}` is {data_type}, not a boolean condition",
                    rule.when
                )));
            }
            let physical = context
                .create_physical_expr(expr, &df_schema)
                .map_err(|error| problem(first_line(&error.to_string())))?;
            compiled.push((rule.clone(), physical));
        }
        Ok(RuleSet { rules: compiled })
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The tier of each row of a span batch: the first matching rule's, `None` when no rule
    /// matches (the engine's default tier). A rule that is NULL for a row does not match.
    pub fn assign(&self, batch: &RecordBatch) -> Result<Vec<Option<&str>>> {
        let rows = batch.num_rows();
        let mut out: Vec<Option<&str>> = vec![None; rows];
        let mut open = rows;
        for (rule, expr) in &self.rules {
            if open == 0 {
                break;
            }
            let value = expr
                .evaluate(batch)
                .and_then(|value| value.into_array(rows))
                .map_err(|error| {
                    Error::InvalidRule(format!(
                        "retention rule {:?} failed: {}",
                        rule.name,
                        first_line(&error.to_string())
                    ))
                })?;
            let matches = value.as_boolean();
            for (row, tier) in out.iter_mut().enumerate() {
                if tier.is_none() && matches.is_valid(row) && matches.value(row) {
                    *tier = Some(rule.tier.as_str());
                    open -= 1;
                }
            }
        }
        Ok(out)
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_owned()
}

impl engine::TierRules for RuleSet {
    fn assign_tiers(&self, spans: &RecordBatch) -> std::result::Result<Vec<Option<&str>>, String> {
        self.assign(spans).map_err(|error| error.to_string())
    }
}
