// https://deno.land/std/log/levels.ts (std 0.106).

export const LogLevels = {
  NOTSET: 0,
  DEBUG: 10,
  INFO: 20,
  WARNING: 30,
  ERROR: 40,
  CRITICAL: 50,
} as const;

export type LevelName = keyof typeof LogLevels;
export type LogLevel = typeof LogLevels[LevelName];

export const LogLevelNames = Object.keys(LogLevels).filter((key) => isNaN(Number(key)));

const byLevel: Record<number, LevelName> = {
  [LogLevels.NOTSET]: "NOTSET",
  [LogLevels.DEBUG]: "DEBUG",
  [LogLevels.INFO]: "INFO",
  [LogLevels.WARNING]: "WARNING",
  [LogLevels.ERROR]: "ERROR",
  [LogLevels.CRITICAL]: "CRITICAL",
};

/** The level number of a level name. */
export function getLevelByName(name: LevelName): number {
  const level = LogLevels[name];
  if (level === undefined) throw new Error(`no log level found for "${name}"`);
  return level;
}

/** The name of a level number. */
export function getLevelName(level: number): LevelName {
  const name = byLevel[level];
  if (name) return name;
  throw new Error(`no level name found for level: ${level}`);
}
