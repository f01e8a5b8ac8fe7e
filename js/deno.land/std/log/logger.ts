// https://deno.land/std/log/logger.ts (std 0.106).
import { getLevelByName, getLevelName, LevelName, LogLevels } from "./levels.ts";
import type { BaseHandler } from "./handlers.ts";

export interface LogRecordOptions {
  msg: string;
  args: unknown[];
  level: number;
  loggerName: string;
}

export class LogRecord {
  readonly msg: string;
  #args: unknown[];
  #datetime: Date;
  readonly level: number;
  readonly levelName: string;
  readonly loggerName: string;

  constructor(options: LogRecordOptions) {
    this.msg = options.msg;
    this.#args = [...options.args];
    this.level = options.level;
    this.loggerName = options.loggerName;
    this.#datetime = new Date();
    this.levelName = getLevelName(options.level);
  }
  get args(): unknown[] {
    return [...this.#args];
  }
  get datetime(): Date {
    return new Date(this.#datetime.getTime());
  }
}

export interface LoggerOptions {
  handlers?: BaseHandler[];
}

export class Logger {
  #level: number;
  #handlers: BaseHandler[];
  readonly #loggerName: string;

  constructor(loggerName: string, levelName: LevelName, options: LoggerOptions = {}) {
    this.#loggerName = loggerName;
    this.#level = getLevelByName(levelName);
    this.#handlers = options.handlers || [];
  }

  get level(): number {
    return this.#level;
  }
  set level(level: number) {
    this.#level = level;
  }
  get levelName(): LevelName {
    return getLevelName(this.#level);
  }
  set levelName(levelName: LevelName) {
    this.#level = getLevelByName(levelName);
  }
  get loggerName(): string {
    return this.#loggerName;
  }
  set handlers(hndls: BaseHandler[]) {
    this.#handlers = hndls;
  }
  get handlers(): BaseHandler[] {
    return this.#handlers;
  }

  /** Logs `msg` (a function is called only when the level is enabled) and returns it. */
  // deno-lint-ignore no-explicit-any
  private _log(level: number, msg: any, ...args: unknown[]): any {
    if (this.level > level) {
      return msg instanceof Function ? undefined : msg;
    }
    let fnResult: unknown;
    let logMessage: string;
    if (msg instanceof Function) {
      fnResult = msg();
      logMessage = this.asString(fnResult);
    } else {
      logMessage = this.asString(msg);
    }
    const record = new LogRecord({ msg: logMessage, args, level, loggerName: this.loggerName });
    this.#handlers.forEach((handler) => handler.handle(record));
    return msg instanceof Function ? fnResult : msg;
  }

  asString(data: unknown): string {
    if (typeof data === "string") return data;
    if (
      data === null || typeof data === "number" || typeof data === "bigint" ||
      typeof data === "boolean" || typeof data === "undefined" || typeof data === "symbol"
    ) {
      return String(data);
    }
    if (data instanceof Error) return data.stack!;
    if (typeof data === "object") return JSON.stringify(data);
    return "undefined";
  }

  // deno-lint-ignore no-explicit-any
  debug(msg: any, ...args: unknown[]): any {
    return this._log(LogLevels.DEBUG, msg, ...args);
  }
  // deno-lint-ignore no-explicit-any
  info(msg: any, ...args: unknown[]): any {
    return this._log(LogLevels.INFO, msg, ...args);
  }
  // deno-lint-ignore no-explicit-any
  warning(msg: any, ...args: unknown[]): any {
    return this._log(LogLevels.WARNING, msg, ...args);
  }
  // deno-lint-ignore no-explicit-any
  error(msg: any, ...args: unknown[]): any {
    return this._log(LogLevels.ERROR, msg, ...args);
  }
  // deno-lint-ignore no-explicit-any
  critical(msg: any, ...args: unknown[]): any {
    return this._log(LogLevels.CRITICAL, msg, ...args);
  }
}
