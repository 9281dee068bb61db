//! A minimal HTTP/1.1 client over a raw [`TcpStream`]: one request per connection, the
//! response read with `Content-Length`, chunked transfer coding, or to end of stream.
//!
//! It exists so that the fan-out benchmark can hold ten thousand parked requests, each on its
//! own connection, with no buffer allocated until the answer starts to arrive.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A response: status, headers (names lower-cased) and the whole body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked coding removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `X-Consul-Index`, when present and numeric.
    pub fn consul_index(&self) -> Option<u64> {
        self.header("x-consul-index")?.trim().parse().ok()
    }
}

/// Writes one request; `body` is sent with a `Content-Length`.
pub async fn send_request(
    stream: &mut TcpStream,
    method: &str,
    host: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<()> {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: trellis-bench\r\n");
    if let Some(b) = body {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    stream.write_all(&bytes).await
}

/// Connects, sends one request and reads its response.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    send_request(&mut stream, method, addr, path, body).await?;
    read_response(&mut stream).await
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Reads more bytes into `buf`; end of stream is an error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(4096));
    }
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        ));
    }
    Ok(())
}

/// Reads one response. Until the first byte arrives it holds no buffer, so a parked request
/// costs only its socket and its task.
pub async fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    stream.readable().await?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n", 0) {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("response head too large"));
        }
        fill(stream, &mut buf).await?;
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>())
        .transpose()
        .map_err(|_| invalid("bad content-length"))?;
    let mut rest = buf.split_off(head_end + 4);
    drop(buf);
    let body = if chunked {
        read_chunked(stream, rest).await?
    } else if let Some(len) = length {
        while rest.len() < len {
            fill(stream, &mut rest).await?;
        }
        rest.truncate(len);
        rest
    } else {
        stream.read_to_end(&mut rest).await?;
        rest
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body whose first bytes are already in `buf`.
async fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = loop {
            if let Some(p) = find(&buf, b"\r\n", pos) {
                break p;
            }
            fill(stream, &mut buf).await?;
        };
        let size_text =
            std::str::from_utf8(&buf[pos..line_end]).map_err(|_| invalid("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line; we only need the empty line.
            loop {
                if let Some(p) = find(&buf, b"\r\n", pos) {
                    if p == pos {
                        return Ok(body);
                    }
                    pos = p + 2;
                    continue;
                }
                fill(stream, &mut buf).await?;
            }
        }
        while buf.len() < pos + size + 2 {
            fill(stream, &mut buf).await?;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}
