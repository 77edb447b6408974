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

/**
 * Parses `args` strictly; unknown flags and missing values become {@link UsageError}s. A
 * value that looks like a negative number (`--threads -1`) is taken as the flag's value, so
 * that its own check can say what is wrong with it.
 */
export function parse<T extends NonNullable<ParseArgsConfig["options"]>>(args: string[], options: T) {
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i].startsWith("--") ? args[i].slice(2) : undefined;
    const takesValue = flag !== undefined && Object.hasOwn(options, flag) && options[flag].type === "string";
    if (takesValue && i + 1 < args.length && /^-\d/.test(args[i + 1])) {
      joined.push(`${args[i]}=${args[i + 1]}`);
      i++;
    } else {
      joined.push(args[i]);
    }
  }
  try {
    return parseArgs({ args: joined, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** Parses a positive integer flag value, at most `max`. */
export function positiveInteger(
  flag: string,
  value: string | undefined,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed <= 0 || parsed > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? "a positive integer" : `an integer from 1 to ${max}`;
    throw new UsageError(`--${flag} expects ${range}, got '${value}'`);
  }
  return parsed;
}

const BYTE_UNITS: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/**
 * Parses a byte count flag: a whole number of bytes, or a number with K, M, G or T (powers of
 * 1024; `KiB`, `MB`… are read the same way), e.g. `8G`, `512MiB`.
 *
 * @param flag The flag's name, for the message.
 * @param value The text given.
 * @returns The byte count.
 */
export function byteSize(flag: string, value: string): number {
  const match = value.trim().match(/^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i);
  const bytes = match === null ? NaN : Math.floor(Number(match[1]) * BYTE_UNITS[match[2].toLowerCase()]);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`--${flag} expects a size such as 8G, 512M or 1000000 (bytes), got '${value}'`);
  }
  return bytes;
}
