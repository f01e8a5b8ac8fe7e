//! The crypto op behind `https://deno.land/x/crypto/block-modes.ts`: AES in a block mode
//! (`crate::cipher`), stateless: JS passes the register and gets it back after the output.

use deno_core::op2;

use crate::cipher::{crypt, CipherError, Mode, Padding};

#[op2]
#[buffer]
pub fn op_denorun_aes(
    #[string] mode: &str,
    encrypt: bool,
    #[buffer] key: &[u8],
    #[buffer] register: &[u8],
    #[buffer] data: &[u8],
    padding: u32,
) -> Result<Vec<u8>, CipherError> {
    let (mut out, next) = crypt(Mode::from_name(mode)?, encrypt, key, register, data, Padding::from_number(padding)?)?;
    out.extend_from_slice(&next);
    Ok(out)
}
