//! Frames on the vault socket, both ends.
//!
//! A frame is a 4-byte big-endian length and that many bytes of payload, at most [`MAX_FRAME`]:
//! the framing of tokio-util's `LengthDelimitedCodec`, which cuts the frames out of what a
//! [`FramedRead`] reads. The first frame each way is the hello, plain JSON; every later payload
//! starts with the 8-byte big-endian id of the request it belongs to, then the JSON. Id 0 marks
//! a notice, which the owner does not answer.
//!
//! Two things the codec alone does not do, which this module adds:
//!
//! - **A peer costs what it sends.** The codec reserves the whole announced length as soon as it
//!   has read a header, so a peer announcing 16 MiB and then stalling would cost 16 MiB.
//!   [`Frames`] hands a frame to the codec only once all of it is there, and grows the read
//!   buffer itself until then — to at most twice what has arrived — so memory follows the bytes,
//!   not the header. [`Reader::next_frame`] bounds the time: a frame that has started must be complete
//!   within its budget; how long to wait for its first byte is the caller's choice.
//! - **Frames are zeroized**: they carry tokens. The read buffer is only ever grown here, by
//!   copying into a larger one and zeroizing the bytes left behind: it always has room for the
//!   next read, so the reader's own `reserve` never reallocates behind our back, and the codec
//!   gets a buffer with room for the next header, so it reserves nothing either. A decoded
//!   [`Frame`] zeroizes its bytes when dropped. An outgoing frame is serialized into a buffer
//!   that zeroizes whatever it outgrows, and itself once sent ([`OutFrame`]); writes therefore
//!   go out with `write_all` rather than through the codec's encoder, whose write buffer would
//!   keep a copy of every frame.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::time::Instant;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};
use zeroize::Zeroize;

/// The largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// The length header.
const HEAD: usize = 4;
/// The request id at the start of every payload after the hello.
const ID: usize = 8;
/// The read buffer starts this large, whatever the header says: small frames arrive in one read.
const MIN_BUFFER: usize = 8 * 1024;

/// Cuts frames out of what a [`FramedRead`] reads (see the module docs).
pub(super) struct Frames {
    codec: LengthDelimitedCodec,
    /// When the first byte of the frame being read was seen; `None` between frames.
    started: Option<Instant>,
}

impl Frames {
    pub(super) fn new() -> Frames {
        Frames {
            codec: LengthDelimitedCodec::builder()
                .length_field_length(HEAD)
                .max_frame_length(MAX_FRAME)
                .big_endian()
                .new_codec(),
            started: None,
        }
    }
}

impl Decoder for Frames {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.is_empty() {
            self.started = None;
            make_room(src, MIN_BUFFER);
            return Ok(None);
        }
        self.started.get_or_insert_with(Instant::now);
        let Some(head) = src.get(..HEAD) else {
            make_room(src, HEAD);
            return Ok(None);
        };
        let len = u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        // The whole frame, plus room for the next header after it.
        let whole = HEAD + len;
        if src.len() < whole {
            make_room(src, whole + HEAD);
            return Ok(None);
        }
        if src.capacity() < whole + HEAD {
            grow(src, whole + HEAD);
        }
        let payload = self
            .codec
            .decode(src)?
            .expect("the codec gets whole frames only");
        self.started = (!src.is_empty()).then(Instant::now);
        Ok(Some(Frame(payload)))
    }
}

/// Make room for the next read when `src` is full: a buffer twice as large, but no larger than
/// `need` (what the frame being read needs, as far as it is known) and no smaller than
/// [`MIN_BUFFER`].
fn make_room(src: &mut BytesMut, need: usize) {
    if src.len() < src.capacity() {
        return;
    }
    let len = src.len();
    grow(src, (2 * len).min(need).max(MIN_BUFFER).max(len + 1));
}

/// Move the bytes of `src` into a buffer of `capacity` bytes and zeroize them where they were.
fn grow(src: &mut BytesMut, capacity: usize) {
    let mut bigger = BytesMut::with_capacity(capacity);
    bigger.extend_from_slice(src);
    src.as_mut().zeroize();
    *src = bigger;
}

/// One frame's payload, zeroized when dropped.
pub(super) struct Frame(BytesMut);

impl Frame {
    /// The payload as the JSON of a `T` (the hello frames).
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.0).map_err(FrameError::Malformed)
    }

    /// The request id at the start of the payload, and the JSON of a `T` after it.
    pub(super) fn with_id<T: DeserializeOwned>(&self) -> Result<(u64, T), FrameError> {
        let id = self.id()?;
        let value = serde_json::from_slice(&self.0[ID..]).map_err(FrameError::Malformed)?;
        Ok((id, value))
    }

    /// The request id at the start of the payload.
    pub(super) fn id(&self) -> Result<u64, FrameError> {
        let id = self.0.get(..ID).ok_or(FrameError::NoId)?;
        Ok(u64::from_be_bytes(id.try_into().expect("8 bytes")))
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        self.0.as_mut().zeroize();
    }
}

