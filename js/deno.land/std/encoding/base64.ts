// https://deno.land/std/encoding/base64.ts (std 0.109): base64 over denorun's Rust ops.

// deno-lint-ignore no-explicit-any
const ops = (globalThis as any)[Symbol.for("denorun.ops")];
const encoder = new TextEncoder();

/** Encodes bytes, or the UTF-8 bytes of a string, as padded standard base64 on one line. */
export function encode(data: ArrayBuffer | Uint8Array | string): string {
  const bytes = typeof data === "string"
    ? encoder.encode(data)
    : data instanceof Uint8Array
    ? data
    : new Uint8Array(data);
  return ops.base64Encode(bytes);
}

/**
 * Decodes base64 by atob's forgiving rules (whitespace ignored, padding optional); a bad
 * length or character throws DOMException InvalidCharacterError.
 */
export function decode(b64: string): Uint8Array {
  return ops.base64Decode(String(b64));
}
