//! AES in the block modes of `https://deno.land/x/crypto/block-modes.ts` (aykxt/crypto
//! v0.10: ECB, CBC, CFB, OFB, CTR), on RustCrypto's `aes`, `ecb`, `cbc`, `cfb-mode`, `ofb`
//! and `ctr` crates: for the crypto op (`ops::crypto`), `denorun acl`, `denorun encrypt` and
//! a sync instance's password.
//!
//! [`crypt`] is stateless: it takes the register (IV, feedback or counter) and returns it
//! after the output, as the library's mode objects kept it between calls. Padding is that
//! library's (ECB, CBC and CFB pad; OFB and CTR are stream modes); unpadding is as lenient as
//! it was (it never throws), so a wrong key gives garbage, not a padding error. Errors carry
//! the library's messages, which 2021 workers may show.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{AsyncStreamCipher, BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit, StreamCipher};

const BLOCK: usize = 16;

/// Why a call was refused, in aykxt/crypto's words (and JS error classes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, deno_error::JsError)]
pub enum CipherError {
    #[class(type)]
    #[error("Invalid padding {0}")]
    Padding(u32),
    #[class(type)]
    #[error("unknown block mode {0}")]
    Mode(String),
    #[class(generic)]
    #[error("Invalid key size (must be either 16, 24 or 32 bytes)")]
    KeySize,
    #[class(generic)]
    #[error("Invalid initialization vector size (must be 16 bytes)")]
    IvSize,
    #[class(generic)]
    #[error("Incorrect block size (must be 16 bytes long)")]
    Unaligned,
    #[class(generic)]
    #[error("Invalid data size (must be multiple of 16 bytes)")]
    DataSize,
    #[class(generic)]
    #[error("{0}")]
    Other(String),
}

/// aykxt/crypto's `Padding` enum.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    None = 1,
    Pkcs7 = 2,
    OneAndZeros = 3,
    LastByte = 4,
    Null = 5,
    Spaces = 6,
}

impl Padding {
    /// The library's enum number (2 = PKCS7).
    pub fn from_number(n: u32) -> Result<Padding, CipherError> {
        Ok(match n {
            1 => Padding::None,
            2 => Padding::Pkcs7,
            3 => Padding::OneAndZeros,
            4 => Padding::LastByte,
            5 => Padding::Null,
            6 => Padding::Spaces,
            _ => return Err(CipherError::Padding(n)),
        })
    }

    /// Adds padding as the library did: NONE needs aligned data; PKCS7 always adds (a whole
    /// block to aligned data); the others leave aligned, non-empty data as it is.
    fn pad(self, data: &[u8]) -> Result<Vec<u8>, CipherError> {
        if self == Padding::None {
            if !data.len().is_multiple_of(BLOCK) {
                return Err(CipherError::Unaligned);
            }
            return Ok(data.to_vec());
        }
        if self != Padding::Pkcs7 && !data.is_empty() && data.len().is_multiple_of(BLOCK) {
            return Ok(data.to_vec());
        }
        let n = BLOCK - data.len() % BLOCK;
        let mut out = Vec::with_capacity(data.len() + n);
        out.extend_from_slice(data);
        match self {
            Padding::Pkcs7 => out.resize(data.len() + n, n as u8),
            Padding::OneAndZeros => {
                out.push(0x80);
                out.resize(data.len() + n, 0);
            }
            Padding::LastByte => {
                out.resize(data.len() + n - 1, 0);
                out.push(n as u8);
            }
            Padding::Null => out.resize(data.len() + n, 0),
            Padding::Spaces => out.resize(data.len() + n, b' '),
            Padding::None => unreachable!(),
        }
        Ok(out)
    }

    /// How many trailing bytes are padding, by the library's lenient rules.
    fn padding_len(self, data: &[u8]) -> usize {
        let last_bytes = || data.iter().rev().take(BLOCK);
        match self {
            Padding::None => 0,
            Padding::Pkcs7 | Padding::LastByte => match data.last() {
                Some(&n) if (n as usize) <= BLOCK && (n as usize) <= data.len() => n as usize,
                _ => 0,
            },
            Padding::OneAndZeros => {
                last_bytes().position(|&b| b != 0).filter(|&i| data[data.len() - 1 - i] == 0x80).map_or(0, |i| i + 1)
            }
            Padding::Null | Padding::Spaces => {
                let pad = if self == Padding::Spaces { b' ' } else { 0 };
                last_bytes().position(|&b| b != pad).unwrap_or(0)
            }
        }
    }
}

