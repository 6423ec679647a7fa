//! kcp-go's block crypt layer (docs/kcp.md "Datagram"): every datagram is
//! `nonce(16) | crc32(4) | payload`, then the whole datagram is encrypted with the session cipher.
//! The key is PBKDF2-HMAC-SHA1 of gost's `key` with the salt `kcp-go`, 4096 rounds, 32 bytes;
//! block ciphers run in CFB mode over the whole datagram with kcp-go's fixed IV (the random nonce
//! in the first block is what makes each datagram's keystream differ).
//!
//! Sans-IO: [`BlockCrypt::seal`] and [`BlockCrypt::open`] work on byte buffers.

use aes::cipher::{AsyncStreamCipher, BlockCipher, BlockEncryptMut, InnerIvInit, KeyInit, KeyIvInit, StreamCipher};
use rand::RngCore;

/// Nonce bytes at the start of every datagram.
pub const NONCE_LEN: usize = 16;
/// Nonce plus the CRC-32 that follows it.
pub const HEADER_LEN: usize = NONCE_LEN + 4;

/// kcp-go's CFB initial vector (fixed; the per-packet nonce provides the variation).
const IV: [u8; 16] = [167, 115, 79, 156, 18, 172, 27, 1, 164, 21, 242, 193, 252, 120, 230, 107];
/// Salt gost passes to PBKDF2 for the session key.
const KEY_SALT: &[u8] = b"kcp-go";
/// Salt and table size of kcp-go's `xor` "cipher".
const XOR_SALT: &[u8] = b"sH3CIVoF#rWLtJo6";
const XOR_TABLE_LEN: usize = 1500;

/// Why a datagram was refused by [`BlockCrypt::open`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than the nonce+CRC header.
    #[error("datagram of {0} bytes is shorter than the 20-byte crypt header")]
    Short(usize),
    /// CRC mismatch after decryption: corruption or a different key/cipher.
    #[error("crc32 mismatch (wrong key or cipher, or a corrupt datagram)")]
    BadChecksum,
}

/// The cipher names gost's `kcp.crypt` accepts that we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256 (gost's default and its fallback for unknown names).
    Aes256,
    /// AES-128 (first 16 key bytes).
    Aes128,
    /// AES-192 (first 24 key bytes).
    Aes192,
    /// Salsa20 with the first 8 datagram bytes as its nonce.
    Salsa20,
    /// kcp-go's XOR with a PBKDF2-derived 1500-byte table.
    Xor,
    /// SM4 (first 16 key bytes).
    Sm4,
    /// Twofish (32 key bytes).
    Twofish,
    /// Blowfish (32 key bytes; 8-byte blocks).
    Blowfish,
    /// CAST5 (first 16 key bytes; 8-byte blocks).
    Cast5,
    /// Triple DES, EDE3 (first 24 key bytes; 8-byte blocks).
    TripleDes,
    /// No encryption; the nonce+CRC header is still present.
    None,
}

impl Cipher {
    /// Maps gost's `kcp.crypt` value. gost treats `""` and unknown names as `aes`; `tea` and
    /// `xtea` (no maintained crate) are refused with an error rather than silently talking
    /// AES to a peer that expects something else.
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "" | "aes" => Cipher::Aes256,
            "aes-128" => Cipher::Aes128,
            "aes-192" => Cipher::Aes192,
            "salsa20" => Cipher::Salsa20,
            "xor" => Cipher::Xor,
            "none" => Cipher::None,
            "sm4" => Cipher::Sm4,
            "twofish" => Cipher::Twofish,
            "blowfish" => Cipher::Blowfish,
            "cast5" => Cipher::Cast5,
            "3des" => Cipher::TripleDes,
            "tea" | "xtea" => {
                return Err(format!("kcp crypt {name:?} is not implemented (every other kcp-go cipher is)"))
            }
            // gost's `default:` branch: anything unknown is AES-256.
            _ => Cipher::Aes256,
        })
    }
}

