//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners that opt
//! in: the load balancer in front of us opens each connection with one
//! header naming the client it relays, and the session uses that client's
//! address for limits, trust, logs and `Received:`.
//!
//! The header is read with exact reads, never past its end: whatever follows
//! belongs to the session, or to the TLS handshake on an implicit-TLS port.
//! Parsing the header once read is the `ppp` crate's; this module owns the
//! bounds (how much, how long) and what each kind of header means here.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest wait for the header; shorter when `limits.command_timeout_secs`
/// is. A proxy sends it at once, so only a stuck or hostile peer waits.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// Longest version 2 payload (addresses and TLVs) accepted. The format allows
/// 65535 octets; addresses take at most 216 and the TLVs load balancers add
/// (TLS details, endpoint ids, unique ids) a few hundred.
const V2_MAX_PAYLOAD: usize = 4096;
/// Read first: the v2 signature's length, and shorter than any v1 header
/// (`PROXY UNKNOWN\r\n` is 15), so it never reads past either.
const START: usize = 12;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection: the client's address and the one it connected to.
    Proxied { client: SocketAddr, server: SocketAddr },
    /// The proxy speaking for itself (v2 `LOCAL`, used for health checks) or
    /// a connection it cannot describe (v1 `UNKNOWN`, v2 UNIX or unspecified
    /// family): the specification says to use the TCP peer's addresses.
    Local,
}

/// Why a connection's header was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Closed before sending anything: what a load balancer's plain TCP
    /// health check does. Not worth a warning.
    #[error("closed before sending anything")]
    Empty,
    #[error("closed in the middle of the PROXY header")]
    Closed,
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("read failed: {0}")]
    Io(io::Error),
    #[error("no PROXY header: the connection starts with \"{0}\"")]
    Missing(String),
    #[error("PROXY v1 header longer than {V1_MAX} octets or not ended by CRLF")]
    V1TooLong,
    #[error("invalid PROXY v1 header: {0}")]
    V1(String),
    #[error("PROXY v2 header carries {0} octets of addresses and TLVs, over the limit of {V2_MAX_PAYLOAD}")]
    V2TooLong(usize),
    #[error("invalid PROXY v2 header: {0}")]
    V2(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Closed
        } else {
            Error::Io(e)
        }
    }
}

/// Reads one PROXY header (v1 or v2) from the start of a connection, within
/// `timeout`, consuming nothing after it.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R, timeout: Duration) -> Result<Header, Error> {
    tokio::time::timeout(timeout, read(r)).await.map_err(|_| Error::Timeout(timeout))?
}

async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Header, Error> {
    let mut buf = vec![0u8; START];
    let mut got = 0;
    while got < START {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(if got == 0 { Error::Empty } else { Error::Closed });
        }
        got += n;
        // Checked as the octets arrive, so a client that speaks SMTP (or
        // TLS) straight away is refused at once rather than at the timeout.
        if !could_start_header(&buf[..got]) {
            return Err(Error::Missing(buf[..got].escape_ascii().to_string()));
        }
    }
    if buf == V2_SIGNATURE {
        read_v2(r, buf).await
    } else {
        read_v1(r, buf).await
    }
}

fn could_start_header(b: &[u8]) -> bool {
    let n = b.len().min(V1_PREFIX.len());
    b[..n] == V1_PREFIX[..n] || V2_SIGNATURE.starts_with(b)
}

/// A v1 header is a line: read octet by octet up to its CRLF, since any
/// larger read could take octets of the session with it.
async fn read_v1<R: AsyncRead + Unpin>(r: &mut R, mut buf: Vec<u8>) -> Result<Header, Error> {
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_MAX || buf.ends_with(b"\n") {
            return Err(Error::V1TooLong);
        }
        buf.push(r.read_u8().await?);
    }
    let header = ppp::v1::Header::try_from(buf.as_slice()).map_err(|e| Error::V1(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Header::Proxied {
            client: SocketAddr::from((a.source_address, a.source_port)),
            server: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        ppp::v1::Addresses::Tcp6(a) => Header::Proxied {
            client: canonical(SocketAddr::from((a.source_address, a.source_port))),
            server: canonical(SocketAddr::from((a.destination_address, a.destination_port))),
        },
        ppp::v1::Addresses::Unknown => Header::Local,
    })
}

/// A v2 header says its own length after the signature: read the 4 octets
/// with it, then exactly that many more.
async fn read_v2<R: AsyncRead + Unpin>(r: &mut R, mut buf: Vec<u8>) -> Result<Header, Error> {
    buf.resize(START + 4, 0);
    r.read_exact(&mut buf[START..]).await?;
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > V2_MAX_PAYLOAD {
        return Err(Error::V2TooLong(len));
    }
    buf.resize(START + 4 + len, 0);
    r.read_exact(&mut buf[START + 4..]).await?;
    let header = ppp::v2::Header::try_from(buf.as_slice()).map_err(|e| Error::V2(e.to_string()))?;
    if header.command == ppp::v2::Command::Local {
        return Ok(Header::Local);
    }
    let inet = matches!(header.addresses, ppp::v2::Addresses::IPv4(_) | ppp::v2::Addresses::IPv6(_));
    if inet && header.protocol == ppp::v2::Protocol::Datagram {
        return Err(Error::V2("it describes a UDP connection".into()));
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Header::Proxied {
            client: SocketAddr::from((a.source_address, a.source_port)),
            server: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        ppp::v2::Addresses::IPv6(a) => Header::Proxied {
            client: canonical(SocketAddr::from((a.source_address, a.source_port))),
            server: canonical(SocketAddr::from((a.destination_address, a.destination_port))),
        },
        ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => Header::Local,
    })
}

