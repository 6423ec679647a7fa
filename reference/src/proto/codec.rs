//! Byte-level reading and the decode error model shared by every message.
//!
//! Every decoder takes a byte slice and returns either the message with the number of bytes it
//! occupies, [`DecodeError::Incomplete`] when the slice is a strict prefix of a valid message, or
//! [`DecodeError::Invalid`] when no suffix could make it valid. Decoders never look past the end
//! of their own message, so bytes that follow (optimistic data, a pipelined request) stay with
//! the caller.

use super::ProtoError;

/// Why a decoder stopped without a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is a strict prefix of a valid message: read more and call again.
    #[error("incomplete message")]
    Incomplete,
    /// The input can never become a valid message.
    #[error(transparent)]
    Invalid(#[from] ProtoError),
}

/// The outcome of decoding: the message and the number of bytes it occupied.
pub type Decoded<T> = Result<(T, usize), DecodeError>;

/// A cursor over a byte slice that reports missing bytes as [`DecodeError::Incomplete`].
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian (network order) `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Incomplete)?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::Incomplete)?;
        self.pos = end;
        Ok(out)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a NUL-terminated string of at most `max` bytes (the NUL not counted) and consumes the
    /// NUL. A string that has not ended within `max + 1` bytes is invalid even if more input could
    /// arrive, which bounds the memory a peer can make us hold (catalogue ).
    pub fn nul_terminated(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.rest();
        match rest.iter().take(max.saturating_add(1)).position(|&b| b == 0) {
            Some(len) => {
                let s = &rest[..len];
                self.pos += len + 1;
                Ok(s)
            }
            None if rest.len() > max => Err(ProtoError::FieldTooLong { field, max }.into()),
            None => Err(DecodeError::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbounded_nul_terminated_field_reads_without_overflow() {
        // `usize::MAX` means "no cap": `max + 1` once overflowed here.
        let mut r = Reader::new(b"abc\0rest");
        assert_eq!(r.nul_terminated(usize::MAX, "F").ok(), Some(&b"abc"[..]));
        let mut r = Reader::new(b"abc");
        assert!(matches!(r.nul_terminated(usize::MAX, "F"), Err(DecodeError::Incomplete)));
    }
}