/// The 32 bytes gost derives from `key` (PBKDF2-HMAC-SHA1, salt `kcp-go`, 4096 rounds).
pub fn derive_key(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(key.as_bytes(), KEY_SALT, 4096, &mut out);
    out
}

#[derive(Clone)]
enum Engine {
    Aes128(aes::Aes128),
    Aes192(aes::Aes192),
    Aes256(aes::Aes256),
    Salsa20([u8; 32]),
    Xor(Box<[u8; XOR_TABLE_LEN]>),
    Sm4(sm4::Sm4),
    // Boxed: their key schedules are kilobytes.
    Twofish(Box<twofish::Twofish>),
    Blowfish(Box<blowfish::Blowfish>),
    Cast5(cast5::Cast5),
    TripleDes(Box<des::TdesEde3>),
    None,
}

/// A configured cipher: seals outgoing datagrams and opens incoming ones.
#[derive(Clone)]
pub struct BlockCrypt {
    engine: Engine,
}

impl std::fmt::Debug for BlockCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.engine {
            Engine::Aes128(_) => "aes-128",
            Engine::Aes192(_) => "aes-192",
            Engine::Aes256(_) => "aes",
            Engine::Salsa20(_) => "salsa20",
            Engine::Xor(_) => "xor",
            Engine::Sm4(_) => "sm4",
            Engine::Twofish(_) => "twofish",
            Engine::Blowfish(_) => "blowfish",
            Engine::Cast5(_) => "cast5",
            Engine::TripleDes(_) => "3des",
            Engine::None => "none",
        };
        f.debug_struct("BlockCrypt").field("cipher", &name).finish()
    }
}

/// CFB with full-block feedback over the whole datagram, the tail XORed with the next
/// keystream block (plain CFB, as kcp-go); the IV is kcp-go's, cut to the block size (its
/// 8-byte ciphers encrypt the IV's first 8 bytes). The block-level decryptor runs several
/// blocks at once where the cipher can (AES-NI).
fn cfb_encrypt<C: BlockEncryptMut + BlockCipher + Clone>(cipher: &C, buf: &mut [u8]) {
    let iv = aes::cipher::generic_array::GenericArray::from_slice(&IV[..C::block_size()]);
    cfb_mode::Encryptor::<C>::inner_iv_init(cipher.clone(), iv).encrypt(buf);
}

fn cfb_decrypt<C: BlockEncryptMut + BlockCipher + Clone>(cipher: &C, buf: &mut [u8]) {
    let iv = aes::cipher::generic_array::GenericArray::from_slice(&IV[..C::block_size()]);
    cfb_mode::Decryptor::<C>::inner_iv_init(cipher.clone(), iv).decrypt(buf);
}

impl BlockCrypt {
    /// The cipher gost builds from `key` and `crypt` (`x:internal/util/kcp` `BlockCrypt`).
    pub fn new(cipher: Cipher, key: &str) -> Self {
        let pass = derive_key(key);
        let engine = match cipher {
            // Slices of a 32-byte array always have a valid AES key length.
            Cipher::Aes128 => Engine::Aes128(aes::Aes128::new(pass[..16].into())),
            Cipher::Aes192 => Engine::Aes192(aes::Aes192::new(pass[..24].into())),
            Cipher::Aes256 => Engine::Aes256(aes::Aes256::new(&pass.into())),
            Cipher::Salsa20 => Engine::Salsa20(pass),
            Cipher::Xor => {
                let mut table = Box::new([0u8; XOR_TABLE_LEN]);
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(&pass, XOR_SALT, 32, &mut table[..]);
                Engine::Xor(table)
            }
            // Fixed-size slices of the 32 bytes are valid keys for each of these.
            Cipher::Sm4 => Engine::Sm4(sm4::Sm4::new(pass[..16].into())),
            Cipher::Twofish => Engine::Twofish(Box::new(twofish::Twofish::new(&pass.into()))),
            Cipher::Blowfish => match blowfish::Blowfish::new_from_slice(&pass) {
                Ok(c) => Engine::Blowfish(Box::new(c)),
                Err(_) => unreachable!("blowfish takes 4..=56 key bytes"),
            },
            Cipher::Cast5 => match cast5::Cast5::new_from_slice(&pass[..16]) {
                Ok(c) => Engine::Cast5(c),
                Err(_) => unreachable!("cast5 takes 5..=16 key bytes"),
            },
            Cipher::TripleDes => Engine::TripleDes(Box::new(des::TdesEde3::new(pass[..24].into()))),
            Cipher::None => Engine::None,
        };
        Self { engine }
    }