/// A dual-stack socket (a `[::]` listener, or a proxy's) reports IPv4
/// clients as `::ffff:a.b.c.d`; as plain IPv4 they match IPv4
/// `trusted_networks` and share one limit.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn v2(ver_cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[ver_cmd, fam]);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    /// Parses `input` and returns the header and what was left unread.
    async fn parse(input: &[u8]) -> (Result<Header, Error>, Vec<u8>) {
        let mut r = input;
        let h = read_header(&mut r, T).await;
        (h, r.to_vec())
    }

    fn proxied(client: &str, server: &str) -> Header {
        Header::Proxied { client: client.parse().unwrap(), server: server.parse().unwrap() }
    }

    #[tokio::test]
    async fn v1_is_read_up_to_its_crlf_and_no_further() {
        let (h, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 587\r\nEHLO x\r\n").await;
        assert_eq!(h.unwrap(), proxied("203.0.113.7:51234", "10.0.0.1:587"));
        assert_eq!(rest, b"EHLO x\r\n");
        let (h, _) = parse(b"PROXY TCP6 ::ffff:198.51.100.2 2001:db8::1 1 25\r\n").await;
        assert_eq!(h.unwrap(), proxied("198.51.100.2:1", "[2001:db8::1]:25"));
        let (h, rest) = parse(b"PROXY UNKNOWN\r\n\x16\x03\x01").await;
        assert_eq!(h.unwrap(), Header::Local);
        assert_eq!(rest, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn v2_is_read_to_its_stated_length_and_no_further() {
        let mut payload = vec![203, 0, 113, 7, 10, 0, 0, 1];
        payload.extend_from_slice(&51234u16.to_be_bytes());
        payload.extend_from_slice(&465u16.to_be_bytes());
        payload.extend_from_slice(&[0x04, 0, 2, 0, 0]); // a NOOP TLV
        let mut input = v2(0x21, 0x11, &payload);
        input.extend_from_slice(b"\x16\x03\x01");
        let (h, rest) = parse(&input).await;
        assert_eq!(h.unwrap(), proxied("203.0.113.7:51234", "10.0.0.1:465"));
        assert_eq!(rest, b"\x16\x03\x01");

        let mut payload = Vec::new();
        payload.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        payload.extend_from_slice(&[0, 80, 2, 75]);
        let (h, _) = parse(&v2(0x21, 0x21, &payload)).await;
        assert_eq!(h.unwrap(), proxied("[2001:db8::7]:80", "[2001:db8::1]:587"));
    }

    #[tokio::test]
    async fn local_unix_and_unspecified_mean_the_peer_itself() {
        assert_eq!(parse(&v2(0x20, 0x00, &[])).await.0.unwrap(), Header::Local);
        // LOCAL with addresses: they are ignored.
        assert_eq!(parse(&v2(0x20, 0x11, &[1; 12])).await.0.unwrap(), Header::Local);
        assert_eq!(parse(&v2(0x21, 0x00, &[])).await.0.unwrap(), Header::Local);
        assert_eq!(parse(&v2(0x21, 0x31, &[0; 216])).await.0.unwrap(), Header::Local);
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"EHLO client.example\r\n", "no PROXY header"),
            (b"\x16\x03\x01\x02\x00", "no PROXY header"),
            (b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n", "invalid PROXY v1"),
            (b"PROXY TCP4 192.0.2.1 10.0.0.1 1\r\n", "invalid PROXY v1"),
            (b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\n", "not ended by CRLF"),
            (b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8\r\n", "longer than 107"),
            (b"PROXY TCP4 192.0.2.1", "in the middle"),
            (b"", "closed before sending anything"),
        ];
        for (input, expect) in cases {
            let (h, _) = parse(input).await;
            let e = h.unwrap_err().to_string();
            assert!(e.contains(expect), "{:?}: {e}", input.escape_ascii().to_string());
        }
        let bad_version = v2(0x11, 0x11, &[0; 12]);
        assert!(parse(&bad_version).await.0.unwrap_err().to_string().contains("invalid PROXY v2"));
        let udp = v2(0x21, 0x12, &[0; 12]);
        assert!(parse(&udp).await.0.unwrap_err().to_string().contains("UDP"));
        let short = v2(0x21, 0x11, &[0; 8]);
        assert!(parse(&short).await.0.unwrap_err().to_string().contains("invalid PROXY v2"));
        // Refused on the length alone, before its payload is read.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&huge).await.0.unwrap_err().to_string().contains("65535 octets"));
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let e = read_header(&mut server, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
    }
}
