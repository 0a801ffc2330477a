//! The SQL of the documentation: docs/sql.md's examples and docs/monitoring.md's queries are run
//! by tests and benches exactly as written.

/// The bodies of the ```` ```sql ```` fenced blocks of a Markdown document, in order.
///
/// ```
/// let blocks = testdata::sql_blocks("text\n```sql\nSELECT 1\n```\n```rust\nx\n```\n");
/// assert_eq!(blocks, ["SELECT 1\n"]);
/// ```
pub fn sql_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}
