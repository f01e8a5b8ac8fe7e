// https://deno.land/x/crypto/block-modes.ts (aykxt/crypto v0.10): AES in ECB, CBC, CFB, OFB
// and CTR over denorun's Rust op. Like the originals, a mode object keeps its register (the
// chaining block, feedback or counter) between calls; ECB, CBC and CFB take a padding.

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

const NO_IV = new Uint8Array(16);

export class BlockCipherMode {
  protected cipher: unknown;
  protected padding: Padding;
  #mode: string;
  #key: Uint8Array;
  #register: Uint8Array;

  constructor(
    mode: string,
    cipher: BlockCipherClass,
    key: Uint8Array,
    iv: Uint8Array | undefined,
    padding: Padding = Padding.NONE,
  ) {
    this.cipher = new cipher(key); // checks the key
    this.padding = padding;
    if (iv !== undefined && iv.length !== cipher.BLOCK_SIZE) {
      throw new Error(`Invalid initialization vector size (must be ${cipher.BLOCK_SIZE} bytes)`);
    }
    this.#mode = mode;
    this.#key = key.slice();
    this.#register = iv?.slice() ?? NO_IV;
  }

  #run(encrypt: boolean, data: Uint8Array): Uint8Array {
    const out: Uint8Array = ops.aes(this.#mode, encrypt, this.#key, this.#register, data, this.padding);
    this.#register = out.slice(out.length - 16);
    return out.slice(0, out.length - 16);
  }

  encrypt(data: Uint8Array): Uint8Array {
    return this.#run(true, data);
  }

  decrypt(data: Uint8Array): Uint8Array {
    return this.#run(false, data);
  }
}

/** Electronic codebook. */
export class Ecb extends BlockCipherMode {
  constructor(cipher: BlockCipherClass, key: Uint8Array, padding: Padding = Padding.NONE) {
    super("ecb", cipher, key, undefined, padding);
  }
}

/** Cipher block chaining. */
export class Cbc extends BlockCipherMode {
  constructor(cipher: BlockCipherClass, key: Uint8Array, iv: Uint8Array, padding: Padding = Padding.NONE) {
    super("cbc", cipher, key, iv, padding);
  }
}

/** Cipher feedback (128-bit segments). */
export class Cfb extends BlockCipherMode {
  constructor(cipher: BlockCipherClass, key: Uint8Array, iv: Uint8Array, padding: Padding = Padding.NONE) {
    super("cfb", cipher, key, iv, padding);
  }
}

/** Output feedback: a stream mode, no padding. */
export class Ofb extends BlockCipherMode {
  constructor(cipher: BlockCipherClass, key: Uint8Array, iv: Uint8Array) {
    super("ofb", cipher, key, iv);
  }
}

/** Counter (the whole 16-byte IV counts, big-endian): a stream mode, no padding. */
export class Ctr extends BlockCipherMode {
  constructor(cipher: BlockCipherClass, key: Uint8Array, iv: Uint8Array) {
    super("ctr", cipher, key, iv);
  }
}