/// Why no frame could be read.
#[derive(Debug)]
pub(super) enum FrameError {
    /// The stream ended (or was reset) between frames: the peer closed it.
    Closed,
    /// Reading failed, timed out, or the stream ended inside a frame.
    Io(io::Error),
    /// The peer announced more than [`MAX_FRAME`] bytes.
    TooLarge(usize),
    /// A frame after the hello too short to hold a request id.
    NoId,
    /// The frame is not the JSON expected.
    Malformed(serde_json::Error),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("the connection was closed"),
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLarge(len) => write!(
                f,
                "a message of {len} bytes is larger than the {MAX_FRAME} bytes the vault socket carries"
            ),
            FrameError::NoId => f.write_str("a message without a request id"),
            FrameError::Malformed(e) => write!(f, "malformed message: {e}"),
        }
    }
}

/// The reading half of a connection, as frames. Whatever it holds when dropped — a frame cut
/// off by the end of the connection, say — is zeroized.
pub(super) struct Reader<R>(FramedRead<R, Frames>);

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(super) fn new(io: R) -> Reader<R> {
        Reader(FramedRead::new(io, Frames::new()))
    }

    /// The next frame. Its first byte must arrive by `first_byte_by()` (asked again whenever
    /// that time has come, so the answer may move on; `None`: wait for ever), the rest within
    /// `body` of the first byte.
    pub(super) async fn next_frame(
        &mut self,
        first_byte_by: impl Fn() -> Option<Instant>,
        body: Duration,
    ) -> Result<Frame, FrameError> {
        let reader = &mut self.0;
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut armed: Option<Instant> = None;
        std::future::poll_fn(|cx| {
            match reader.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Ok(frame)),
                Poll::Ready(Some(Err(FrameError::Io(e))))
                    if e.kind() == io::ErrorKind::ConnectionReset
                        && reader.decoder().started.is_none() =>
                {
                    return Poll::Ready(Err(FrameError::Closed))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                // The stream ended between frames (inside one, the codec reports an error first).
                Poll::Ready(None) => return Poll::Ready(Err(FrameError::Closed)),
                Poll::Pending => {}
            }
            let started = reader.decoder().started;
            let Some(deadline) = started.map(|t| t + body).or_else(&first_byte_by) else {
                return Poll::Pending;
            };
            if armed != Some(deadline) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    if started.is_some() {
                        "the message took too long to arrive"
                    } else {
                        "nothing arrived in time"
                    },
                )))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl<R> Drop for Reader<R> {
    fn drop(&mut self) {
        self.0.read_buffer_mut().as_mut().zeroize();
    }
}

/// An outgoing frame: length, request id (but in a hello), JSON. Zeroized when dropped.
pub(super) struct OutFrame(Vec<u8>);

impl OutFrame {
    /// A hello frame: JSON without a request id.
    pub(super) fn hello(value: &impl Serialize) -> io::Result<OutFrame> {
        OutFrame::build(None, value)
    }

    /// A frame of request `id` (set later with [`OutFrame::set_id`] if not known yet).
    pub(super) fn with_id(id: u64, value: &impl Serialize) -> io::Result<OutFrame> {
        OutFrame::build(Some(id), value)
    }

    /// Too large for the other side is an `InvalidInput` error, found before anything is sent:
    /// the other side would drop the connection, which would look like a dead peer.
    fn build(id: Option<u64>, value: &impl Serialize) -> io::Result<OutFrame> {
        let mut frame = OutFrame(Vec::with_capacity(512));
        frame.0.extend_from_slice(&[0; HEAD]);
        if let Some(id) = id {
            frame.0.extend_from_slice(&id.to_be_bytes());
        }
        serde_json::to_writer(&mut frame, value).map_err(io::Error::other)?;
        let len = frame.0.len() - HEAD;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a message of {len} bytes is larger than the {MAX_FRAME} bytes the vault socket carries"
                ),
            ));
        }
        frame.0[..HEAD].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(frame)
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Set the request id of a frame made with [`OutFrame::with_id`].
    pub(super) fn set_id(&mut self, id: u64) {
        self.0[HEAD..HEAD + ID].copy_from_slice(&id.to_be_bytes());
    }
}

