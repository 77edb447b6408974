import assert from "node:assert/strict";
import { BinaryFormatError, inspectLibrary } from "../tools/binary_format.ts";
import { checkArtefact, expectedExports } from "../tools/cross.ts";
import { TARGETS } from "../tools/targets.ts";
import { ROOT } from "./helpers.ts";

const LIBRARY = `${ROOT}/zig/zig-out/lib/libspindle.so`;

Deno.test("the local build reads as an x86-64 ELF shared object exporting ffi/symbols.ts", async () => {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return;
  const bytes = await Deno.readFile(LIBRARY);
  const info = inspectLibrary(bytes);
  assert.equal(info.format, "elf");
  assert.equal(info.machine, "x86_64");
  assert.deepEqual(info.exports.filter((name) => name.startsWith("spindle_")), expectedExports());
  const target = TARGETS.find((t) => t.name === "linux-x86_64")!;
  assert.deepEqual(checkArtefact(target, LIBRARY, bytes).problems, []);
  // The same bytes are not what the Windows target must be.
  const windows = TARGETS.find((t) => t.name === "windows-x86_64")!;
  assert.deepEqual(checkArtefact(windows, LIBRARY, bytes).problems, ["format elf, expected pe"]);
});

Deno.test("truncated and foreign files are BinaryFormatErrors naming the problem", async () => {
  if (Deno.build.os !== "linux") return;
  const bytes = await Deno.readFile(LIBRARY);
  for (const length of [5, 64, 4096, bytes.length - 4096]) {
    assert.throws(() => inspectLibrary(bytes.subarray(0, length)), BinaryFormatError, `truncated to ${length}`);
  }
  assert.throws(() => inspectLibrary(new TextEncoder().encode("#!/bin/sh\n")), /unknown magic number/);
  assert.throws(() => inspectLibrary(new Uint8Array(0)), /unknown magic number/);
});

/** A minimal 64-bit Mach-O dylib: the header, one LC_SYMTAB, one external symbol `_spindle_x`. */
function machO(cpuType: number): Uint8Array {
  const bytes = new Uint8Array(256);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 0xfeedfacf, true);
  view.setUint32(4, cpuType, true);
  view.setUint32(12, 6, true); // MH_DYLIB
  view.setUint32(16, 1, true); // ncmds
  view.setUint32(32, 0x2, true); // LC_SYMTAB
  view.setUint32(36, 24, true);
  view.setUint32(40, 128, true); // symoff
  view.setUint32(44, 2, true); // nsyms
  view.setUint32(48, 160, true); // stroff
  view.setUint32(52, 32, true); // strsize
  view.setUint32(128, 1, true); // n_strx of the exported symbol
  bytes[132] = 0x0f; // N_SECT | N_EXT
  view.setUint32(144, 12, true); // a local symbol: not an export
  bytes[148] = 0x0e;
  bytes.set(new TextEncoder().encode("\0_spindle_x\0_local\0"), 160);
  return bytes;
}

/** A minimal PE32+ DLL exporting `spindle_x`. */
function pe(): Uint8Array {
  const bytes = new Uint8Array(0x300);
  const view = new DataView(bytes.buffer);
  bytes.set([0x4d, 0x5a]);
  view.setUint32(0x3c, 0x40, true);
  view.setUint32(0x40, 0x4550, true);
  view.setUint16(0x44, 0x8664, true);
  view.setUint16(0x46, 1, true); // sections
  view.setUint16(0x54, 240, true); // SizeOfOptionalHeader
  view.setUint16(0x56, 0x2022, true); // DLL
  const optional = 0x58;
  view.setUint16(optional, 0x20b, true);
  view.setUint32(optional + 108, 16, true);
  view.setUint32(optional + 112, 0x1000, true); // export directory RVA
  const section = optional + 240;
  view.setUint32(section + 8, 0x100, true);
  view.setUint32(section + 12, 0x1000, true);
  view.setUint32(section + 16, 0x100, true);
  view.setUint32(section + 20, 0x200, true);
  view.setUint32(0x200 + 24, 1, true); // NumberOfNames
  view.setUint32(0x200 + 32, 0x1040, true); // AddressOfNames
  view.setUint32(0x240, 0x1050, true);
  bytes.set(new TextEncoder().encode("spindle_x\0"), 0x250);
  return bytes;
}

Deno.test("Mach-O: machine and external symbols, without the leading underscore", () => {
  assert.deepEqual(inspectLibrary(machO(0x0100000c)), {
    format: "macho",
    machine: "aarch64",
    description: "Mach-O 64-bit dynamic library, arm64",
    exports: ["spindle_x"],
  });
  assert.equal(inspectLibrary(machO(0x01000007)).machine, "x86_64");
  const broken = machO(0x0100000c);
  new DataView(broken.buffer).setUint32(44, 1000, true); // nsyms past the end
  assert.throws(() => inspectLibrary(broken), /Mach-O symbol table at offset 128/);
});

Deno.test("PE: machine and the export directory's names", () => {
  assert.deepEqual(inspectLibrary(pe()), {
    format: "pe",
    machine: "x86_64",
    description: "PE32+ DLL, x86-64",
    exports: ["spindle_x"],
  });
  const broken = pe();
  new DataView(broken.buffer).setUint32(0x240, 0x9000, true); // a name RVA in no section
  assert.throws(() => inspectLibrary(broken), /PE export name RVA 0x9000 lies in no section/);
});

Deno.test("tools/targets.ts: one target per platform, each with its library name", () => {
  assert.deepEqual(TARGETS.map((t) => t.name), [
    "linux-x86_64",
    "linux-aarch64",
    "macos-x86_64",
    "macos-aarch64",
    "windows-x86_64",
  ]);
  for (const t of TARGETS) assert.ok(t.installPath.endsWith(t.library), t.name);
});

Deno.test("tools/test.ts reads deno task cross's summary line", async () => {
  const { parseCrossSummary } = await import("../tools/test.ts");
  assert.deepEqual(parseCrossSummary("| a | ok |\ncross: 4 passed, 1 failed\n"), { passed: 4, failed: 1 });
  assert.equal(parseCrossSummary("error: zig not found"), null);
});

Deno.test("tools/test.ts: every GEMM test file it names exists", async () => {
  const { BLAS_TESTS } = await import("../tools/test.ts");
  for (const file of BLAS_TESTS) assert.ok(Deno.statSync(`${ROOT}/${file}`).isFile, file);
});
