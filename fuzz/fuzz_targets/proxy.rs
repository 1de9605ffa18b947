//! The PROXY protocol header reader (`net::proxy::read_header`), v1 and v2.
//!
//! Input: one octet saying how many read lengths follow (0 to 7), those
//! lengths, then the octets the load balancer sends. The header is read
//! three ways: from a reader that has everything at once, from one whose
//! reads return the lengths the input picks, and one octet per read.
//!
//! Checks, beyond "no panic":
//! - the three give the same header, or the same kind of error, and a
//!   header accepted consumes the same octets: how the network splits the
//!   header changes nothing;
//! - nothing after the header is consumed: a v1 header is the octets up to
//!   and including its first CRLF (at most 107), as `ppp` parses them; a v2
//!   header is its 16 octets plus the length it states (at most 4096);
//!   whatever follows stays for the session or the TLS handshake;
//! - a refused header consumes at most those bounds too;
//! - a relayed connection's addresses are canonical (no `::ffff:a.b.c.d`),
//!   and what is returned is what `ppp` reads in the consumed octets; a v2
//!   header for a UDP connection is refused;
//! - an empty connection is `Empty`, one that starts with anything else than
//!   the v1 or v2 signature is `Missing`.
#![no_main]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mailferry::net::proxy::{read_header, Error, Header};
use tokio::io::{AsyncRead, ReadBuf};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

/// A connection whose reads return at most the given lengths, in turn.
struct Chunked<'a> {
    data: &'a [u8],
    at: usize,
    lens: &'a [usize],
    turn: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let len = self.lens[self.turn % self.lens.len()];
        self.turn += 1;
        let n = len.min(buf.remaining()).min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Header(Header),
    /// The error's kind (its text may quote what was read so far).
    Error(&'static str),
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Empty => "Empty",
        Error::Closed => "Closed",
        Error::Timeout(_) => "Timeout",
        Error::Io(_) => "Io",
        Error::Missing(_) => "Missing",
        Error::V1TooLong => "V1TooLong",
        Error::V1(_) => "V1",
        Error::V2TooLong(_) => "V2TooLong",
        Error::V2(_) => "V2",
    }
}

fn read(data: &[u8], lens: &[usize]) -> (Outcome, usize) {
    let mut conn = Chunked { data, at: 0, lens, turn: 0 };
    let r = runtime().block_on(read_header(&mut conn, Duration::from_secs(60)));
    let outcome = match r {
        Ok(h) => Outcome::Header(h),
        Err(e) => Outcome::Error(kind(&e)),
    };
    (outcome, conn.at)
}

fuzz_target!(|input: &[u8]| {
    let [n, rest @ ..] = input else { return };
    let n = (*n as usize % 8).min(rest.len());
    let (cuts, data) = rest.split_at(n);

    let v2 = data.starts_with(V2_SIGNATURE);
    let bound = if v2 { 16 + 4096 } else { 107 };
    let whole = read(data, &[usize::MAX]);
    let lens: Vec<usize> = cuts.iter().map(|&c| c as usize % 32 + 1).collect();
    let mut others = vec![(read(data, &[1]), "octet-by-octet reads".to_string())];
    if !lens.is_empty() {
        others.push((read(data, &lens), format!("reads of {lens:?}")));
    }
    for ((outcome, used), how) in others {
        assert!(used <= bound, "{how} consumed {used} octets");
        assert_eq!(outcome, whole.0, "{how} changed the result");
        // A refused connection is closed: how much of it was read before
        // the refusal may depend on the reads (never past the bound).
        if matches!(outcome, Outcome::Header(_)) {
            assert_eq!(used, whole.1, "{how} consumed another number of octets");
        }
    }

    let (outcome, used) = whole;
    let head = &data[..used];
    assert!(used <= bound, "consumed {used} octets");

    match outcome {
        Outcome::Header(h) => {
            if let Header::Proxied { client, server } = h {
                for a in [client, server] {
                    assert_eq!(a.ip(), a.ip().to_canonical(), "{a} is not canonical");
                }
            }
            if v2 {
                let p = ppp::v2::Header::try_from(head).expect("ppp refuses the consumed octets");
                assert_eq!(p.len(), used, "consumed more or less than the v2 header");
                assert_eq!(used, 16 + u16::from_be_bytes([data[14], data[15]]) as usize);
                let want = if p.command == ppp::v2::Command::Local {
                    Header::Local
                } else {
                    match p.addresses {
                        ppp::v2::Addresses::IPv4(a) => {
                            assert_ne!(p.protocol, ppp::v2::Protocol::Datagram, "a UDP header was accepted");
                            proxied((a.source_address, a.source_port), (a.destination_address, a.destination_port))
                        }
                        ppp::v2::Addresses::IPv6(a) => {
                            assert_ne!(p.protocol, ppp::v2::Protocol::Datagram, "a UDP header was accepted");
                            proxied((a.source_address, a.source_port), (a.destination_address, a.destination_port))
                        }
                        _ => Header::Local,
                    }
                };
                assert_eq!(h, want);
            } else {
                assert!(head.ends_with(b"\r\n"), "v1 header without its CRLF");
                assert_eq!(head.iter().position(|&b| b == b'\n'), Some(used - 1), "read past the first line");
                let p = ppp::v1::Header::try_from(head).expect("ppp refuses the consumed octets");
                assert_eq!(p.header.len(), used, "ppp read a shorter header than was consumed");
                let want = match p.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        proxied((a.source_address, a.source_port), (a.destination_address, a.destination_port))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        proxied((a.source_address, a.source_port), (a.destination_address, a.destination_port))
                    }
                    ppp::v1::Addresses::Unknown => Header::Local,
                };
                assert_eq!(h, want);
            }
        }
        Outcome::Error(kind) => {
            if data.is_empty() {
                assert_eq!(kind, "Empty");
            }
            let start = &data[..data.len().min(12)];
            let could = start.starts_with(&b"PROXY "[..start.len().min(6)]) || V2_SIGNATURE.starts_with(start);
            if !could {
                assert_eq!(kind, "Missing", "{:?}", start.escape_ascii().to_string());
            }
            if kind == "Missing" {
                assert!(!could, "{:?} could start a header", start.escape_ascii().to_string());
            }
            assert!(!matches!(kind, "Timeout" | "Io"), "{kind}");
        }
    }
});

fn proxied<A: Into<std::net::IpAddr>>(client: (A, u16), server: (A, u16)) -> Header {
    let canonical = |(ip, port): (A, u16)| {
        let ip: std::net::IpAddr = ip.into();
        SocketAddr::new(ip.to_canonical(), port)
    };
    Header::Proxied { client: canonical(client), server: canonical(server) }
}
