//! `keyward serve`: MCP over stdin/stdout for one user.
//!
//! stdout carries nothing but JSON-RPC messages (logs go to stderr). The server stops when the
//! client closes stdin or on SIGTERM/SIGINT, and flushes the vault (the audit lines) before the
//! process exits.
//!
//! The transport is keyward's own ([`StdioTransport`]) rather than rmcp's line transport,
//! because rmcp says nothing about a line it cannot read (not JSON, too long) and answers a
//! batch with an error that carries no `id`: a client then waits forever for its request.
//! Each line is read with [`super::jsonrpc::parse`], which answers every unusable line the
//! way JSON-RPC requires, and the session goes on. A line may hold at most
//! [`super::jsonrpc::MAX_MESSAGE_BYTES`] (4 MiB) before its newline.

use std::sync::Arc;

use futures::StreamExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::{RoleServer, ServerInitializeError};
use rmcp::transport::Transport;
use rmcp::ServiceExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{self, Refusal, MAX_MESSAGE_BYTES};
use super::sign_in::SignIns;
use super::{random_id, KeywardServer, ServerState};
use crate::config::Config;
use crate::error::{Error, Result};

/// Serve one MCP client on stdin/stdout until it goes away or a signal arrives. `config` is for
/// the sign-ins a 2026-07-28 client may be asked to complete ([`super::sign_in`]).
pub async fn serve(state: Arc<ServerState>, user: &str, config: &Config) -> Result<()> {
    let session = format!("stdio-{}", random_id(6));
    tracing::info!(user, session, "serving MCP on stdio");
    let sign_ins = SignIns::new(config.clone(), state.offer().filter.read_only);
    let server =
        KeywardServer::for_user(state.clone(), user, session).with_sign_ins(Arc::new(sign_ins));
    let stop = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(stop.clone()));
    // The tools and the vault are built once `initialize` is answered (see `serve_until` and
    // `ServerState::start`), or when stdin closes first. If either cannot be (a bad manifest or
    // `--tools` name, a wrong master key, a home folder keyward does not trust) the server ends
    // with that error and its exit code, as it did when it built them before serving: requests
    // waiting for them are answered with the same message, and a client that left before they
    // were known still gets the exit code.
    let result = tokio::select! {
        result = serve_until(server, &state, stop) => match result {
            Ok(()) => state.ready().await,
            Err(e) => Err(e),
        },
        e = state.failed() => Err(super::unshared(e)),
    };
    signals.abort();
    state.flush().await;
    result
}

async fn serve_until(
    server: KeywardServer,
    state: &ServerState,
    stop: CancellationToken,
) -> Result<()> {
    let running = tokio::select! {
        // Pipes (how MCP clients launch stdio servers) are read and written on the IO reactor;
        // anything else falls back to tokio's blocking stdin/stdout. The blocking handles cost
        // two thread hand-offs per message, which on a small machine is most of what a tool
        // call with a short answer costs.
        running = server.serve_with_ct(StdioTransport::new(rmcp::transport::stdio_pipes()), stop.child_token()) => running,
        _ = stop.cancelled() => return Ok(()),
    };
    let running = match running {
        Ok(running) => running,
        // A client that closes stdin before initializing is a normal way to end.
        Err(ServerInitializeError::ConnectionClosed(why)) => {
            tracing::info!("the client went away before initializing: {why}");
            return Ok(());
        }
        Err(ServerInitializeError::Cancelled) => return Ok(()),
        Err(e) => return Err(Error::other(format!("MCP initialization failed: {e}"))),
    };
    // `initialize` is answered: now build what the requests after it need (until here it
    // would only have competed with the answer for the CPU).
    state.begin();
    match running.waiting().await {
        Ok(reason) => {
            tracing::info!(?reason, "MCP session ended");
            Ok(())
        }
        Err(e) => Err(Error::other(format!("the MCP session failed: {e}"))),
    }
}

/// Cancel `stop` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    stop.cancel();
}

/// MCP over a byte stream of newline-delimited JSON-RPC messages (stdin/stdout).
pub struct StdioTransport<R, W> {
    lines: FramedRead<R, Lines>,
    out: Arc<Mutex<W>>,
    /// The write of the last error reply. `receive` runs inside rmcp's `select!` and may be
    /// dropped at any await: the reply is written by its own task, so it is never cut in half,
    /// and the next `receive` waits for it, so a flood of bad lines cannot queue up unbounded.
    replying: Option<JoinHandle<()>>,
}

impl<R: AsyncRead, W> StdioTransport<R, W> {
    pub fn new((read, write): (R, W)) -> Self {
        StdioTransport {
            lines: FramedRead::new(read, Lines::default()),
            out: Arc::new(Mutex::new(write)),
            replying: None,
        }
    }
}

