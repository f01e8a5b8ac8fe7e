//! The table a stream is synced into: created when missing, checked when it exists, and the
//! [`Plan`] that says which column takes what, with the SQL that follows from it.
//!
//! The mapping, by column name: `_stream` the stream's key, `_id` the entry id, `_ref`,
//! `_type`, `_source`, `_subject` the fields without the underscore, `_time` the `time`
//! field (milliseconds or ISO 8601), `_data` the `data` field (JSON when it parses, else a
//! JSON string), `_fields` every field no other column takes (a JSON object); any other
//! column without a DEFAULT takes the field of its own name. Columns with a DEFAULT (and no
//! name above) are left to PostgreSQL, and so are identity and generated columns, whatever
//! their name (PostgreSQL makes their values).
//!
//! A second write of an entry does nothing by the table's key on `(_stream, _id)` (or `(_id)`)
//! and by that key alone: a conflict on any other unique index of the user's is a refusal,
//! which makes the entry a dead letter with PostgreSQL's error.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// What a column is filled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stream,
    Id,
    Time,
    Data,
    Fields,
    Field(String),
}

/// One column the sync writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub source: Source,
    /// A `json` or `jsonb` column (so `data` that is not JSON is written as a JSON string).
    pub json: bool,
    /// The column's type, when PostgreSQL must be asked to convert text to it.
    pub cast: Option<String>,
}

/// The columns the sync writes, in the table's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub columns: Vec<Column>,
}

/// A column as the catalogue describes it.
#[derive(Debug, Clone)]
pub struct Described {
    pub name: String,
    /// `format_type`'s spelling, e.g. `timestamp with time zone`.
    pub type_name: String,
    /// `pg_type.typcategory`: `S` string, `D` date/time, `U` user (json, jsonb)...
    pub category: char,
    pub has_default: bool,
    /// An identity column (`GENERATED … AS IDENTITY`) or a generated one (`GENERATED ALWAYS AS
    /// (…) STORED`): PostgreSQL makes its values.
    pub generated: bool,
}

impl Plan {
    pub fn has(&self, source: Source) -> bool {
        self.columns.iter().any(|c| c.source == source)
    }

    /// Whether a field of this name has a column of its own (so it is not in `_fields`).
    pub fn takes_field(&self, field: &str) -> bool {
        self.columns.iter().any(|c| match &c.source {
            Source::Field(name) => name == field,
            Source::Data => field == "data",
            _ => false,
        })
    }

    /// Maps a table's columns, or says which column denorun cannot write and why.
    pub fn from_columns(table: &str, described: &[Described]) -> anyhow::Result<Plan> {
        let mut columns = Vec::new();
        for d in described {
            if d.generated {
                if d.name == "_id" {
                    anyhow::bail!(
                        "column _id of table {table} is an identity or generated column, but denorun sync writes the \
                         stream entry id there: make it a plain text column, or sync into another table (--table)"
                    );
                }
                continue;
            }
            let source = match d.name.as_str() {
                "_stream" => Source::Stream,
                "_id" => Source::Id,
                "_time" => Source::Time,
                "_data" => Source::Data,
                "_fields" => Source::Fields,
                "_ref" | "_type" | "_source" | "_subject" => Source::Field(d.name[1..].to_string()),
                _ if d.has_default => continue,
                name => Source::Field(name.to_string()),
            };
            let json = matches!(d.type_name.as_str(), "json" | "jsonb");
            let fits = match source {
                Source::Stream | Source::Id => d.category == 'S',
                Source::Time => d.category == 'S' || d.category == 'D',
                Source::Data | Source::Fields => json || d.category == 'S',
                Source::Field(_) => true,
            };
            if !fits {
                let wants = match source {
                    Source::Time => "a timestamp (timestamptz) or text",
                    Source::Data | Source::Fields => "jsonb, json or text",
                    _ => "text",
                };
                anyhow::bail!(
                    "column {} of table {table} is {}, but denorun sync writes {wants} there: \
                     change its type, or sync into another table (--table)",
                    d.name,
                    d.type_name
                );
            }
            let cast = (d.category != 'S').then(|| d.type_name.clone());
            columns.push(Column { name: d.name.clone(), source, json, cast });
        }
        if !columns.iter().any(|c| c.source == Source::Id) {
            anyhow::bail!(
                "table {table} has no _id column (text) for the stream entry id: denorun sync needs one, \
                 unique, so that a batch written twice is written once"
            );
        }
        Ok(Plan { columns })
    }

