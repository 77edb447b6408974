/**
 * Shared CLI plumbing: usage errors (exit code 2) and argument parsing.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** A command-line usage error: printed with the usage text, exit code 2. */
export class UsageError extends Error {
  /** @param message What was wrong with the command line. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Parses `args` strictly; unknown flags and missing values become {@link UsageError}s. */
export function parse<T extends NonNullable<ParseArgsConfig["options"]>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** Parses a positive integer flag value. */
export function positiveInteger(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed <= 0) {
    throw new UsageError(`--${flag} expects a positive integer, got '${value}'`);
  }
  return parsed;
}
