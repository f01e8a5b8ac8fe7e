// https://deno.land/x/crypto/block-modes.ts (aykxt/crypto v0.10): AES-CBC over denorun's
// Rust ops. Like the original, a Cbc object keeps its chaining register between calls.

// deno-lint-ignore no-explicit-any
const ops = (globalThis as any)[Symbol.for("denorun.ops")];

export enum Padding {
  NONE = 1,
  PKCS7,
  ONE_AND_ZEROS,
  LAST_BYTE,
  NULL,
  SPACES,
}

export interface BlockCipherClass {
  BLOCK_SIZE: number;
  new (key: Uint8Array): unknown;
}

export class BlockCipherMode {
  protected cipher: unknown;
  protected padding: Padding;

  constructor(cipher: BlockCipherClass, key: Uint8Array, padding: Padding = Padding.NONE) {
    this.cipher = new cipher(key); // checks the key
    this.padding = padding;
  }
}

/** Cipher block chaining. */
export class Cbc extends BlockCipherMode {
  #key: Uint8Array;
  #iv: Uint8Array;

  constructor(cipher: BlockCipherClass, key: Uint8Array, iv: Uint8Array, padding: Padding = Padding.NONE) {
    super(cipher, key, padding);
    if (iv.length !== cipher.BLOCK_SIZE) {
      throw new Error("Invalid initialization vector size (must be 16 bytes)");
    }
    this.#key = key.slice();
    this.#iv = iv.slice();
  }

  encrypt(data: Uint8Array): Uint8Array {
    const out: Uint8Array = ops.aesCbcEncrypt(this.#key, this.#iv, data, this.padding);
    if (out.length) this.#iv = out.slice(out.length - 16);
    return out;
  }

  decrypt(data: Uint8Array): Uint8Array {
    const out: Uint8Array = ops.aesCbcDecrypt(this.#key, this.#iv, data, this.padding);
    if (data.length) this.#iv = data.slice(data.length - 16);
    return out;
  }
}

function unsupported(name: string) {
  return class {
    constructor() {
      throw new Error(`${name} mode is not built into denorun; use Cbc`);
    }
  };
}

export const Ecb = unsupported("Ecb");
export const Cfb = unsupported("Cfb");
export const Ofb = unsupported("Ofb");
export const Ctr = unsupported("Ctr");
