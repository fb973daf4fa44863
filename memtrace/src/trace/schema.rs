//! The JSON Schema of the trace, derived from its types.
use super::{Trace, FORMAT, VERSION};

/// The JSON Schema of the trace (format and version fixed), derived from
/// these types with their doc comments as descriptions. Objects admit no
/// properties beyond those listed, so a field added to the types without
/// regenerating `schema/memtrace-trace.schema.json` fails the tests.
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Trace)).expect("a schema is JSON");
    fn close_objects(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if map.contains_key("properties") {
                    map.insert("additionalProperties".into(), false.into());
                }
                map.values_mut().for_each(close_objects);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(close_objects),
            _ => {}
        }
    }
    close_objects(&mut schema);
    schema["$id"] = "https://github.com/memtrace/memtrace/schema/memtrace-trace.schema.json".into();
    schema["title"] = format!("memtrace trace, format `{FORMAT}` version {VERSION}").into();
    schema["properties"]["format"] = serde_json::json!({ "const": FORMAT });
    schema["properties"]["version"] = serde_json::json!({ "const": VERSION });
    schema
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// `MEMTRACE_WRITE_SCHEMA=1 cargo test -p memtrace schema` rewrites the file.
    #[test]
    fn the_schema_in_the_repository_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/memtrace-trace.schema.json");
        let want = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
        if std::env::var_os("MEMTRACE_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "{} is stale: run MEMTRACE_WRITE_SCHEMA=1 cargo test -p memtrace schema", path.display());
    }
}
