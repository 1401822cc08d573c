//! The catalog as MCP clients see it, and executor outcomes as MCP results.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, MetaObject, Tool, ToolAnnotations};
use serde_json::{json, Value};

use crate::catalog::{tool_input_schema, ProviderSpec, ToolSpec};
use crate::exec::CallOutcome;

/// `_meta` key: the OAuth scopes a tool needs, as the provider spells them.
pub const META_SCOPES: &str = "keyward/scopes";
/// `_meta` key: the provider a tool calls.
pub const META_PROVIDER: &str = "keyward/provider";
/// `_meta` key: the toolset a tool belongs to (what `--toolsets provider:toolset` selects).
pub const META_TOOLSET: &str = "keyward/toolset";
/// `_meta` key a client may put on a `tools/call` request to pick the provider account.
pub const META_ACCOUNT: &str = "keyward/account";

/// One tool the server offers, with its provider (for filtering by connection).
#[derive(Debug, Clone)]
pub struct Offered {
    pub provider: String,
    pub tool: Tool,
}

/// The MCP definition of a catalog tool: name, title, description, input schema, annotations,
/// and the scopes and provider in `_meta`.
pub fn definition(provider: &ProviderSpec, spec: &ToolSpec) -> Tool {
    let schema = match tool_input_schema(spec) {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    };
    // Hints, from the manifest: the tool only reads / may overwrite or delete / may be repeated
    // safely. Only the hints that differ from the MCP defaults (readOnly false, destructive
    // true, idempotent false, openWorld true) are sent, and destructive/idempotent only for
    // tools that write (the spec gives them meaning only there): every session's context pays
    // for each byte of the 45 definitions, and an omitted hint means its default exactly. Every
    // keyward tool reaches a third-party service, so the world is open (the default).
    // The title is the definition's own `title`; repeating it in the annotations would cost
    // every session's context the same words twice.
    let mut annotations = ToolAnnotations::new();
    if spec.read_only {
        annotations = annotations.read_only(true);
    } else {
        // Explicit either way: "may delete" is the hint a client warns on.
        annotations = annotations.destructive(spec.destructive);
        if spec.is_idempotent() {
            annotations = annotations.idempotent(true);
        }
    }
    let mut meta = MetaObject::new();
    meta.insert(META_SCOPES.into(), json!(spec.scopes));
    meta.insert(META_PROVIDER.into(), json!(provider.name));
    meta.insert(META_TOOLSET.into(), json!(spec.toolset));
    Tool::new(
        spec.name.clone(),
        spec.description.clone(),
        Arc::new(schema),
    )
    .with_title(spec.title.clone())
    .with_annotations(annotations)
    .with_meta(meta)
}

/// `tool` as a user with `accounts` of its provider sees it: with several, an optional
/// `account` argument whose enum lists them (see [`crate::exec::ACCOUNT_ARGUMENT`]).
pub fn with_accounts(tool: &Tool, accounts: &[String]) -> Tool {
    let mut tool = tool.clone();
    if accounts.len() < 2 {
        return tool;
    }
    let mut schema = (*tool.input_schema).clone();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.insert(
            crate::exec::ACCOUNT_ARGUMENT.into(),
            json!({ "type": "string", "enum": accounts, "description": "Which account." }),
        );
    }
    tool.input_schema = Arc::new(schema);
    tool
}

/// A successful call: the projected JSON as `structuredContent` and the same JSON as text (for
/// clients that only read `content`). Structured content is always an object.
pub fn success(value: Value) -> CallToolResult {
    let value = match value {
        Value::Object(_) => value,
        other => json!({ "result": other }),
    };
    let text = serde_json::to_string(&value).expect("JSON values serialize");
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

/// Turn what the executor produced into a `tools/call` result. A failure is an `isError`
/// result whose text is the message and the hint that fixes it, never a protocol error: the
/// model reads it and can act on it.
pub fn result(outcome: CallOutcome) -> CallToolResult {
    match outcome {
        Ok(value) => success(value),
        Err(error) => {
            let mut result = CallToolResult::error(vec![ContentBlock::text(error.to_string())]);
            result.structured_content = Some(error.to_json());
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::exec::ToolError;

    #[test]
    fn definitions_carry_annotations_scopes_and_provider() {
        let catalog = Catalog::embedded();
        let (provider, spec) = catalog.tool("github_get_issue").unwrap();
        let tool = definition(provider, spec);
        let json = serde_json::to_value(&tool).unwrap();
        assert_eq!(json["name"], "github_get_issue");
        // A read-only tool says so and nothing else: the other hints are the spec's defaults
        // or meaningless for a tool that does not write.
        assert_eq!(json["annotations"], json!({"readOnlyHint": true}));
        assert_eq!(json["_meta"]["keyward/provider"], "github");
        assert_eq!(json["_meta"]["keyward/scopes"], json!(spec.scopes));
        assert_eq!(json["inputSchema"]["type"], "object");

        let (provider, spec) = catalog.tool("calendar_delete_event").unwrap();
        let json = serde_json::to_value(definition(provider, spec)).unwrap();
        assert_eq!(
            json["annotations"],
            json!({"destructiveHint": true, "idempotentHint": true})
        );

        let (provider, spec) = catalog.tool("github_create_issue").unwrap();
        let json = serde_json::to_value(definition(provider, spec)).unwrap();
        assert_eq!(json["annotations"], json!({"destructiveHint": false}));
    }

    #[test]
    fn results_carry_structured_content_and_the_same_text() {
        let ok = result(Ok(json!({"number": 7, "title": "x"})));
        assert_eq!(ok.is_error, Some(false));
        let text = ok.content[0].as_text().unwrap().text.clone();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            ok.structured_content.clone().unwrap()
        );

        let wrapped = result(Ok(json!([1, 2])));
        assert_eq!(
            wrapped.structured_content.unwrap(),
            json!({"result": [1, 2]})
        );

        let err = result(Err(
            ToolError::new("no connection").hint("run `keyward connect github`")
        ));
        assert_eq!(err.is_error, Some(true));
        let text = &err.content[0].as_text().unwrap().text;
        assert!(text.contains("no connection") && text.contains("keyward connect github"));
        assert_eq!(
            err.structured_content.unwrap()["hint"],
            "run `keyward connect github`"
        );
    }
}
