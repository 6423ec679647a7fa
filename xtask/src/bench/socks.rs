//! The measurement client's side of SOCKS4 and SOCKS5, written out in raw bytes.
//!
//! It deliberately does not use socksref's client: the benchmark must treat every server alike,
//! and a bug in the reference client must not flatter (or hurt) the reference server.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

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
pub fn udp_header(dst: SocketAddrV4) -> [u8; 10] {
    let mut header = [0u8; 10];
    header[3] = 0x01;
    header[4..8].copy_from_slice(&dst.ip().octets());
    header[8..10].copy_from_slice(&dst.port().to_be_bytes());
    header
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
fn socks5_request(cmd: u8, addr: SocketAddrV4) -> [u8; 10] {
    let mut request = [0x05, cmd, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    request[4..8].copy_from_slice(&addr.ip().octets());
    request[8..10].copy_from_slice(&addr.port().to_be_bytes());
    request
}

/// Reads a SOCKS5 reply exactly (never a byte of payload past it) and returns BND.ADDR:BND.PORT.
async fn read_socks5_reply(stream: &mut TcpStream) -> io::Result<SocketAddr> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[0] != 0x05 || head[1] != 0x00 {
        return Err(io::Error::other(format!("SOCKS5 reply {:02x} {:02x}", head[0], head[1])));
    }
    let ip: std::net::IpAddr = match head[3] {
        0x01 => {
            let mut a = [0u8; 4];
            stream.read_exact(&mut a).await?;
            Ipv4Addr::from(a).into()
        }
        0x04 => {
            let mut a = [0u8; 16];
            stream.read_exact(&mut a).await?;
            std::net::Ipv6Addr::from(a).into()
        }
        0x03 => {
            // A name is useless to us as a relay address; skip it and fall back to "unspecified".
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            stream.read_exact(&mut name).await?;
            Ipv4Addr::UNSPECIFIED.into()
        }
        other => return Err(io::Error::other(format!("SOCKS5 reply ATYP {other:02x}"))),
    };
    let mut port = [0u8; 2];
    stream.read_exact(&mut port).await?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
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
