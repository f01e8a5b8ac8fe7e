// https://deno.land/x/crypto/aes.ts (aykxt/crypto v0.10): AES over denorun's Rust ops.

// deno-lint-ignore no-explicit-any
const ops = (globalThis as any)[Symbol.for("denorun.ops")];
const ZERO_IV = new Uint8Array(16);
const NO_PADDING = 1;

export interface BlockCipher {
  encryptBlock(data: DataView, offset: number): void;
  decryptBlock(data: DataView, offset: number): void;
}

/** AES with a 16, 24 or 32-byte key. Block modes take the class itself. */
export class Aes implements BlockCipher {
  static readonly BLOCK_SIZE = 16;
  readonly key: Uint8Array;

  constructor(key: Uint8Array) {
    if (key.length !== 16 && key.length !== 24 && key.length !== 32) {
      throw new Error("Invalid key size (must be either 16, 24 or 32 bytes)");
    }
    this.key = key.slice();
  }

  /** Encrypts the 16 bytes at `offset` in place. */
  encryptBlock(view: DataView, offset: number): void {
    this.#apply(view, offset, ops.aesCbcEncrypt);
  }

  /** Decrypts the 16 bytes at `offset` in place. */
  decryptBlock(view: DataView, offset: number): void {
    this.#apply(view, offset, ops.aesCbcDecrypt);
  }

  // One block of CBC with a zero IV is one block of AES.
  #apply(view: DataView, offset: number, op: (...a: unknown[]) => Uint8Array) {
    const block = new Uint8Array(view.buffer, view.byteOffset + offset, 16);
    block.set(op(this.key, ZERO_IV, block.slice(), NO_PADDING));
  }
}