    /// The key that makes a second write of an entry do nothing: `(_stream, _id)`, or `(_id)`
    /// when the table has no `_stream`.
    pub fn key(&self) -> Vec<&'static str> {
        match self.has(Source::Stream) {
            true => vec!["_id", "_stream"],
            false => vec!["_id"],
        }
    }

    /// One statement for a batch: a text array per column, unnested; entries already there
    /// (by [`Plan::key`], and only by it) are skipped.
    pub fn insert_sql(&self, table: &str) -> String {
        let arrays: Vec<String> = (1..=self.columns.len()).map(|i| format!("${i}::text[]")).collect();
        let batch: Vec<String> = (0..self.columns.len()).map(|i| format!("c{i}")).collect();
        format!(
            "INSERT INTO {table} ({}) SELECT {} FROM unnest({}) AS batch({}) ON CONFLICT ({}) DO NOTHING",
            self.column_list(),
            self.select_list(),
            arrays.join(", "),
            batch.join(", "),
            self.key().iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")
        )
    }

    /// A fresh batch's statement: `COPY` of the columns in text format, each value converted
    /// by its column type's input function (the INSERT converts with `CAST` from text: the
    /// same function for every type whose cast from text is its input function).
    pub fn copy_sql(&self, table: &str) -> String {
        format!("COPY {table} ({}) FROM STDIN", self.column_list())
    }

    /// The columns written, quoted, in the table's order: `"_stream", "_id", ...`.
    fn column_list(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        names.join(", ")
    }

    /// `c0, CAST(c1 AS type), ...`: the batch's text converted to each column's type.
    fn select_list(&self) -> String {
        let values: Vec<String> = (self.columns.iter().enumerate())
            .map(|(i, c)| match &c.cast {
                Some(type_name) => format!("CAST(c{i} AS {type_name})"),
                None => format!("c{i}"),
            })
            .collect();
        values.join(", ")
    }
}

/// The table created for a stream when none exists.
pub fn create_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n  \
           _stream text COLLATE \"C\" NOT NULL,\n  \
           _id text COLLATE \"C\" NOT NULL,\n  \
           _ref text,\n  _type text,\n  _source text,\n  _subject text,\n  \
           _time timestamptz,\n  \
           _data jsonb,\n  \
           _fields jsonb NOT NULL DEFAULT '{{}}',\n  \
           _synced_at timestamptz NOT NULL DEFAULT now(),\n  \
           PRIMARY KEY (_stream, _id)\n)"
    )
}

/// The default table for a stream: its key with each character that is not a letter, digit or
/// `_` made `_` (`demo:req:x` → `demo_req_x`), at most 63 bytes as PostgreSQL allows.
pub fn default_name(stream: &str) -> String {
    let name: String = stream
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    name.chars().take(63).collect()
}

/// `name` or `schema.name`, each part quoted for SQL.
pub fn qualified(table: &str) -> String {
    table.splitn(2, '.').map(quote_ident).collect::<Vec<_>>().join(".")
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether COPY may write into `table`: a plain or partitioned table without rules (COPY
/// ignores rules, and a view takes no COPY). Checked at each connection, so a rule created
/// while one is open is seen at the next.
pub async fn takes_copy(client: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT c.relkind IN ('r', 'p') AND NOT c.relhasrules FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&qualified(table)],
        )
        .await?;
    Ok(row.is_some_and(|row| row.get::<_, bool>(0)))
}

