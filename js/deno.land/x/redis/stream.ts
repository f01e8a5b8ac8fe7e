// https://deno.land/x/redis/stream.ts: stream ids, entries and the parsers that turn Redis's
// stream replies into deno-redis v0.24's objects (XId, XMessage, XReadStream, xinfo, xpending).

// deno-lint-ignore-file no-explicit-any
export interface XId {
  unixMs: number;
  seqNo: number;
}
export type XIdInput = XId | [number, number] | number | string;
export interface XMessage {
  xid: XId;
  fieldValues: Record<string, string>;
}
export interface XReadStream {
  key: string;
  messages: XMessage[];
}
export interface XMaxlen {
  approx?: boolean;
  elements: number;
}
export interface XClaimOpts {
  group: string;
  consumer: string;
  minIdleTime: number;
  idle?: number;
  time?: number;
  retryCount?: number;
  force?: boolean;
  justXId?: boolean;
}
export interface StartEndCount {
  start: number | "-";
  end: number | "+";
  count: number;
}

/** An id as Redis spells it: `ms-seq`; a number is `ms-0`; strings (`*`, `$`, `>`) as given. */
export function xidstr(xid: XIdInput): string {
  if (typeof xid === "string") return xid;
  if (typeof xid === "number") return `${xid}-0`;
  if (Array.isArray(xid)) return `${xid[0]}-${xid[1]}`;
  if (xid && (xid as XId).unixMs !== undefined) return `${xid.unixMs}-${xid.seqNo}`;
  throw new TypeError(`not a stream id: ${xid}`);
}
export const xidToString = xidstr;

export function parseXId(raw: string): XId {
  const [ms, seq] = String(raw).split("-");
  return { unixMs: parseInt(ms), seqNo: parseInt(seq) };
}

/** `[f1, v1, f2, v2, ...]` as an object; an empty field name is skipped. */
function fieldValues(raw: any): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(raw)) return out;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]) out[raw[i]] = raw[i + 1];
  }
  return out;
}

export function parseXMessage(raw: any): XMessage {
  return { xid: parseXId(raw[0]), fieldValues: fieldValues(raw[1]) };
}

export function parseXMessages(raw: any): XMessage[] {
  return (raw ?? []).map(parseXMessage);
}

export function parseXReadReply(raw: any): XReadStream[] {
  return (raw ?? []).map(([key, messages]: [string, any]) => ({ key, messages: parseXMessages(messages) }));
}

/** A flat `[name, value, ...]` reply as a Map. */
export function convertMap(raw: any): Map<string, any> {
  const map = new Map<string, any>();
  for (let i = 0; Array.isArray(raw) && i + 1 < raw.length; i += 2) {
    if (typeof raw[i] === "string") map.set(raw[i], raw[i + 1]);
  }
  return map;
}

const num = (v: any) => (v ? +String(v) : 0);
const str = (v: any) => (v ? String(v) : "");

export function parseXClaim(justXId: boolean | undefined, raw: any[]) {
  return justXId
    ? { kind: "justxid", xids: raw.filter((r) => typeof r === "string").map(parseXId) }
    : { kind: "messages", messages: raw.filter((r) => Array.isArray(r)).map(parseXMessage) };
}

export function parseXPending(raw: any) {
  if (typeof raw?.[0] !== "number" || typeof raw[1] !== "string" || typeof raw[2] !== "string") {
    // v0.24 threw this string when a group had nothing pending.
    throw "parse err";
  }
  const consumers = (raw[3] ?? []).map(([name, pending]: [string, string]) => ({ name, pending: parseInt(pending) }));
  return { count: raw[0], startId: parseXId(raw[1]), endId: parseXId(raw[2]), consumers };
}

export function parseXPendingCounts(raw: any) {
  return (raw ?? [])
    .filter((r: any) => Array.isArray(r) && typeof r[2] === "number" && typeof r[3] === "number")
    .map(([xid, owner, lastDeliveredMs, timesDelivered]: any[]) => ({
      xid: parseXId(xid),
      owner,
      lastDeliveredMs,
      timesDelivered,
    }));
}

export function parseXInfoStream(raw: any) {
  const data = convertMap(raw);
  return {
    length: num(data.get("length")),
    radixTreeKeys: num(data.get("radix-tree-keys")),
    radixTreeNodes: num(data.get("radix-tree-nodes")),
    groups: num(data.get("groups")),
    lastGeneratedId: parseXId(str(data.get("last-generated-id"))),
    firstEntry: entryOrUndefined(data.get("first-entry")),
    lastEntry: entryOrUndefined(data.get("last-entry")),
  };
}

function entryOrUndefined(raw: any) {
  return Array.isArray(raw) ? parseXMessage(raw) : undefined;
}

export function parseXInfoStreamFull(raw: any) {
  const data = convertMap(raw);
  const groups = (data.get("groups") ?? []).map((group: any) => {
    const g = convertMap(group);
    const consumers = (g.get("consumers") ?? []).map((consumer: any) => {
      const c = convertMap(consumer);
      return {
        name: str(c.get("name")),
        seenTime: num(c.get("seen-time")),
        pelCount: num(c.get("pel-count")),
        pending: (c.get("pending") ?? []).map(([xid, lastDeliveredMs, timesDelivered]: any[]) => ({
          xid: parseXId(str(xid)),
          lastDeliveredMs: num(lastDeliveredMs),
          timesDelivered: num(timesDelivered),
        })),
      };
    });
    return {
      name: str(g.get("name")),
      lastDeliveredId: parseXId(str(g.get("last-delivered-id"))),
      pelCount: num(g.get("pel-count")),
      pending: parseXPendingCounts(g.get("pending")),
      consumers,
    };
  });
  return {
    length: num(data.get("length")),
    radixTreeKeys: num(data.get("radix-tree-keys")),
    radixTreeNodes: num(data.get("radix-tree-nodes")),
    lastGeneratedId: parseXId(str(data.get("last-generated-id"))),
    entries: parseXMessages(data.get("entries")),
    groups,
  };
}

export function parseXInfoGroups(raw: any) {
  return (raw ?? []).map((group: any) => {
    const g = convertMap(group);
    return {
      name: str(g.get("name")),
      consumers: num(g.get("consumers")),
      pending: num(g.get("pending")),
      lastDeliveredId: parseXId(str(g.get("last-delivered-id"))),
    };
  });
}

export function parseXInfoConsumers(raw: any) {
  return (raw ?? []).map((consumer: any) => {
    const c = convertMap(consumer);
    return { name: str(c.get("name")), pending: num(c.get("pending")), idle: num(c.get("idle")) };
  });
}

// Runtime placeholders, so that 2021 code importing these type names links.
export const XMessage = undefined;
export const XReadStream = undefined;
export const XId = undefined;
