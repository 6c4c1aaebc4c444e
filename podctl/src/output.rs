//! `-o/--output` of the listing commands (`pods`, `ps`, `images`): a
//! table for people, JSON or YAML for programs.

use clap::ValueEnum;
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Print `items` as a `kind: List` of JSON (one document) or as YAML
/// documents (one per item); false for `table`, which the caller prints.
pub fn print_machine<T: Serialize>(format: Output, items: &[T]) -> anyhow::Result<bool> {
    match format {
        Output::Table => Ok(false),
        Output::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(true)
        }
        Output::Yaml => {
            for i in items {
                print!("---\n{}", serde_yaml::to_string(i)?);
            }
            Ok(true)
        }
    }
}