/// Serialization appends here; outgrown buffers are zeroized, not just freed.
impl io::Write for OutFrame {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.0.capacity() - self.0.len() < bytes.len() {
            let mut bigger =
                Vec::with_capacity((2 * self.0.capacity()).max(self.0.len() + bytes.len()));
            bigger.extend_from_slice(&self.0);
            self.0.zeroize();
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for OutFrame {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The writing half of a connection, shared by whoever answers or asks on it. Each write has
/// `limit` to complete: a peer that stops reading does not hold a writer for ever. A write that
/// failed or timed out — or was cut off in the middle, its future dropped — leaves the stream
/// unusable: every later write then fails at once, and the other side sees the connection end.
pub(super) struct Writer {
    half: tokio::sync::Mutex<Half>,
    broken: AtomicBool,
    limit: Duration,
}

struct Half {
    stream: OwnedWriteHalf,
    /// A frame is being written (still set when that write was cut off).
    mid_frame: bool,
}

impl Writer {
    pub(super) fn new(stream: OwnedWriteHalf, limit: Duration) -> Writer {
        Writer {
            half: tokio::sync::Mutex::new(Half {
                stream,
                mid_frame: false,
            }),
            broken: AtomicBool::new(false),
            limit,
        }
    }

    pub(super) async fn send(&self, frame: &OutFrame) -> io::Result<()> {
        let mut half = self.half.lock().await;
        if half.mid_frame {
            self.broken.store(true, Ordering::SeqCst);
        }
        if self.is_broken() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection broke on an earlier message",
            ));
        }
        half.mid_frame = true;
        let sent = match tokio::time::timeout(self.limit, half.stream.write_all(&frame.0)).await {
            Ok(sent) => sent,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the other side stopped reading",
            )),
        };
        half.mid_frame = false;
        if sent.is_err() {
            self.broken.store(true, Ordering::SeqCst);
            let _ = half.stream.shutdown().await;
        }
        sent
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    /// A peer announcing 16 MiB and sending a few bytes costs the buffer it filled, not 16 MiB.
    #[test]
    fn a_large_announced_frame_costs_only_what_arrived() {
        let mut frames = Frames::new();
        // `FramedRead` starts with 8 KiB.
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.extend_from_slice(&(MAX_FRAME as u32).to_be_bytes());
        buf.extend_from_slice(b"{\"op\":\"ke");
        assert!(frames.decode(&mut buf).unwrap().is_none());
        assert!(frames.started.is_some(), "a frame has started");
        assert!(buf.capacity() <= MIN_BUFFER, "{}", buf.capacity());
        // Filling the buffer grows it by at most twice what is there.
        let filler = vec![b'x'; buf.capacity() - buf.len()];
        buf.extend_from_slice(&filler);
        let filled = buf.len();
        assert!(frames.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 2 * filled,
            "{} for {filled}",
            buf.capacity()
        );
        assert!(buf.capacity() > buf.len(), "room for the next read");
    }

    #[test]
    fn a_frame_larger_than_the_limit_is_refused_from_its_header() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(matches!(
            Frames::new().decode(&mut buf),
            Err(FrameError::TooLarge(len)) if len == MAX_FRAME + 1
        ));
    }

    /// Frames arriving in pieces, several at once, or ending exactly at the buffer's end all come
    /// out whole and in order, and the buffer always has room for the next read.
    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive() {
        let payloads: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                let mut p = 7u64.to_be_bytes().to_vec();
                p.extend(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "y".repeat(i * 997)).bytes());
                p
            })
            .collect();
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        for piece in [1, 3, 4096, 9000, stream.len()] {
            let mut frames = Frames::new();
            let mut buf = BytesMut::with_capacity(8 * 1024);
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                // What a read adds: at most the room there is, as `FramedRead` does.
                let mut chunk = chunk;
                while !chunk.is_empty() {
                    let room = buf.capacity() - buf.len();
                    assert!(room > 0, "no room for the next read");
                    let n = room.min(chunk.len());
                    buf.extend_from_slice(&chunk[..n]);
                    chunk = &chunk[n..];
                    while let Some(frame) = frames.decode(&mut buf).unwrap() {
                        out.push(frame);
                    }
                }
            }
            assert!(buf.is_empty() && frames.started.is_none());
            assert_eq!(out.len(), payloads.len(), "pieces of {piece}");
            for (i, frame) in out.iter().enumerate() {
                let (id, value) = frame.with_id::<serde_json::Value>().unwrap();
                assert_eq!((id, value["n"].as_u64()), (7, Some(i as u64)));
            }
        }
    }

    #[test]
    fn an_outgoing_frame_is_length_id_json() {
        let mut out = OutFrame::with_id(0, &serde_json::json!({"op": "keys"})).unwrap();
        out.set_id(42);
        let mut buf = BytesMut::from(out.bytes());
        let frame = Frames::new().decode(&mut buf).unwrap().unwrap();
        let (id, value) = frame.with_id::<serde_json::Value>().unwrap();
        assert_eq!((id, value), (42, serde_json::json!({"op": "keys"})));
        let too_large = OutFrame::hello(&"z".repeat(MAX_FRAME)).err().unwrap();
        assert_eq!(too_large.kind(), io::ErrorKind::InvalidInput);
    }
}
