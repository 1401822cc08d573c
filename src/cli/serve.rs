//! `keyward serve`: the MCP server, over stdio (one client, one user: `--user`) or over HTTP
//! with `--http` (many clients, each request's API key naming its user). Everything is
//! [`keyward::server::run`]; this file only maps the flags onto its options, so the server's
//! tests drive exactly what the command runs.

use clap::Args;
use keyward::config::Home;
use keyward::error::Result;
use keyward::server::ServeOptions;

#[derive(Args)]
#[command(
    after_help = "Protocol revisions: 2024-11-05, 2025-03-26, 2025-06-18 and 2025-11-25 \
(with an initialize handshake and, over HTTP, a session), and 2026-07-28 (stateless: every \
request stands alone, so any keyward process sharing the vault can answer it; no sticky \
sessions behind a load balancer).\n\nThe legacy HTTP+SSE transport (/sse, /messages; \
protocol 2024-11-05) is deprecated: it stays for old clients and gets no new features. Use \
Streamable HTTP at /mcp."
)]
pub struct ServeArgs {
    /// The keyward user whose connections a stdio session uses [default: default]
    #[arg(long)]
    user: Option<String>,
    /// Serve Streamable HTTP (/mcp) and the deprecated legacy SSE (/sse) instead of stdio
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = keyward::server::http::DEFAULT_ADDR)]
    http: Option<String>,
    /// Offer only these providers or provider:toolset groups (e.g. github,slack:chat)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    toolsets: Option<Vec<String>>,
    /// Offer only these tools (comma-separated names)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    tools: Option<Vec<String>>,
    /// Offer read-only tools only
    #[arg(long)]
    read_only: bool,
    /// List every tool, not only those of connected providers
    #[arg(long)]
    all_tools: bool,
    /// The provider account calls use when a user has several
    #[arg(long)]
    account: Option<String>,
    /// Log level on stderr (error, warn, info, debug, trace); RUST_LOG wins
    #[arg(long, value_name = "L")]
    log_level: Option<String>,
    /// HTTP: answer single replies with application/json instead of an SSE stream
    #[arg(long)]
    json_response: bool,
}

pub async fn run(home: &Home, args: ServeArgs) -> Result<()> {
    keyward::server::run(
        home,
        ServeOptions {
            user: args.user,
            http: args.http,
            toolsets: args.toolsets,
            tools: args.tools,
            read_only: args.read_only,
            all_tools: args.all_tools,
            account: args.account,
            log_level: args.log_level,
            json_response: args.json_response,
        },
    )
    .await
}
