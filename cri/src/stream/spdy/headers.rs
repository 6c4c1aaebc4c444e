//! SPDY/3 header blocks: `count, (name, value)*` with 32-bit lengths,
//! compressed with zlib seeded with the protocol's dictionary, one
//! compression context per direction for the whole connection.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::FrameError;

/// Decoded headers; names are lower-case, a value may hold several
/// NUL-separated values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The SPDY/3 dictionary: length-prefixed common header words, then a
/// tail of status codes, reasons, dates and media types.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &[&str] = &[
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    ];
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    for t in TAIL {
        d.extend_from_slice(t.as_bytes());
    }
    d
}

/// Decoded header blocks larger than this are refused.
const MAX_HEADERS: usize = 256 << 10;

pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    pub fn new() -> Self {
        let dict = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh stream accepts a dictionary; this cannot fail.
        let _ = deflate.set_dictionary(&dict);
        HeaderCodec {
            deflate,
            inflate: Decompress::new(true),
            dict,
        }
    }

    pub fn encode(&mut self, h: &Headers) -> Bytes {
        let mut raw = BytesMut::new();
        raw.put_u32(h.0.len() as u32);
        for (k, v) in &h.0 {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.to_ascii_lowercase().as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input: &[u8] = &raw;
        loop {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            let r = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            match r {
                Ok(_) if input.is_empty() && out.len() < out.capacity() => break,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        Bytes::from(out)
    }

    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let err = |m: String| FrameError::Headers(m);
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() >= MAX_HEADERS {
                return Err(err("header block too large".into()));
            }
            out.reserve(1024);
            let before_in = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match r {
                Ok(Status::Ok) | Ok(Status::BufError)
                    if input.is_empty() && out.len() < out.capacity() =>
                {
                    break
                }
                Ok(Status::StreamEnd) => break,
                Ok(_) => continue,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dict)
                        .map_err(|e| err(format!("dictionary: {e}")))?;
                }
                Err(e) => return Err(err(e.to_string())),
            }
        }
        parse(&out).ok_or_else(|| err("truncated name/value block".into()))
    }
}

fn parse(mut b: &[u8]) -> Option<Headers> {
    let take = |n: usize, b: &mut &[u8]| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h.to_vec())
    };
    let u32_of = |v: Vec<u8>| u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
    let count = u32_of(take(4, &mut b)?);
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = u32_of(take(4, &mut b)?);
        let name = take(n, &mut b)?;
        let n = u32_of(take(4, &mut b)?);
        let value = take(n, &mut b)?;
        out.push((
            String::from_utf8_lossy(&name).to_ascii_lowercase(),
            String::from_utf8_lossy(&value).into_owned(),
        ));
    }
    Some(Headers(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_protocols() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Adler-32 of the SPDY/3 dictionary (the DICTID peers check).
        let (mut a, mut b) = (1u32, 0u32);
        for x in &d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_round_trip_across_one_context() {
        let mut tx = HeaderCodec::new();
        let mut rx = HeaderCodec::new();
        for i in 0..3 {
            let h = Headers(vec![
                ("streamType".into(), "stdout".into()),
                ("requestid".into(), i.to_string()),
            ]);
            let block = tx.encode(&h);
            let got = rx.decode(&block).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.get("streamtype"), Some("stdout"));
            assert_eq!(got.get("requestid"), Some(i.to_string().as_str()));
        }
        assert!(rx.decode(b"\x78\xbb garbage").is_err());
    }
}
