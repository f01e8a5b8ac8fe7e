//! Hex and base64 for the std encoding modules, with the `hex` and `base64` crates and the
//! error texts of std 0.109 (`Invalid byte 'x'`, `Odd length hex string`).

use deno_core::op2;
use deno_error::JsErrorBox;

/// Lowercase hex of `data`, as ASCII bytes (std's `encode` returns bytes, not a string).
#[op2]
#[buffer]
pub fn op_denorun_hex_encode(#[buffer] data: &[u8]) -> Vec<u8> {
    hex::encode(data).into_bytes()
}

/// Decodes the ASCII bytes of a hex text. A bad digit is reported before an odd length,
/// as std does.
#[op2]
#[buffer]
pub fn op_denorun_hex_decode(#[buffer] text: &[u8]) -> Result<Vec<u8>, JsErrorBox> {
    let invalid = |byte: u8| JsErrorBox::type_error(format!("Invalid byte '{}'", byte as char));
    let even = text.len() & !1;
    let decoded = hex::decode(&text[..even]).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { c, .. } => invalid(c as u8),
        other => JsErrorBox::type_error(other.to_string()),
    })?;
    if let Some(&last) = text.get(even) {
        if !last.is_ascii_hexdigit() {
            return Err(invalid(last));
        }
        return Err(JsErrorBox::range_error("Odd length hex string"));
    }
    Ok(decoded)
}

/// Standard base64 with `=` padding, on one line.
#[op2]
#[string]
pub fn op_denorun_base64_encode(#[buffer] data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes base64 by the WHATWG "forgiving base64" rules that `atob` (and so std's `decode`)
/// follows: ASCII whitespace is ignored, `=` padding is optional, and a bad length or
/// character throws a DOMException named InvalidCharacterError.
#[op2]
#[buffer]
pub fn op_denorun_base64_decode(#[string] text: &str) -> Result<Vec<u8>, JsErrorBox> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const FORGIVING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let invalid = || JsErrorBox::new("DOMExceptionInvalidCharacterError", "Failed to decode base64");
    let mut compact: Vec<u8> = text.bytes().filter(|b| !matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')).collect();
    if compact.len().is_multiple_of(4) {
        for _ in 0..2 {
            if compact.last() == Some(&b'=') {
                compact.pop();
            }
        }
    }
    if compact.len() % 4 == 1 || compact.contains(&b'=') {
        return Err(invalid());
    }
    FORGIVING.decode(&compact).map_err(|_| invalid())
}