    fn encrypt(&self, buf: &mut [u8]) {
        match &self.engine {
            Engine::Aes128(c) => cfb_encrypt(c, buf),
            Engine::Aes192(c) => cfb_encrypt(c, buf),
            Engine::Aes256(c) => cfb_encrypt(c, buf),
            Engine::Sm4(c) => cfb_encrypt(c, buf),
            Engine::Twofish(c) => cfb_encrypt(&**c, buf),
            Engine::Blowfish(c) => cfb_encrypt(&**c, buf),
            Engine::Cast5(c) => cfb_encrypt(c, buf),
            Engine::TripleDes(c) => cfb_encrypt(&**c, buf),
            Engine::Salsa20(_) | Engine::Xor(_) | Engine::None => self.xor_stream(buf),
        }
    }

    fn decrypt(&self, buf: &mut [u8]) {
        match &self.engine {
            Engine::Aes128(c) => cfb_decrypt(c, buf),
            Engine::Aes192(c) => cfb_decrypt(c, buf),
            Engine::Aes256(c) => cfb_decrypt(c, buf),
            Engine::Sm4(c) => cfb_decrypt(c, buf),
            Engine::Twofish(c) => cfb_decrypt(&**c, buf),
            Engine::Blowfish(c) => cfb_decrypt(&**c, buf),
            Engine::Cast5(c) => cfb_decrypt(c, buf),
            Engine::TripleDes(c) => cfb_decrypt(&**c, buf),
            Engine::Salsa20(_) | Engine::Xor(_) | Engine::None => self.xor_stream(buf),
        }
    }

    /// The self-inverse ciphers.
    fn xor_stream(&self, buf: &mut [u8]) {
        match &self.engine {
            Engine::Salsa20(key) if buf.len() > 8 => {
                let (nonce, rest) = buf.split_at_mut(8);
                let mut c = salsa20::Salsa20::new(key.into(), (&*nonce).into());
                c.apply_keystream(rest);
            }
            Engine::Xor(table) => {
                // kcp-go XORs the datagram with the table's first len bytes; datagrams are
                // at most 1500 bytes, longer ones cannot come from a kcp-go peer.
                for (b, t) in buf.iter_mut().zip(table.iter()) {
                    *b ^= t;
                }
            }
            _ => {}
        }
    }

