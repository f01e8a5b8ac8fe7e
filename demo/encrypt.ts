// Encrypts a worker's secret config: reads "<hex key> <hex iv> <base64 JSON>" on stdin and
// prints the AES-128-CBC (PKCS7) ciphertext as base64, after checking it decrypts back.
// Run: echo "$key $iv $(base64 -w0 secret.json)" | denorun run demo/encrypt.ts
import { readStream } from "./utils.ts";
import { Aes } from "https://deno.land/x/crypto/aes.ts";
import { Cbc, Padding } from "https://deno.land/x/crypto/block-modes.ts";
import { decode as decodeHex } from "https://deno.land/std/encoding/hex.ts";
import { decode as decodeBase64, encode as encodeBase64 } from "https://deno.land/std/encoding/base64.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const [keyHex, ivHex, plainBase64] = (await readStream(Deno.stdin, 4096)).split(" ");
if (!keyHex || !ivHex || !plainBase64) {
  console.error("Usage: echo \"<hex key> <hex iv> <base64 JSON>\" | denorun run demo/encrypt.ts");
  Deno.exit(1);
}
const key = decodeHex(te.encode(keyHex));
const iv = decodeHex(te.encode(ivHex));
const plain = decodeBase64(plainBase64);
const encrypted = new Cbc(Aes, key, iv, Padding.PKCS7).encrypt(plain);
const decrypted = new Cbc(Aes, key, iv, Padding.PKCS7).decrypt(encrypted);
if (td.decode(decrypted) !== td.decode(plain)) {
  throw new Error("Decryption mismatch");
}
console.log(encodeBase64(encrypted));
