//! JSON Schemas: the input schema of each tool (what MCP clients show the model in
//! `tools/list`) and the schema of the manifest format itself (`tools/manifest.schema.json`,
//! for editors).
//!
//! Tool schemas are sent to the model on every session, so they are kept compact: only the
//! keywords a parameter actually uses, no `$schema`, no titles.

use serde_json::{json, Map, Value};

use super::manifest::{Manifest, ParamSpec, ParamType, ToolSpec};

/// The JSON Schema (draft 2020-12 vocabulary) of a tool's arguments.
pub fn tool_input_schema(tool: &ToolSpec) -> Value {
    let mut properties = Map::with_capacity(tool.params.len());
    for param in &tool.params {
        properties.insert(param.name.clone(), param_schema(param));
    }
    let required: Vec<&str> = tool
        .params
        .iter()
        .filter(|p| p.required)
        .map(|p| p.name.as_str())
        .collect();
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    schema.insert("additionalProperties".into(), json!(false));
    Value::Object(schema)
}

fn param_schema(param: &ParamSpec) -> Value {
    let mut schema = Map::new();
    let mut text_constraints = Map::new();
    if let Some(values) = &param.enum_values {
        text_constraints.insert("enum".into(), json!(values));
    }
    if let Some(pattern) = &param.pattern {
        text_constraints.insert("pattern".into(), json!(anchored(pattern)));
    }
    if let Some(max) = param.max_length {
        text_constraints.insert("maxLength".into(), json!(max));
    }
    match param.kind {
        ParamType::String | ParamType::Path => {
            schema.insert("type".into(), json!("string"));
            schema.extend(text_constraints);
        }
        ParamType::StringArray => {
            schema.insert("type".into(), json!("array"));
            let mut items = Map::new();
            items.insert("type".into(), json!("string"));
            items.extend(text_constraints);
            schema.insert("items".into(), Value::Object(items));
        }
        ParamType::Integer => {
            schema.insert("type".into(), json!("integer"));
            if let Some(min) = param.min {
                schema.insert("minimum".into(), json!(min));
            }
            if let Some(max) = param.max {
                schema.insert("maximum".into(), json!(max));
            }
        }
        ParamType::Boolean => {
            schema.insert("type".into(), json!("boolean"));
        }
    }
    if !param.description.is_empty() {
        schema.insert("description".into(), json!(param.description));
    }
    if let Some(default) = &param.default {
        schema.insert("default".into(), default.clone());
    }
    Value::Object(schema)
}

/// JSON Schema patterns match anywhere; ours match the whole value, so say so explicitly.
fn anchored(pattern: &str) -> String {
    if pattern.starts_with('^') && pattern.ends_with('$') {
        pattern.to_string()
    } else {
        format!("^(?:{pattern})$")
    }
}

/// The schema of the manifest format, as committed in `tools/manifest.schema.json`.
pub fn manifest_schema_json() -> String {
    let schema = schemars::schema_for!(Manifest);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn input_schema_carries_types_constraints_and_required() {
        let catalog = Catalog::embedded();
        let (_, tool) = catalog.tool("github_list_issues").unwrap();
        let schema = tool_input_schema(tool);
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["owner", "repo"]));
        let properties = schema["properties"].as_object().unwrap();
        let names: Vec<&str> = properties.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["owner", "repo", "state", "labels", "per_page", "page"]
        );
        assert_eq!(
            properties["state"]["enum"],
            json!(["open", "closed", "all"])
        );
        assert_eq!(properties["per_page"]["type"], "integer");
        assert_eq!(properties["per_page"]["minimum"], 1);
        assert_eq!(properties["per_page"]["maximum"], 100);
        assert_eq!(properties["labels"]["type"], "array");
        assert_eq!(properties["labels"]["items"]["type"], "string");
        let owner_pattern = properties["owner"]["pattern"].as_str().unwrap();
        assert!(owner_pattern.starts_with('^') && owner_pattern.ends_with('$'));

        let (_, events) = catalog.tool("calendar_list_events").unwrap();
        let schema = tool_input_schema(events);
        assert_eq!(schema["properties"]["calendar_id"]["default"], "primary");
        assert!(
            schema.get("required").is_none(),
            "nothing is required: {schema}"
        );
    }

    #[test]
    fn all_tool_definitions_fit_in_32_kib() {
        let catalog = Catalog::embedded();
        let listing: Vec<Value> = catalog
            .tools()
            .map(|(_, tool)| {
                json!({
                    "name": tool.name,
                    "title": tool.title,
                    "description": tool.description,
                    "inputSchema": tool_input_schema(tool),
                })
            })
            .collect();
        let bytes = serde_json::to_vec(&listing).unwrap().len();
        println!(
            "tools/list definitions: {} tools, {bytes} bytes",
            listing.len()
        );
        assert!(
            bytes <= 32 * 1024,
            "tool definitions take {bytes} bytes; the budget is 32 KiB"
        );
    }

    /// Editors validate manifests against the committed schema, so it must match the types.
    #[test]
    fn committed_manifest_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/manifest.schema.json");
        let generated = manifest_schema_json();
        if std::env::var("KEYWARD_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "tools/manifest.schema.json is out of date with src/catalog/manifest.rs; \
             regenerate it with `KEYWARD_UPDATE_SNAPSHOTS=1 cargo test --lib catalog` and commit it"
        );
    }
}
