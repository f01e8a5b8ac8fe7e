// https://deno.land/x/crypto/aes.ts (aykxt/crypto v0.10): AES over denorun's Rust ops.

// deno-lint-ignore no-explicit-any
const ops = (globalThis as any)[Symbol.for("denorun.ops")];
const NO_IV = new Uint8Array(16);
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
    this.#apply(view, offset, true);
  }

  /** Decrypts the 16 bytes at `offset` in place. */
  decryptBlock(view: DataView, offset: number): void {
    this.#apply(view, offset, false);
  }

  // One block of ECB is one block of AES (the op returns it, then its unused register).
  #apply(view: DataView, offset: number, encrypt: boolean) {
    const block = new Uint8Array(view.buffer, view.byteOffset + offset, 16);
    block.set(ops.aes("ecb", encrypt, this.key, NO_IV, block.slice(), NO_PADDING).subarray(0, 16));
  }
}
