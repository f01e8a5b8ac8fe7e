// The sync benchmark's careful peer: what a user could write in an afternoon with ioredis and
// pg, run by Node 20:
//   REDIS_URL=… PG_URL=… node sync-node.mjs <stream> <table> <n>
// XREADGROUP COUNT 2000 in group `sync`; per batch one INSERT … SELECT FROM unnest(a text
// array per column) ON CONFLICT DO NOTHING, then one XACK; two batches in flight, each on its
// own PostgreSQL connection. It maps the entries as denorun sync does and exits after n acks.
import process from "node:process";
import Redis from "ioredis";
import pg from "pg";

const [stream, table, count] = process.argv.slice(2);
const n = parseInt(count, 10);
const redis = new Redis(process.env.REDIS_URL);
const taken = new Set(["ref", "type", "source", "subject", "time", "data"]);
const sql = `INSERT INTO ${table} (_stream, _id, _ref, _type, _source, _subject, _time, _data, _fields)
  SELECT s, i, r, t, so, su, tm::timestamptz, d::jsonb, f::jsonb
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
    AS b(s, i, r, t, so, su, tm, d, f)
  ON CONFLICT (_stream, _id) DO NOTHING`;

let acked = 0;

async function lane() {
  const client = new pg.Client({ connectionString: process.env.PG_URL });
  await client.connect();
  while (acked < n) {
    const reply = await redis.xreadgroup("GROUP", "sync", "node", "COUNT", 2000, "STREAMS", stream, ">");
    if (!reply) {
      await new Promise((resolve) => setTimeout(resolve, 2));
      continue;
    }
    const entries = reply[0][1];
    const columns = Array.from({ length: 9 }, () => []);
    for (const [id, flat] of entries) {
      const fields = {};
      const rest = {};
      for (let k = 0; k < flat.length; k += 2) {
        if (taken.has(flat[k])) fields[flat[k]] = flat[k + 1];
        else rest[flat[k]] = flat[k + 1];
      }
      const ms = Number(fields.time);
      const row = [stream, id, fields.ref ?? null, fields.type ?? null, fields.source ?? null, fields.subject ?? null,
        Number.isFinite(ms) ? new Date(ms).toISOString() : null, fields.data ?? null, JSON.stringify(rest)];
      row.forEach((value, c) => columns[c].push(value));
    }
    await client.query(sql, columns);
    await redis.xack(stream, "sync", ...entries.map(([id]) => id));
    acked += entries.length;
  }
  await client.end();
}

await Promise.all([lane(), lane()]);
redis.disconnect();
