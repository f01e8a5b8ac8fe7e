//! AES-CBC for `https://deno.land/x/crypto/block-modes.ts`, on the `aes` and `cbc` crates.
//!
//! The ops are stateless: JS passes the chaining register (the IV at first) and keeps the last
//! ciphertext block for the next call, as aykxt/crypto v0.10's `Cbc` object did. Padding is
//! that library's, by its enum number; unpadding is as lenient as it was (it never throws),
//! so a wrong key gives garbage, not a padding error.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use deno_core::op2;
use deno_error::JsErrorBox;

const BLOCK: usize = 16;

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
    fn from_number(n: u32) -> Result<Padding, JsErrorBox> {
        Ok(match n {
            1 => Padding::None,
            2 => Padding::Pkcs7,
            3 => Padding::OneAndZeros,
            4 => Padding::LastByte,
            5 => Padding::Null,
            6 => Padding::Spaces,
            _ => return Err(JsErrorBox::type_error(format!("Invalid padding {n}"))),
        })
    }

    /// Adds padding (a whole block when `data` is aligned); NONE needs aligned data.
    fn pad(self, data: &[u8]) -> Result<Vec<u8>, JsErrorBox> {
        if self == Padding::None {
            if !data.len().is_multiple_of(BLOCK) {
                return Err(JsErrorBox::generic("Incorrect block size (must be 16 bytes long)"));
            }
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

fn check(key: &[u8], iv: &[u8]) -> Result<(), JsErrorBox> {
    if !matches!(key.len(), 16 | 24 | 32) {
        return Err(JsErrorBox::generic("Invalid key size (must be either 16, 24 or 32 bytes)"));
    }
    if iv.len() != BLOCK {
        return Err(JsErrorBox::generic("Invalid initialization vector size (must be 16 bytes)"));
    }
    Ok(())
}

/// Runs `$body` with `$cipher` bound to the AES-CBC type for this key length.
macro_rules! with_aes {
    ($key:expr, $mode:ident, |$cipher:ident| $body:expr) => {
        match $key.len() {
            16 => {
                type $cipher = cbc::$mode<aes::Aes128>;
                $body
            }
            24 => {
                type $cipher = cbc::$mode<aes::Aes192>;
                $body
            }
            _ => {
                type $cipher = cbc::$mode<aes::Aes256>;
                $body
            }
        }
    };
}

/// AES-CBC encryption of `data` with aykxt/crypto padding number `padding` (2 = PKCS7), as
/// `openssl enc -aes-<bits>-cbc` does for PKCS7. Also used by `denorun encrypt`.
pub fn cbc_encrypt(key: &[u8], iv: &[u8], data: &[u8], padding: u32) -> Result<Vec<u8>, JsErrorBox> {
    check(key, iv)?;
    let mut buf = Padding::from_number(padding)?.pad(data)?;
    let len = buf.len();
    with_aes!(key, Encryptor, |C| {
        C::new_from_slices(key, iv)
            .map_err(|e| JsErrorBox::generic(e.to_string()))?
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .map_err(|e| JsErrorBox::generic(e.to_string()))?;
    });
    Ok(buf)
}

/// AES-CBC decryption with the library's lenient unpadding.
pub fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8], padding: u32) -> Result<Vec<u8>, JsErrorBox> {
    check(key, iv)?;
    let padding = Padding::from_number(padding)?;
    if !data.len().is_multiple_of(BLOCK) {
        return Err(JsErrorBox::generic("Invalid data size (must be multiple of 16 bytes)"));
    }
    let mut buf = data.to_vec();
    with_aes!(key, Decryptor, |C| {
        C::new_from_slices(key, iv)
            .map_err(|e| JsErrorBox::generic(e.to_string()))?
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|e| JsErrorBox::generic(e.to_string()))?;
    });
    let cut = padding.padding_len(&buf);
    buf.truncate(buf.len() - cut);
    Ok(buf)
}

/// Encrypts `data` (padded); the caller's next IV is the last output block.
#[op2]
#[buffer]
pub fn op_denorun_aes_cbc_encrypt(
    #[buffer] key: &[u8],
    #[buffer] iv: &[u8],
    #[buffer] data: &[u8],
    padding: u32,
) -> Result<Vec<u8>, JsErrorBox> {
    cbc_encrypt(key, iv, data, padding)
}

/// Decrypts `data` and cuts the padding leniently; the caller's next IV is the last input
/// block.
#[op2]
#[buffer]
pub fn op_denorun_aes_cbc_decrypt(
    #[buffer] key: &[u8],
    #[buffer] iv: &[u8],
    #[buffer] data: &[u8],
    padding: u32,
) -> Result<Vec<u8>, JsErrorBox> {
    cbc_decrypt(key, iv, data, padding)
}

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
                if len % BLOCK == 0 && matches!(p, Padding::Null | Padding::Spaces) {
                    continue; // a whole block of padding is not recognised, as in the library
                }
                let data: Vec<u8> = (1..=len as u8).collect();
                let padded = p.pad(&data).unwrap();
                assert_eq!(padded.len() % BLOCK, 0);
                assert!(padded.len() > data.len());
                assert_eq!(padded.len() - p.padding_len(&padded), data.len(), "padding {} len {len}", p as u8);
            }
        }
        assert!(Padding::None.pad(&[1, 2]).is_err());
    }
}