    /// Turns `buf` (which must start with [`HEADER_LEN`] bytes of room) into a datagram: fills
    /// the nonce, writes the CRC-32 of everything after the header, encrypts the whole.
    pub fn seal(&self, buf: &mut [u8]) {
        debug_assert!(buf.len() >= HEADER_LEN);
        if buf.len() < HEADER_LEN {
            return;
        }
        rand::rng().fill_bytes(&mut buf[..NONCE_LEN]);
        let crc = crc32fast::hash(&buf[HEADER_LEN..]);
        buf[NONCE_LEN..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        self.encrypt(buf);
    }

    /// Decrypts a received datagram in place and checks its CRC; on success the payload (FEC
    /// header or KCP segments) is `buf[HEADER_LEN..]`.
    pub fn open(&self, buf: &mut [u8]) -> Result<(), OpenError> {
        if buf.len() < HEADER_LEN {
            return Err(OpenError::Short(buf.len()));
        }
        self.decrypt(buf);
        let want = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if crc32fast::hash(&buf[HEADER_LEN..]) != want {
            return Err(OpenError::BadChecksum);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::hex::encode as hex;

    #[test]
    fn key_derivation_matches_kcp_go_vectors() {
        // Vectors computed independently (Python hashlib.pbkdf2_hmac) for gost's effective
        // default key "" and its documented default.
        assert_eq!(hex(&derive_key("")), "b23383c32eefa3753ab6db6e639a0ddc3b50ec6b6c623c9171a15ba0879945cd");
        assert_eq!(
            hex(&derive_key("it's a secrect")),
            "25d7d7bd51050742d8d791f2b653c6c8b2366b7e25a124cf7a2e12eaf4ffa444"
        );
    }

    #[test]
    fn aes_cfb_first_block_is_iv_keystream() {
        // CFB: the first ciphertext block is plaintext XOR AES(key, IV); check against a
        // direct block encryption so the mode and the IV are the ones kcp-go uses.
        use aes::cipher::BlockEncrypt;
        let bc = BlockCrypt::new(Cipher::Aes256, "k");
        let mut plain = [0u8; 40];
        plain[20..].copy_from_slice(b"abcdefghijklmnopqrst");
        let mut sealed = plain;
        bc.encrypt(&mut sealed);
        let mut ks = aes::Block::from(IV);
        aes::Aes256::new(&derive_key("k").into()).encrypt_block(&mut ks);
        for i in 0..16 {
            assert_eq!(sealed[i], plain[i] ^ ks[i]);
        }
        // The second block's keystream is AES(first ciphertext block).
        let mut ks2 = aes::Block::clone_from_slice(&sealed[..16]);
        aes::Aes256::new(&derive_key("k").into()).encrypt_block(&mut ks2);
        for i in 0..16 {
            assert_eq!(sealed[16 + i], plain[16 + i] ^ ks2[i]);
        }
    }

    #[test]
    fn every_cipher_round_trips_and_rejects_a_wrong_key() {
        for c in [
            Cipher::Aes256,
            Cipher::Aes128,
            Cipher::Aes192,
            Cipher::Salsa20,
            Cipher::Xor,
            Cipher::Sm4,
            Cipher::Twofish,
            Cipher::Blowfish,
            Cipher::Cast5,
            Cipher::TripleDes,
            Cipher::None,
        ] {
            let a = BlockCrypt::new(c, "right");
            let mut d = vec![0u8; HEADER_LEN];
            d.extend_from_slice(b"some kcp segment bytes, 37 of them!!");
            let payload = d[HEADER_LEN..].to_vec();
            a.seal(&mut d);
            let mut ok = d.clone();
            a.open(&mut ok).unwrap();
            assert_eq!(&ok[HEADER_LEN..], &payload[..], "{c:?}");
            if c != Cipher::None {
                assert_ne!(&d[HEADER_LEN..], &payload[..], "{c:?} must encrypt");
                let mut wrong = d.clone();
                assert_eq!(BlockCrypt::new(c, "wrong").open(&mut wrong), Err(OpenError::BadChecksum), "{c:?}");
            }
            let mut flipped = d.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert_eq!(a.open(&mut flipped), Err(OpenError::BadChecksum), "{c:?}");
            assert_eq!(a.open(&mut [0u8; 19]), Err(OpenError::Short(19)));
        }
    }

    #[test]
    fn crypt_names_follow_gost() {
        assert_eq!(Cipher::parse("").unwrap(), Cipher::Aes256);
        assert_eq!(Cipher::parse("whatever").unwrap(), Cipher::Aes256);
        assert_eq!(Cipher::parse("aes-192").unwrap(), Cipher::Aes192);
        assert!(Cipher::parse("tea").is_err());
        assert_eq!(Cipher::parse("3des").unwrap(), Cipher::TripleDes);
    }
}
