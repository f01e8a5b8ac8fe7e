// Helpers shared by the demo worker and scripts, written to the 2021 deno-run-worker design:
// the same std and crypto imports, served by denorun's built-in modules.
import { Aes } from "https://deno.land/x/crypto/aes.ts";
import { Cbc, Padding } from "https://deno.land/x/crypto/block-modes.ts";
import { decode as decodeHex } from "https://deno.land/std/encoding/hex.ts";
import { decode as decodeBase64 } from "https://deno.land/std/encoding/base64.ts";

/** HGETALL's flat [field, value, ...] array as a Map. */
export function unflattenRedis(flat: string[]): Map<String, String> {
  const map = new Map();
  for (let i = 0; i + 1 < flat.length; i += 2) {
    map.set(flat[i], flat[i + 1]);
  }
  return map;
}

/** One read of at most `limit` bytes, as trimmed text (empty at end of input). */
export async function readStream(stream: Deno.Reader, limit: number): Promise<string> {
  const buffer = new Uint8Array(limit);
  const count = <number> await stream.read(buffer);
  return new TextDecoder().decode(buffer.subarray(0, count)).trim();
}

/**
 * Reads `worker-v0 <hex AES key>` from stdin and decrypts the worker's `encryptedJson`
 * (AES-128-CBC, PKCS7, base64) with it and the hash's hex `encryptedIv`.
 */
export async function decryptJson(ivHex: string, encryptedBase64: string, input = Deno.stdin) {
  const [kind, keyHex] = (await readStream(input, 256)).split(" ");
  if (kind !== "worker-v0") {
    throw new Error(`Invalid input type: ${kind} (expected "worker-v0 <hex key>" on stdin)`);
  }
  const te = new TextEncoder();
  const decipher = new Cbc(Aes, decodeHex(te.encode(keyHex)), decodeHex(te.encode(ivHex)), Padding.PKCS7);
  const plain = decipher.decrypt(decodeBase64(encryptedBase64));
  try {
    return JSON.parse(new TextDecoder().decode(plain));
  } catch {
    // AES-CBC with the lenient unpad gives garbage, not an error, for a wrong key.
    throw new Error("Cannot decrypt encryptedJson: the key on stdin is wrong, or encryptedIv does not belong to it");
  }
}

/** The Redis to use: REDIS_URL (set by denorun to the URL it was given), else 127.0.0.1:6379. */
export function redisOptions() {
  const url = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379";
  return parseRedisUrl(url);
}

function parseRedisUrl(url: string) {
  const { hostname, port, username, password, pathname, protocol } = new URL(url);
  return {
    hostname: hostname.replace(/^\[(.*)\]$/, "$1"),
    port: port ? parseInt(port) : 6379,
    tls: protocol === "rediss:",
    username: username ? decodeURIComponent(username) : undefined,
    password: password ? decodeURIComponent(password) : undefined,
    db: pathname.length > 1 ? parseInt(pathname.slice(1)) : undefined,
  };
}
