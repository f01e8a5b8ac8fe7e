// https://deno.land/std/log/mod.ts (std 0.106): levelled logging, INFO to stdout by default.
import { Logger } from "./logger.ts";
import type { LevelName } from "./levels.ts";
import {
  BaseHandler,
  ConsoleHandler,
  FileHandler,
  RotatingFileHandler,
  WriterHandler,
} from "./handlers.ts";

export { LogLevels } from "./levels.ts";
export type { LevelName } from "./levels.ts";
export { Logger, LogRecord } from "./logger.ts";
export type { FormatterFunction, HandlerOptions, LogMode } from "./handlers.ts";

export class LoggerConfig {
  level?: LevelName;
  handlers?: string[];
}

export interface LogConfig {
  handlers?: { [name: string]: BaseHandler };
  loggers?: { [name: string]: LoggerConfig };
}

const DEFAULT_LEVEL = "INFO";
const DEFAULT_CONFIG: LogConfig = {
  handlers: { default: new ConsoleHandler(DEFAULT_LEVEL) },
  loggers: { default: { level: DEFAULT_LEVEL, handlers: ["default"] } },
};

const state = {
  handlers: new Map<string, BaseHandler>(),
  loggers: new Map<string, Logger>(),
  config: DEFAULT_CONFIG,
};

export const handlers = {
  BaseHandler,
  ConsoleHandler,
  WriterHandler,
  FileHandler,
  RotatingFileHandler,
};

/** The default logger, or a named one (a new named logger has no handlers). */
export function getLogger(name?: string): Logger {
  if (!name) {
    const d = state.loggers.get("default");
    if (!d) throw new Error(`"default" logger must be set for getting logger without name`);
    return d;
  }
  const result = state.loggers.get(name);
  if (!result) {
    const logger = new Logger(name, "NOTSET", { handlers: [] });
    state.loggers.set(name, logger);
    return logger;
  }
  return result;
}

// deno-lint-ignore no-explicit-any
export function debug(msg: any, ...args: unknown[]): any {
  return getLogger("default").debug(msg, ...args);
}
// deno-lint-ignore no-explicit-any
export function info(msg: any, ...args: unknown[]): any {
  return getLogger("default").info(msg, ...args);
}
// deno-lint-ignore no-explicit-any
export function warning(msg: any, ...args: unknown[]): any {
  return getLogger("default").warning(msg, ...args);
}
// deno-lint-ignore no-explicit-any
export function error(msg: any, ...args: unknown[]): any {
  return getLogger("default").error(msg, ...args);
}
// deno-lint-ignore no-explicit-any
export function critical(msg: any, ...args: unknown[]): any {
  return getLogger("default").critical(msg, ...args);
}

/** Replaces the handlers and loggers; what `config` leaves out keeps its default. */
export async function setup(config: LogConfig) {
  state.config = {
    handlers: { ...DEFAULT_CONFIG.handlers, ...config.handlers },
    loggers: { ...DEFAULT_CONFIG.loggers, ...config.loggers },
  };
  state.handlers.forEach((handler) => handler.destroy());
  state.handlers.clear();
  const handlers = state.config.handlers || {};
  for (const handlerName in handlers) {
    const handler = handlers[handlerName];
    await handler.setup();
    state.handlers.set(handlerName, handler);
  }
  state.loggers.clear();
  const loggers = state.config.loggers || {};
  for (const loggerName in loggers) {
    const loggerConfig = loggers[loggerName];
    const handlerNames = loggerConfig.handlers || [];
    const chosen: BaseHandler[] = [];
    handlerNames.forEach((handlerName) => {
      const handler = state.handlers.get(handlerName);
      if (handler) chosen.push(handler);
    });
    const levelName = loggerConfig.level || DEFAULT_LEVEL;
    state.loggers.set(loggerName, new Logger(loggerName, levelName, { handlers: chosen }));
  }
}

await setup(DEFAULT_CONFIG);
