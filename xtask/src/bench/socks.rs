//! The measurement client's side of SOCKS4 and SOCKS5, written out in raw bytes.
//!
//! It deliberately does not use socksref's client: the benchmark must treat every server alike,
//! and a bug in the reference client must not flatter (or hurt) the reference server. The octets
//! of each message come from the sans-IO codec (`socksref::proto`), the one SOCKS encoding in the
//! workspace, whose bytes the catalogue's tests pin down.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socksref::proto::udp::UdpHeader;
use socksref::proto::v5::{ReplyMsg, Request};
use socksref::proto::{Address, Command, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the measurement client reaches a target: straight, or through a SOCKS server.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    /// Connect to the target directly: the loopback baseline.
    Direct,
    /// SOCKS5 without authentication, through the server at this address.
    Socks5(SocketAddr),
    /// SOCKS4 with an empty user id, through the server at this address.
    Socks4(SocketAddr),
}

/// Opens a TCP connection to `target` along `route`; for a proxy, returns once the server
/// replied "granted", so the stream then carries the tunnel's payload only.
pub async fn connect(route: Route, target: SocketAddrV4) -> io::Result<TcpStream> {
    match route {
        Route::Direct => {
            let stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        }
        Route::Socks5(proxy) => {
            let mut stream = socks5_open(proxy).await?;
            stream.write_all(&socks5_request(0x01, target)).await?;
            read_socks5_reply(&mut stream).await?;
            Ok(stream)
        }
        Route::Socks4(proxy) => {
            let mut stream = TcpStream::connect(proxy).await?;
            stream.set_nodelay(true)?;
            // VN=04 CD=01 (CONNECT) DSTPORT DSTIP, then an empty USERID ended by 00.
            let mut request = [0u8; 9];
            request[0] = 0x04;
            request[1] = 0x01;
            request[2..4].copy_from_slice(&target.port().to_be_bytes());
            request[4..8].copy_from_slice(&target.ip().octets());
            stream.write_all(&request).await?;
            let mut reply = [0u8; 8];
            stream.read_exact(&mut reply).await?;
            // VN=00, CD=5A means "request granted".
            if reply[0] != 0x00 || reply[1] != 0x5a {
                return Err(io::Error::other(format!("SOCKS4 reply {:02x} {:02x}", reply[0], reply[1])));
            }
            Ok(stream)
        }
    }
}

/// Asks the SOCKS5 server at `proxy` for a UDP relay for datagrams sent from `client`. Returns
/// the control connection (the association lives as long as it stays open) and the relay address.
pub async fn udp_associate(proxy: SocketAddr, client: SocketAddrV4) -> io::Result<(TcpStream, SocketAddr)> {
    let mut stream = socks5_open(proxy).await?;
    stream.write_all(&socks5_request(0x03, client)).await?;
    let mut relay = read_socks5_reply(&mut stream).await?;
    // RFC 1928 lets BND.ADDR be the unspecified address, meaning "the address you reached me on".
    if relay.ip().is_unspecified() {
        relay.set_ip(proxy.ip());
    }
    Ok((stream, relay))
}

/// The 10-byte SOCKS5 UDP request header for datagrams to `dst`: RSV=0000 FRAG=00 ATYP=01.
pub fn udp_header(dst: SocketAddrV4) -> Vec<u8> {
    let header = UdpHeader::new(SocketAddr::V4(dst).into());
    let mut out = Vec::with_capacity(header.encoded_len());
    // An IPv4 address always encodes (only an over-long name can fail), so the result is unused.
    let _ = header.encode(&mut out);
    out
}

/// Connects to `proxy` and negotiates SOCKS5 with "no authentication".
async fn socks5_open(proxy: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    // VER=05, one method offered: 00 (no authentication). The request is not pipelined behind
    // the greeting because not every peer tolerates that; all of them get the same round trips.
    stream.write_all(&[0x05, 0x01, 0x00]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice != [0x05, 0x00] {
        return Err(io::Error::other(format!("SOCKS5 method choice {:02x} {:02x}", choice[0], choice[1])));
    }
    Ok(stream)
}

/// A SOCKS5 request with command `cmd` for an IPv4 address: VER=05 CMD RSV=00 ATYP=01 ADDR PORT.
fn socks5_request(cmd: u8, addr: SocketAddrV4) -> Vec<u8> {
    let request = Request { command: Command(cmd), reserved: 0, address: SocketAddr::V4(addr).into() };
    let mut out = Vec::with_capacity(10);
    // An IPv4 address always encodes (only an over-long name can fail), so the result is unused.
    let _ = request.encode(&mut out);
    out
}

/// Reads a SOCKS5 reply exactly (never a byte of payload past it) and returns BND.ADDR:BND.PORT.
async fn read_socks5_reply(stream: &mut TcpStream) -> io::Result<SocketAddr> {
    // VER REP RSV ATYP first: a refusal is reported as such, whatever follows it.
    let mut reply = vec![0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[0] != 0x05 || reply[1] != Reply::SUCCEEDED.0 {
        return Err(io::Error::other(format!("SOCKS5 reply {:02x} {:02x}", reply[0], reply[1])));
    }
    // The first address octet tells the rest of the length (a name's length byte).
    reply.push(0);
    stream.read_exact(&mut reply[4..]).await?;
    let bad = |e: &dyn std::fmt::Display| io::Error::other(format!("SOCKS5 reply: {e}"));
    let addr_len = Address::wire_len(&reply[3..]).map_err(|e| bad(&e))?.unwrap_or(2);
    reply.resize(3 + addr_len, 0);
    stream.read_exact(&mut reply[5..]).await?;
    let (msg, _) = ReplyMsg::decode(&reply).map_err(|e| bad(&e))?;
    // A name is useless to us as a relay address: keep its port, fall back to "unspecified".
    let port = msg.address.port;
    Ok(msg.address.socket_addr().unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_header_names_the_destination() {
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0x1f90);
        assert_eq!(udp_header(dst), [0x00, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x1f, 0x90]);
    }

    #[test]
    fn connect_request_is_ipv4_connect() {
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80);
        assert_eq!(socks5_request(0x01, dst), [0x05, 0x01, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x50]);
    }
}
