// https://deno.land/std/log/handlers.ts (std 0.106): where log records go.
import { getLevelByName, LevelName, LogLevels } from "./levels.ts";
import type { LogRecord } from "./logger.ts";
import { blue, bold, red, yellow } from "../fmt/colors.ts";

const DEFAULT_FORMATTER = "{levelName} {msg}";
export type FormatterFunction = (logRecord: LogRecord) => string;
export type LogMode = "a" | "w" | "x";

export interface HandlerOptions {
  formatter?: string | FormatterFunction;
}

export class BaseHandler {
  level: number;
  levelName: LevelName;
  formatter: string | FormatterFunction;

  constructor(levelName: LevelName, options: HandlerOptions = {}) {
    this.level = getLevelByName(levelName);
    this.levelName = levelName;
    this.formatter = options.formatter || DEFAULT_FORMATTER;
  }

  handle(logRecord: LogRecord): void {
    if (this.level > logRecord.level) return;
    const msg = this.format(logRecord);
    return this.log(msg);
  }

  format(logRecord: LogRecord): string {
    if (this.formatter instanceof Function) {
      return this.formatter(logRecord);
    }
    if (this.formatter === DEFAULT_FORMATTER) {
      // The same text as the replace below, without a regular expression per line.
      return `${logRecord.levelName} ${logRecord.msg}`;
    }
    return this.formatter.replace(/{(\S+)}/g, (match, p1): string => {
      const value = logRecord[p1 as keyof LogRecord];
      if (value === undefined) return match;
      return String(value);
    });
  }

  log(_msg: string): void {}
  async setup() {}
  async destroy() {}
}

/** Logs through console.log (stdout), the whole line coloured by level. */
export class ConsoleHandler extends BaseHandler {
  format(logRecord: LogRecord): string {
    let msg = super.format(logRecord);
    switch (logRecord.level) {
      case LogLevels.INFO:
        msg = blue(msg);
        break;
      case LogLevels.WARNING:
        msg = yellow(msg);
        break;
      case LogLevels.ERROR:
        msg = red(msg);
        break;
      case LogLevels.CRITICAL:
        msg = bold(red(msg));
        break;
      default:
        break;
    }
    return msg;
  }

  log(msg: string): void {
    console.log(msg);
  }
}

/** Writes each line to a writer with a sync `writeSync`, e.g. Deno.stderr. */
export abstract class WriterHandler extends BaseHandler {
  protected _writer!: { writeSync(p: Uint8Array): number };
  #encoder = new TextEncoder();

  log(msg: string): void {
    this._writer.writeSync(this.#encoder.encode(msg + "\n"));
  }
}

interface FileHandlerOptions extends HandlerOptions {
  filename: string;
  mode?: LogMode;
}

/** Appends lines to a file (needs --allow-write for it). */
export class FileHandler extends WriterHandler {
  protected _filename: string;
  protected _mode: LogMode;
  // deno-lint-ignore no-explicit-any
  protected _file: any;

  constructor(levelName: LevelName, options: FileHandlerOptions) {
    super(levelName, options);
    this._filename = options.filename;
    this._mode = options.mode ? options.mode : "a";
  }

  async setup() {
    this._file = await Deno.open(this._filename, {
      createNew: this._mode === "x",
      create: this._mode !== "x",
      append: this._mode === "a",
      truncate: this._mode !== "a",
      write: true,
    });
    this._writer = this._file;
  }

  flush(): void {}

  async destroy() {
    this._file?.close();
    this._file = undefined;
  }
}

interface RotatingFileHandlerOptions extends FileHandlerOptions {
  maxBytes: number;
  maxBackupCount: number;
}

/** A FileHandler; denorun does not rotate the file. */
export class RotatingFileHandler extends FileHandler {
  constructor(levelName: LevelName, options: RotatingFileHandlerOptions) {
    super(levelName, options);
  }
}
