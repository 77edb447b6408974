/**
 * The platforms Spindle's native library is cross-compiled for (`deno task cross`), with the
 * Zig target triple, the file the build installs and where. The one list: tools/cross.ts
 * builds and checks it, and the distribution tooling packages it.
 *
 * @module
 */

/** One platform's native library. */
export interface NativeTarget {
  /** `<os>-<arch>` as Spindle names the platform, e.g. `linux-x86_64`; also its folder name. */
  name: string;
  /** `Deno.build.os` of machines that run it. */
  os: "linux" | "darwin" | "windows";
  /** `Deno.build.arch` of machines that run it. */
  arch: "x86_64" | "aarch64";
  /** The Zig target triple (`zig build -Dtarget=...`). */
  triple: string;
  /** The library's file name. */
  library: string;
  /** Where `zig build` installs it, relative to the install prefix (Windows DLLs go to bin/). */
  installPath: string;
  /** The object-file format the artefact must have. */
  format: "elf" | "macho" | "pe";
  /**
   * Whether it is the portable x86-64 build (kernels for x86_64, x86_64_v3 and x86_64_v4,
   * chosen at run time from CPUID); aarch64 builds are for baseline ARMv8-A (NEON) already.
   */
  portable: boolean;
}

function target(
  os: NativeTarget["os"],
  arch: NativeTarget["arch"],
  triple: string,
  library: string,
  format: NativeTarget["format"],
): NativeTarget {
  const name = `${os === "darwin" ? "macos" : os}-${arch}`;
  const installPath = format === "pe" ? `bin/${library}` : `lib/${library}`;
  return { name, os, arch, triple, library, installPath, format, portable: arch === "x86_64" };
}

/**
 * Every platform with a prebuilt library. Linux targets name glibc (Zig links against its
 * oldest supported glibc for a generic `-gnu` triple, so the library loads on old distributions).
 */
export const TARGETS: readonly NativeTarget[] = [
  target("linux", "x86_64", "x86_64-linux-gnu", "libspindle.so", "elf"),
  target("linux", "aarch64", "aarch64-linux-gnu", "libspindle.so", "elf"),
  target("darwin", "x86_64", "x86_64-macos", "libspindle.dylib", "macho"),
  target("darwin", "aarch64", "aarch64-macos", "libspindle.dylib", "macho"),
  target("windows", "x86_64", "x86_64-windows-gnu", "spindle.dll", "pe"),
];

/** The target of a platform, or undefined when Spindle has no prebuilt library for it. */
export function targetFor(os: string, arch: string): NativeTarget | undefined {
  return TARGETS.find((t) => t.os === os && t.arch === arch);
}

/**
 * How a cross build is optimised: `ReleaseFast` for the artefacts users get; `Debug` for the
 * quick check CI runs on every change (same sources, targets, dispatch and exports; Zig's
 * own x86-64 backend compiles it in seconds, where LLVM's release codegen takes minutes).
 */
export type CrossOptimize = "ReleaseFast" | "Debug";

/** The install prefix of a target's cross build, relative to zig/. */
export function crossPrefix(t: NativeTarget, optimize: CrossOptimize = "ReleaseFast"): string {
  return `zig-out/${optimize === "Debug" ? "cross-debug" : "cross"}/${t.name}`;
}

/** The `zig build` arguments of a target's artefact (stripped; ReleaseFast unless told). */
export function crossBuildArgs(t: NativeTarget, optimize: CrossOptimize = "ReleaseFast"): string[] {
  const args = ["build", "--summary", "none", `-Dtarget=${t.triple}`, `-Doptimize=${optimize}`, "-Dstrip=true"];
  if (t.portable) args.push("-Dportable=true");
  args.push("-p", crossPrefix(t, optimize));
  return args;
}