/// Creates the table when missing, then reads and checks its columns and unique key.
pub async fn prepare(client: &Client, table: &str) -> anyhow::Result<Plan> {
    let quoted = qualified(table);
    let exists: Option<u32> =
        client.query_one("SELECT to_regclass($1)::oid", &[&quoted]).await?.get::<_, Option<u32>>(0);
    if exists.is_none() {
        // Instances starting together would race in CREATE TABLE IF NOT EXISTS (PostgreSQL
        // checks, then creates): the first to take the table's advisory lock creates it.
        let lock = i64::from_be_bytes(Sha256::digest(quoted.as_bytes())[..8].try_into().expect("8 bytes"));
        client
            .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock}); {}; COMMIT", create_sql(&quoted)))
            .await?;
        log::info!("created table {quoted} (if no other instance did)");
    }
    let described: Vec<Described> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text, a.atthasdef, \
             a.attidentity <> '' OR a.attgenerated <> '' \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&quoted],
        )
        .await?
        .into_iter()
        .map(|row| Described {
            name: row.get(0),
            type_name: row.get(1),
            category: row.get::<_, String>(2).chars().next().unwrap_or('X'),
            has_default: row.get(3),
            generated: row.get(4),
        })
        .collect();
    let plan = Plan::from_columns(&quoted, &described)?;
    let keys: Vec<Vec<String>> = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid",
            &[&quoted],
        )
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let wanted = plan.key();
    if !keys.iter().any(|k| k.iter().map(String::as_str).eq(wanted.iter().copied())) {
        anyhow::bail!(
            "table {quoted} has no primary key or unique index on ({}): add one \
             (ALTER TABLE {quoted} ADD PRIMARY KEY ({})) so that an entry delivered twice is written once",
            wanted.join(", "),
            wanted.join(", ")
        );
    }
    if !plan.has(Source::Stream) {
        log::warn!(
            "table {quoted} is keyed on _id alone: entries of two streams with the same id (two XADDs in the same \
             millisecond on different streams both get <ms>-0) would be taken for one, and the second skipped; \
             add a _stream column to the key unless only one stream is ever synced into it"
        );
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(name: &str, type_name: &str, category: char, has_default: bool) -> Described {
        Described { name: name.into(), type_name: type_name.into(), category, has_default, generated: false }
    }

    #[test]
    fn identity_and_generated_columns_are_left_to_postgresql() {
        let generated = |name: &str| Described { generated: true, ..described(name, "bigint", 'N', false) };
        let plan =
            Plan::from_columns("t", &[generated("seq"), described("_id", "text", 'S', false), generated("_ref")])
                .unwrap();
        let names: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["_id"]);
        let e = Plan::from_columns("t", &[generated("_id")]).unwrap_err().to_string();
        assert!(e.contains("column _id of table t is an identity or generated column"), "{e}");
    }

    #[test]
    fn the_created_table_maps_every_column_but_synced_at() {
        let plan = Plan::from_columns(
            "t",
            &[
                described("_stream", "text", 'S', false),
                described("_id", "text", 'S', false),
                described("_ref", "text", 'S', false),
                described("_time", "timestamp with time zone", 'D', false),
                described("_data", "jsonb", 'U', false),
                described("_fields", "jsonb", 'U', true),
                described("_synced_at", "timestamp with time zone", 'D', true),
            ],
        )
        .unwrap();
        let names: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["_stream", "_id", "_ref", "_time", "_data", "_fields"]);
        assert_eq!(plan.columns[2].source, Source::Field("ref".into()));
        assert!(plan.columns[4].json);
        assert_eq!(plan.key(), ["_id", "_stream"]);
        assert_eq!(
            plan.insert_sql("\"t\""),
            "INSERT INTO \"t\" (\"_stream\", \"_id\", \"_ref\", \"_time\", \"_data\", \"_fields\") SELECT c0, c1, c2, \
             CAST(c3 AS timestamp with time zone), CAST(c4 AS jsonb), CAST(c5 AS jsonb) FROM unnest($1::text[], \
             $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS batch(c0, c1, c2, c3, c4, c5) \
             ON CONFLICT (\"_id\", \"_stream\") DO NOTHING"
        );
    }

    #[test]
    fn other_columns_take_fields_of_their_name() {
        let plan = Plan::from_columns(
            "t",
            &[
                described("id", "bigint", 'N', true),
                described("_id", "character varying(40)", 'S', false),
                described("amount", "integer", 'N', false),
            ],
        )
        .unwrap();
        assert_eq!(plan.columns.len(), 2);
        assert_eq!(plan.columns[1].source, Source::Field("amount".into()));
        assert_eq!(plan.columns[1].cast.as_deref(), Some("integer"));
        assert!(plan.takes_field("amount") && !plan.takes_field("data"));
        assert_eq!(plan.key(), ["_id"]);
    }

    #[test]
    fn incompatible_columns_are_named() {
        let e =
            Plan::from_columns("t", &[described("_id", "text", 'S', false), described("_time", "integer", 'N', false)])
                .unwrap_err()
                .to_string();
        assert!(e.contains("column _time of table t is integer"), "{e}");
        let e = Plan::from_columns("t", &[described("_id", "bigint", 'N', false)]).unwrap_err().to_string();
        assert!(e.contains("column _id of table t is bigint"), "{e}");
        let e = Plan::from_columns("t", &[described("x", "text", 'S', false)]).unwrap_err().to_string();
        assert!(e.contains("no _id column"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(default_name("demo-worker:req:x"), "demo_worker_req_x");
        assert_eq!(qualified("audit.Events"), "\"audit\".\"Events\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