/// A block mode of aykxt/crypto v0.10.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Ecb,
    Cbc,
    Cfb,
    Ofb,
    Ctr,
}

impl Mode {
    /// The mode's name in the library ("ecb", "cbc", "cfb", "ofb", "ctr").
    pub fn from_name(name: &str) -> Result<Mode, CipherError> {
        Ok(match name {
            "ecb" => Mode::Ecb,
            "cbc" => Mode::Cbc,
            "cfb" => Mode::Cfb,
            "ofb" => Mode::Ofb,
            "ctr" => Mode::Ctr,
            _ => return Err(CipherError::Mode(name.to_string())),
        })
    }

    /// Whether the mode pads (the stream modes do not).
    fn pads(self) -> bool {
        matches!(self, Mode::Ecb | Mode::Cbc | Mode::Cfb)
    }
}

fn check(key: &[u8], iv: &[u8]) -> Result<(), CipherError> {
    if !matches!(key.len(), 16 | 24 | 32) {
        return Err(CipherError::KeySize);
    }
    if iv.len() != BLOCK {
        return Err(CipherError::IvSize);
    }
    Ok(())
}

/// Runs `$body` with `$aes` bound to the AES type for this key length.
macro_rules! with_aes {
    ($key:expr, |$aes:ident| $body:expr) => {
        match $key.len() {
            16 => {
                type $aes = aes::Aes128;
                $body
            }
            24 => {
                type $aes = aes::Aes192;
                $body
            }
            _ => {
                type $aes = aes::Aes256;
                $body
            }
        }
    };
}

fn invalid(e: impl std::fmt::Display) -> CipherError {
    CipherError::Other(e.to_string())
}

/// Encrypts or decrypts `data` with AES in `mode`, starting from `register` (the IV, or the
/// register a previous call returned). Returns the output and the register to continue from.
pub fn crypt(
    mode: Mode,
    encrypt: bool,
    key: &[u8],
    register: &[u8],
    data: &[u8],
    padding: Padding,
) -> Result<(Vec<u8>, [u8; BLOCK]), CipherError> {
    check(key, register)?;
    let mut buf = if encrypt && mode.pads() { padding.pad(data)? } else { data.to_vec() };
    if mode.pads() && !buf.len().is_multiple_of(BLOCK) {
        return Err(CipherError::DataSize);
    }
    let len = buf.len();
    let mut next: [u8; BLOCK] = register.try_into().expect("checked");
    with_aes!(key, |A| match (mode, encrypt) {
        (Mode::Ecb, true) => {
            ecb::Encryptor::<A>::new_from_slice(key)
                .map_err(invalid)?
                .encrypt_padded_mut::<NoPadding>(&mut buf, len)
                .map_err(invalid)?;
        }
        (Mode::Ecb, false) => {
            ecb::Decryptor::<A>::new_from_slice(key)
                .map_err(invalid)?
                .decrypt_padded_mut::<NoPadding>(&mut buf)
                .map_err(invalid)?;
        }
        (Mode::Cbc, true) => {
            cbc::Encryptor::<A>::new_from_slices(key, register)
                .map_err(invalid)?
                .encrypt_padded_mut::<NoPadding>(&mut buf, len)
                .map_err(invalid)?;
        }
        (Mode::Cbc, false) => {
            cbc::Decryptor::<A>::new_from_slices(key, register)
                .map_err(invalid)?
                .decrypt_padded_mut::<NoPadding>(&mut buf)
                .map_err(invalid)?;
        }
        (Mode::Cfb, true) =>
            cfb_mode::Encryptor::<A>::new_from_slices(key, register).map_err(invalid)?.encrypt(&mut buf),
        (Mode::Cfb, false) =>
            cfb_mode::Decryptor::<A>::new_from_slices(key, register).map_err(invalid)?.decrypt(&mut buf),
        (Mode::Ofb, _) | (Mode::Ctr, _) => {
            // The keystream of whole blocks: its last block is OFB's next register.
            let blocks = len.div_ceil(BLOCK);
            let mut stream = vec![0u8; blocks * BLOCK];
            if mode == Mode::Ofb {
                ofb::Ofb::<A>::new_from_slices(key, register).map_err(invalid)?.apply_keystream(&mut stream);
            } else {
                ctr::Ctr128BE::<A>::new_from_slices(key, register).map_err(invalid)?.apply_keystream(&mut stream);
            }
            buf.iter_mut().zip(&stream).for_each(|(b, k)| *b ^= k);
            next = match mode {
                Mode::Ofb if blocks > 0 => stream[stream.len() - BLOCK..].try_into().expect("a block"),
                Mode::Ofb => next,
                _ => u128::from_be_bytes(next).wrapping_add(blocks as u128).to_be_bytes(),
            };
        }
    });
    // The feedback modes continue from the last ciphertext block.
    if matches!(mode, Mode::Cbc | Mode::Cfb) && len > 0 {
        let ciphertext: &[u8] = if encrypt { &buf } else { data };
        next.copy_from_slice(&ciphertext[len - BLOCK..]);
    }
    if !encrypt && mode.pads() {
        let cut = padding.padding_len(&buf);
        buf.truncate(buf.len() - cut);
    }
    Ok((buf, next))
}

