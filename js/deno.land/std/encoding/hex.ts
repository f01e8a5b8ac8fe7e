// https://deno.land/std/encoding/hex.ts (std 0.109): hex over denorun's Rust ops.

// deno-lint-ignore no-explicit-any
const ops = (globalThis as any)[Symbol.for("denorun.ops")];

/** Encodes `src` into lowercase hex characters, returned as ASCII bytes. */
export function encode(src: Uint8Array): Uint8Array {
  return ops.hexEncode(src);
}

/**
 * Decodes the ASCII bytes of a hex text into the bytes it represents.
 * Throws TypeError("Invalid byte 'x'") or RangeError("Odd length hex string").
 */
export function decode(src: Uint8Array): Uint8Array {
  return ops.hexDecode(src);
}