/// Write `bytes` (whole messages) to `out` and flush, while holding the lock so messages never
/// interleave.
async fn write_all<W: AsyncWrite + Unpin>(out: &Mutex<W>, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = out.lock().await;
    out.write_all(bytes).await?;
    out.flush().await
}

impl<R, W> Transport<RoleServer> for StdioTransport<R, W>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl std::future::Future<Output = std::result::Result<(), Self::Error>> + Send + 'static
    {
        let out = self.out.clone();
        async move {
            let mut line = serde_json::to_vec(&item)?;
            line.push(b'\n');
            write_all(&out, &line).await
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            if let Some(replying) = &mut self.replying {
                let _ = replying.await;
                self.replying = None;
            }
            let refusal = match self.lines.next().await? {
                Ok(Line::Text(line)) => {
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match jsonrpc::parse(line) {
                        Ok(message) => return Some(message),
                        Err(refusal) => refusal,
                    }
                }
                Ok(Line::TooLong) => Refusal::too_long(),
                Err(e) => {
                    tracing::error!("reading stdin failed: {e}");
                    return None;
                }
            };
            tracing::warn!(
                "answered a message keyward cannot read: {}",
                refusal.reason()
            );
            let mut bytes = Vec::new();
            for reply in refusal.replies() {
                bytes.extend_from_slice(reply.to_string().as_bytes());
                bytes.push(b'\n');
            }
            if !bytes.is_empty() {
                let out = self.out.clone();
                self.replying = Some(tokio::spawn(async move {
                    if let Err(e) = write_all(&out, &bytes).await {
                        tracing::debug!("could not answer on stdout: {e}");
                    }
                }));
            }
        }
    }

    async fn close(&mut self) -> std::result::Result<(), Self::Error> {
        if let Some(replying) = self.replying.take() {
            let _ = replying.await;
        }
        Ok(())
    }
}

/// One line of input, at most [`MAX_MESSAGE_BYTES`] long.
#[derive(Debug, PartialEq)]
enum Line {
    /// A line without its `\n`.
    Text(BytesMut),
    /// A line over the limit: dropped without being buffered whole.
    TooLong,
}

/// Splits input into [`Line`]s, never holding more than the limit of one line. (tokio's
/// `LinesCodec` ends the stream on an over-long or non-UTF-8 line; a bad line must not end the
/// session.)
#[derive(Debug)]
struct Lines {
    max: usize,
    /// Dropping the rest of a line already reported as too long.
    discarding: bool,
    /// How much of the buffer is known to hold no newline.
    scanned: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            max: MAX_MESSAGE_BYTES,
            discarding: false,
            scanned: 0,
        }
    }
}

impl Decoder for Lines {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Line>> {
        loop {
            let newline = buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| i + self.scanned);
            match (self.discarding, newline) {
                (true, Some(end)) => {
                    buf.advance(end + 1);
                    self.discarding = false;
                    self.scanned = 0;
                }
                (true, None) => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                (false, Some(end)) => {
                    self.scanned = 0;
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    if line.len() > self.max {
                        return Ok(Some(Line::TooLong));
                    }
                    return Ok(Some(Line::Text(line)));
                }
                (false, None) if buf.len() > self.max => {
                    buf.clear();
                    self.discarding = true;
                    self.scanned = 0;
                    return Ok(Some(Line::TooLong));
                }
                (false, None) => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Line>> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.scanned = 0;
        // A last line without a newline is still a message.
        if self.discarding || buf.is_empty() {
            buf.clear();
            return Ok(None);
        }
        Ok(Some(Line::Text(buf.split())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], max: usize) -> Vec<Line> {
        let mut codec = Lines {
            max,
            ..Lines::default()
        };
        let mut out = Vec::new();
        // Feed a byte at a time: lines must come out the same however the input is cut.
        let mut buf = BytesMut::new();
        for byte in input {
            buf.extend_from_slice(&[*byte]);
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                out.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(BytesMut::from(s))
    }

    #[test]
    fn lines_over_the_limit_are_dropped_and_the_next_ones_read() {
        assert_eq!(
            split(b"abc\n0123456789\nxyz\n012345\nlast", 5),
            vec![
                text("abc"),
                Line::TooLong,
                text("xyz"),
                Line::TooLong,
                text("last")
            ]
        );
        assert_eq!(
            split(b"12345\n123456", 5),
            vec![text("12345"), Line::TooLong]
        );
        assert_eq!(split(b"\n\n", 5), vec![text(""), text("")]);
    }
}
