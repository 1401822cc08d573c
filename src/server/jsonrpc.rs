//! Input that is not one MCP message, on any transport: what the client is told.
//!
//! rmcp parses what a client sends and, for input it cannot use, either says nothing (stdio
//! drops a line that is not JSON, or too long) or answers outside JSON-RPC (Streamable HTTP
//! answers a malformed body with 415 and plain text; stdio answers well-formed JSON of the wrong
//! shape with an error that has no `id`). A client then waits for an answer that never comes,
//! or cannot tell which request failed. keyward parses each message here first and answers
//! what it cannot use the way JSON-RPC 2.0 §5.1 says:
//!
//! - not JSON, not UTF-8, nested deeper than serde_json's recursion limit (128), or longer
//!   than [`MAX_MESSAGE_BYTES`]: `-32700 Parse error` with `"id": null`;
//! - a batch (`[...]`; JSON-RPC batches are not part of MCP since 2025-06-18): one
//!   `-32600 Invalid Request` error per element that carries an `id`, with that `id`, so every
//!   waiting request is released; one error with `"id": null` if no element has an id;
//! - JSON that is not a message (`5`, an object without `method`, params of the wrong type
//!   for a method rmcp cannot read at all): `-32600` with the message's `id`, or `null`;
//! - a notification (no `id`) that does not parse: nothing on stdio (JSON-RPC never answers a
//!   notification; rmcp ignores such lines too), 400 on HTTP, which must answer something.
//!
//! The transports then keep serving: one bad message never ends a session.

use rmcp::model::ClientJsonRpcMessage;
use serde_json::{json, Value};

/// The largest message keyward reads, in bytes: one stdio line (without its newline) or one
/// Streamable HTTP request body. rmcp's own HTTP limit is the same 4 MiB; tool arguments are
/// small, so anything near this is a client bug or an attack.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// JSON-RPC's code for input that is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for JSON that is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;

/// Why a message was not handed to the MCP service.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Not JSON, not UTF-8, too deep or too long: nobody can know its `id`.
    Parse(String),
    /// A JSON-RPC batch, with the ids of its elements.
    Batch(Vec<Value>),
    /// JSON, but not a message keyward can read; `id` is `null` when it has none.
    Invalid { id: Value, why: String },
    /// A notification keyward cannot read: JSON-RPC never answers one.
    Notification(String),
}

impl Refusal {
    /// The message was longer than [`MAX_MESSAGE_BYTES`].
    pub fn too_long() -> Refusal {
        Refusal::Parse(format!(
            "the message is longer than keyward's limit of {MAX_MESSAGE_BYTES} bytes; send \
             smaller arguments"
        ))
    }

    /// The JSON-RPC error responses for this refusal (none for a notification).
    pub fn replies(&self) -> Vec<Value> {
        match self {
            Refusal::Parse(why) => vec![error(
                Value::Null,
                PARSE_ERROR,
                format!("Parse error: {why}"),
            )],
            Refusal::Batch(ids) => {
                let why = "Invalid Request: batches are not supported (MCP 2025-06-18 and \
                           later); send each request as its own message";
                if ids.is_empty() {
                    vec![error(Value::Null, INVALID_REQUEST, why.to_string())]
                } else {
                    ids.iter()
                        .map(|id| error(id.clone(), INVALID_REQUEST, why.to_string()))
                        .collect()
                }
            }
            Refusal::Invalid { id, why } => vec![error(
                id.clone(),
                INVALID_REQUEST,
                format!("Invalid Request: {why}"),
            )],
            Refusal::Notification(_) => Vec::new(),
        }
    }

    /// What was wrong, for the log.
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Parse(why) | Refusal::Invalid { why, .. } | Refusal::Notification(why) => why,
            Refusal::Batch(_) => "a JSON-RPC batch",
        }
    }
}

fn error(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// UTF-8 byte order mark, which RFC 8259 §8.1 lets a parser ignore (rmcp's stdio does).
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Read one client message, or say why it cannot be read.
pub fn parse(bytes: &[u8]) -> Result<ClientJsonRpcMessage, Refusal> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::too_long());
    }
    // The common case costs one typed parse, as it did inside rmcp.
    let typed_error = match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        Ok(message) => return Ok(message),
        Err(e) => e,
    };
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(Refusal::Parse(format!(
            "the message is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        )));
    }
    // Syntax errors (including nesting beyond the recursion limit) leave no id to answer.
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => return Err(Refusal::Parse(e.to_string())),
    };
    match value {
        Value::Array(elements) => Err(Refusal::Batch(
            elements.iter().filter_map(usable_id).collect(),
        )),
        Value::Object(ref object) => match object.get("id") {
            None => Err(Refusal::Notification(typed_error.to_string())),
            Some(_) => Err(Refusal::Invalid {
                id: usable_id(&value).unwrap_or(Value::Null),
                why: typed_error.to_string(),
            }),
        },
        _ => Err(Refusal::Invalid {
            id: Value::Null,
            why: "a JSON-RPC message is a JSON object".into(),
        }),
    }
}

/// The `id` of a message, if it is one JSON-RPC allows (a string or a number).
fn usable_id(message: &Value) -> Option<Value> {
    message
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(refusal: &Refusal) -> Vec<(Value, i64)> {
        refusal
            .replies()
            .iter()
            .map(|r| (r["id"].clone(), r["error"]["code"].as_i64().unwrap()))
            .collect()
    }

    #[test]
    fn good_messages_pass_and_bad_ones_are_classified() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert!(parse(ok).is_ok());
        let mut bom = UTF8_BOM.to_vec();
        bom.extend_from_slice(ok);
        assert!(parse(&bom).is_ok());
        let custom = br#"{"jsonrpc":"2.0","method":"$/custom"}"#;
        assert!(parse(custom).is_ok(), "rmcp reads custom notifications");

        let not_json = parse(b"{nope").unwrap_err();
        assert_eq!(codes(&not_json), vec![(Value::Null, PARSE_ERROR)]);
        let not_utf8 = parse(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}").unwrap_err();
        assert!(not_utf8.reason().contains("UTF-8"), "{not_utf8:?}");
        assert_eq!(codes(&not_utf8), vec![(Value::Null, PARSE_ERROR)]);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            codes(&parse(deep.as_bytes()).unwrap_err()),
            vec![(Value::Null, PARSE_ERROR)]
        );

        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":"b","method":"ping"}]"#;
        assert_eq!(
            codes(&parse(batch).unwrap_err()),
            vec![(json!(1), INVALID_REQUEST), (json!("b"), INVALID_REQUEST)]
        );
        assert_eq!(
            codes(&parse(b"[]").unwrap_err()),
            vec![(Value::Null, INVALID_REQUEST)]
        );
        assert_eq!(
            codes(&parse(b"5").unwrap_err()),
            vec![(Value::Null, INVALID_REQUEST)]
        );
        assert_eq!(
            codes(&parse(br#"{"jsonrpc":"2.0","id":7}"#).unwrap_err()),
            vec![(json!(7), INVALID_REQUEST)]
        );
        assert!(parse(br#"{"jsonrpc":"2.0"}"#)
            .unwrap_err()
            .replies()
            .is_empty());
    }
}
