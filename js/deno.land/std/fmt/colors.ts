// https://deno.land/std/fmt/colors.ts (std 0.109): ANSI colours, off when NO_COLOR is set.

interface Code {
  open: string;
  close: string;
  regexp: RegExp;
}

export interface Rgb {
  r: number;
  g: number;
  b: number;
}

// deno-lint-ignore no-explicit-any
const noColor = (globalThis as any).Deno?.noColor ?? true;
let enabled = !noColor;

/** Turns colours on or off (they start off when NO_COLOR is set). */
export function setColorEnabled(value: boolean): void {
  if (noColor) return;
  enabled = value;
}

export function getColorEnabled(): boolean {
  return enabled;
}

function code(open: number[], close: number): Code {
  return {
    open: `\x1b[${open.join(";")}m`,
    close: `\x1b[${close}m`,
    regexp: new RegExp(`\\x1b\\[${close}m`, "g"),
  };
}

/** `open + str + close`, with this colour's close codes inside `str` reopened. */
function run(str: string, code: Code): string {
  return enabled ? `${code.open}${str.replace(code.regexp, code.open)}${code.close}` : str;
}

export const reset = (s: string) => run(s, code([0], 0));
export const bold = (s: string) => run(s, code([1], 22));
export const dim = (s: string) => run(s, code([2], 22));
export const italic = (s: string) => run(s, code([3], 23));
export const underline = (s: string) => run(s, code([4], 24));
export const inverse = (s: string) => run(s, code([7], 27));
export const hidden = (s: string) => run(s, code([8], 28));
export const strikethrough = (s: string) => run(s, code([9], 29));
export const black = (s: string) => run(s, code([30], 39));
export const red = (s: string) => run(s, code([31], 39));
export const green = (s: string) => run(s, code([32], 39));
export const yellow = (s: string) => run(s, code([33], 39));
export const blue = (s: string) => run(s, code([34], 39));
export const magenta = (s: string) => run(s, code([35], 39));
export const cyan = (s: string) => run(s, code([36], 39));
export const white = (s: string) => run(s, code([37], 39));
export const gray = (s: string) => brightBlack(s);
export const brightBlack = (s: string) => run(s, code([90], 39));
export const brightRed = (s: string) => run(s, code([91], 39));
export const brightGreen = (s: string) => run(s, code([92], 39));
export const brightYellow = (s: string) => run(s, code([93], 39));
export const brightBlue = (s: string) => run(s, code([94], 39));
export const brightMagenta = (s: string) => run(s, code([95], 39));
export const brightCyan = (s: string) => run(s, code([96], 39));
export const brightWhite = (s: string) => run(s, code([97], 39));
export const bgBlack = (s: string) => run(s, code([40], 49));
export const bgRed = (s: string) => run(s, code([41], 49));
export const bgGreen = (s: string) => run(s, code([42], 49));
export const bgYellow = (s: string) => run(s, code([43], 49));
export const bgBlue = (s: string) => run(s, code([44], 49));
export const bgMagenta = (s: string) => run(s, code([45], 49));
export const bgCyan = (s: string) => run(s, code([46], 49));
export const bgWhite = (s: string) => run(s, code([47], 49));
export const bgBrightBlack = (s: string) => run(s, code([100], 49));
export const bgBrightRed = (s: string) => run(s, code([101], 49));
export const bgBrightGreen = (s: string) => run(s, code([102], 49));
export const bgBrightYellow = (s: string) => run(s, code([103], 49));
export const bgBrightBlue = (s: string) => run(s, code([104], 49));
export const bgBrightMagenta = (s: string) => run(s, code([105], 49));
export const bgBrightCyan = (s: string) => run(s, code([106], 49));
export const bgBrightWhite = (s: string) => run(s, code([107], 49));

function clamp(n: number, max = 255, min = 0): number {
  return Math.trunc(Math.max(Math.min(n, max), min));
}

export const rgb8 = (s: string, color: number) => run(s, code([38, 5, clamp(color)], 39));
export const bgRgb8 = (s: string, color: number) => run(s, code([48, 5, clamp(color)], 49));

export function rgb24(s: string, color: number | Rgb): string {
  if (typeof color === "number") {
    return run(s, code([38, 2, (color >> 16) & 0xff, (color >> 8) & 0xff, color & 0xff], 39));
  }
  return run(s, code([38, 2, clamp(color.r), clamp(color.g), clamp(color.b)], 39));
}

export function bgRgb24(s: string, color: number | Rgb): string {
  if (typeof color === "number") {
    return run(s, code([48, 2, (color >> 16) & 0xff, (color >> 8) & 0xff, color & 0xff], 49));
  }
  return run(s, code([48, 2, clamp(color.r), clamp(color.g), clamp(color.b)], 49));
}

const ANSI_PATTERN = new RegExp(
  [
    "[\\u001B\\u009B][[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[-a-zA-Z\\d\\/#&.:=?%@~_]*)*)?\\u0007)",
    "(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PR-TZcf-ntqry=><~]))",
  ].join("|"),
  "g",
);

/** Removes ANSI escape codes. */
export function stripColor(string: string): string {
  return string.replace(ANSI_PATTERN, "");
}