/// AES-CBC with PKCS7, as `openssl enc -aes-<bits>-cbc` does: sealing (`encrypt`) or opening
/// a secret with the secret line's key.
pub fn cbc_pkcs7(encrypt: bool, key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError> {
    crypt(Mode::Cbc, encrypt, key, iv, data, Padding::Pkcs7).map(|(out, _)| out)
}

/// `mode` ("ecb", "cbc", "cfb", "ofb", "ctr") over `data`; returns the output followed by
/// the 16-byte register to continue from.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs7_unpad_is_lenient() {
        let p = Padding::Pkcs7;
        assert_eq!(p.padding_len(&[1, 2, 3, 3, 3]), 3);
        assert_eq!(p.padding_len(&[1, 2, 9, 3]), 3); // other padding bytes are not checked
        assert_eq!(p.padding_len(&[1, 2, 17]), 0); // > 16: nothing cut
        assert_eq!(p.padding_len(&[1, 2, 0]), 0);
        assert_eq!(p.padding_len(&[]), 0);
    }

    #[test]
    fn other_paddings_round_trip() {
        for p in [Padding::OneAndZeros, Padding::LastByte, Padding::Null, Padding::Spaces, Padding::Pkcs7] {
            for len in [0usize, 1, 15, 16, 17] {
                let data: Vec<u8> = (1..=len as u8).collect();
                let padded = p.pad(&data).unwrap();
                assert_eq!(padded.len() % BLOCK, 0);
                if len > 0 && len % BLOCK == 0 && p != Padding::Pkcs7 {
                    assert_eq!(padded, data, "v0.10 leaves aligned data unpadded but for PKCS7");
                    continue;
                }
                assert!(padded.len() > data.len());
                if len == 0 && matches!(p, Padding::Null | Padding::Spaces) {
                    continue; // a whole block of padding is not recognised, as in the library
                }
                assert_eq!(padded.len() - p.padding_len(&padded), data.len(), "padding {} len {len}", p as u8);
            }
        }
        assert!(Padding::None.pad(&[1, 2]).is_err());
    }

    #[test]
    fn stream_modes_continue_from_the_returned_register() {
        let (key, iv) = ([7u8; 16], [9u8; 16]);
        let data: Vec<u8> = (0..40).collect();
        for mode in [Mode::Cbc, Mode::Cfb, Mode::Ofb, Mode::Ctr, Mode::Ecb] {
            let (whole, _) = crypt(mode, true, &key, &iv, &data[..32], Padding::None).unwrap();
            let (first, register) = crypt(mode, true, &key, &iv, &data[..16], Padding::None).unwrap();
            let (second, _) = crypt(mode, true, &key, &register, &data[16..32], Padding::None).unwrap();
            assert_eq!([first, second].concat(), whole, "{mode:?}");
        }
        // A counter carries across all 16 bytes.
        let (_, next) = crypt(Mode::Ctr, true, &key, &[0xff; 16], &data[..32], Padding::None).unwrap();
        assert_eq!(next, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
