//! xtaci/smux v1.5.31 frames (docs/gost.md §5.1), as gost's MBIND (`F2`) uses them:
//! `VER(1) CMD(1) LEN(2, LE) SID(4, LE) payload`.
//!
//! Only PSH and UPD carry a payload (LEN bytes, and exactly 8 for UPD); xtaci's reader reads a
//! payload for no other command, so SYN/FIN/NOP with LEN≠0 would desynchronise the stream — we
//! reject them as invalid rather than guess.

use super::codec::{DecodeError, Reader};
use super::ProtoError;

/// smux protocol version 1 (no flow-control frames) — gost's default.
pub const VERSION_1: u8 = 1;
/// smux protocol version 2 (per-stream windows with UPD frames).
pub const VERSION_2: u8 = 2;
/// Header length.
pub const HEADER_LEN: usize = 8;
/// gost's and xtaci's default largest PSH payload sent.
pub const MAX_FRAME_SIZE: usize = 32_768;

/// Frame commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// `00` open a stream.
    Syn,
    /// `01` close a stream (a full close: no half-close in smux).
    Fin,
    /// `02` data.
    Psh,
    /// `03` keepalive, sid 0.
    Nop,
    /// `04` window update (v2 only): consumed and window, both u32 LE.
    Upd,
}

impl Cmd {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Cmd::Syn => 0,
            Cmd::Fin => 1,
            Cmd::Psh => 2,
            Cmd::Nop => 3,
            Cmd::Upd => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Cmd::Syn,
            1 => Cmd::Fin,
            2 => Cmd::Psh,
            3 => Cmd::Nop,
            4 => Cmd::Upd,
            _ => return None,
        })
    }
}

/// One frame, borrowing its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Protocol version (must match the session's).
    pub version: u8,
    /// Command.
    pub cmd: Cmd,
    /// Stream id.
    pub sid: u32,
    /// Payload (PSH data, UPD's 8 bytes; empty otherwise).
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Decodes one frame of a session running `version`. Never reads past the frame.
    pub fn decode(input: &'a [u8], version: u8) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(input);
        let ver = r.u8()?;
        if ver != version {
            return Err(DecodeError::Invalid(ProtoError::BadVersion { expected: version, got: ver }));
        }
        let byte = r.u8()?;
        let cmd = Cmd::from_byte(byte).ok_or(DecodeError::Invalid(ProtoError::UnknownSmuxCommand(byte)))?;
        let len = u16::from_le_bytes(r.array()?) as usize;
        let sid = u32::from_le_bytes(r.array()?);
        let ok_len = match cmd {
            Cmd::Psh => true,
            Cmd::Upd => len == 8 && version >= VERSION_2,
            Cmd::Syn | Cmd::Fin | Cmd::Nop => len == 0,
        };
        if !ok_len {
            return Err(DecodeError::Invalid(ProtoError::SmuxLength { cmd: byte, len }));
        }
        let payload = r.take(len)?;
        Ok((Self { version: ver, cmd, sid, payload }, r.consumed()))
    }

    /// Appends a frame. A payload longer than 65535 bytes is refused.
    pub fn encode(version: u8, cmd: Cmd, sid: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let len = u16::try_from(payload.len())
            .map_err(|_| ProtoError::FieldTooLong { field: "smux payload", max: u16::MAX as usize })?;
        out.push(version);
        out.push(cmd.to_byte());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&sid.to_le_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The payload of a v2 window update: bytes consumed so far and the receive window.
    pub fn upd_payload(consumed: u32, window: u32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&consumed.to_le_bytes());
        b[4..].copy_from_slice(&window.to_le_bytes());
        b
    }

    /// `(consumed, window)` of a UPD frame.
    pub fn upd_values(&self) -> Option<(u32, u32)> {
        let p: &[u8; 8] = self.payload.try_into().ok()?;
        Some((u32::from_le_bytes([p[0], p[1], p[2], p[3]]), u32::from_le_bytes([p[4], p[5], p[6], p[7]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::hex::decode as hex;

    fn enc(version: u8, cmd: Cmd, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::encode(version, cmd, sid, payload, &mut out).unwrap();
        out
    }

    #[test]
    fn spec_mbind_example_bytes() {
        // §4.5: SYN sid 3, PSH with the per-stream reply, FIN, NOP.
        assert_eq!(enc(1, Cmd::Syn, 3, b""), hex("01 00 00 00 03 00 00 00"));
        assert_eq!(
            enc(1, Cmd::Psh, 3, &hex("05 00 00 01 7f 00 00 01 c3 50")),
            hex("01 02 0a 00 03 00 00 00 05 00 00 01 7f 00 00 01 c3 50")
        );
        assert_eq!(enc(1, Cmd::Fin, 3, b""), hex("01 01 00 00 03 00 00 00"));
        assert_eq!(enc(1, Cmd::Nop, 0, b""), hex("01 03 00 00 00 00 00 00"));
        assert_eq!(
            enc(2, Cmd::Upd, 5, &Frame::upd_payload(0x8000, 0x10000)),
            hex("02 04 08 00 05 00 00 00 00 80 00 00 00 00 01 00")
        );
    }

    #[test]
    fn decode_round_trips_and_waits_for_whole_frames() {
        let bytes = hex("01 02 0a 00 03 00 00 00 05 00 00 01 7f 00 00 01 c3 50");
        for cut in 0..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..cut], 1), Err(DecodeError::Incomplete), "cut {cut}");
        }
        let mut two = bytes.clone();
        two.extend(hex("01 03 00 00 00 00 00 00"));
        let (f, n) = Frame::decode(&two, 1).unwrap();
        assert_eq!((f.cmd, f.sid, f.payload.len(), n), (Cmd::Psh, 3, 10, 18));
        let (f, n) = Frame::decode(&two[n..], 1).unwrap();
        assert_eq!((f.cmd, f.sid, n), (Cmd::Nop, 0, 8));
        let upd = hex("02 04 08 00 05 00 00 00 00 80 00 00 00 00 01 00");
        let (f, _) = Frame::decode(&upd, 2).unwrap();
        assert_eq!(f.upd_values(), Some((0x8000, 0x10000)));
    }

    #[test]
    fn wrong_version_unknown_command_and_bad_lengths_are_invalid() {
        for (bytes, version) in [
            ("02 03 00 00 00 00 00 00", 1),          // v2 frame on a v1 session
            ("01 05 00 00 00 00 00 00", 1),          // unknown command
            ("01 00 01 00 03 00 00 00 ff", 1),       // SYN with a payload
            ("01 04 08 00 03 00 00 00", 1),          // UPD on v1
            ("02 04 04 00 03 00 00 00 00000000", 2), // UPD of 4 bytes
        ] {
            assert!(matches!(Frame::decode(&hex(bytes), version), Err(DecodeError::Invalid(_))), "{bytes}");
        }
    }
}
