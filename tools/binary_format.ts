/**
 * Just enough of ELF, Mach-O and PE to say what a shared library is (format, machine) and
 * which functions it exports, so that `deno task cross` can check artefacts built for other
 * platforms without `file`, `nm` or `objdump`. Every read is bounds-checked: a truncated or
 * malformed file is a {@link BinaryFormatError} naming what was wrong, never a RangeError.
 *
 * @module
 */

/** A library file this module cannot read: truncated, malformed or of an unknown format. */
export class BinaryFormatError extends Error {
  /** @param message What was wrong, and where. */
  constructor(message: string) {
    super(message);
    this.name = "BinaryFormatError";
  }
}

/** What a shared library is and what it exports. */
export interface LibraryInfo {
  format: "elf" | "macho" | "pe";
  /** `x86_64` or `aarch64` (the only machines Spindle builds for), else the raw machine code. */
  machine: string;
  /** A human description, e.g. `ELF 64-bit shared object, x86-64`. */
  description: string;
  /** Exported function names, without Mach-O's leading underscore, sorted. */
  exports: string[];
}

/** Little-endian reads that throw {@link BinaryFormatError} past the end. */
class Reader {
  readonly view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  check(offset: number, size: number, what: string): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + size > this.bytes.length) {
      throw new BinaryFormatError(
        `${what} at offset ${offset} (+${size}) lies outside the ${this.bytes.length}-byte file`,
      );
    }
  }
  u8(offset: number, what: string): number {
    this.check(offset, 1, what);
    return this.view.getUint8(offset);
  }
  u16(offset: number, what: string): number {
    this.check(offset, 2, what);
    return this.view.getUint16(offset, true);
  }
  u32(offset: number, what: string): number {
    this.check(offset, 4, what);
    return this.view.getUint32(offset, true);
  }
  u64(offset: number, what: string): number {
    this.check(offset, 8, what);
    const value = this.view.getBigUint64(offset, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new BinaryFormatError(`${what} (${value}) is absurdly large`);
    return Number(value);
  }
  /** The NUL-terminated string at `offset`, which must end before `limit`. */
  cString(offset: number, limit: number, what: string): string {
    const end = Math.min(limit, this.bytes.length);
    this.check(offset, 0, what);
    const nul = this.bytes.subarray(offset, end).indexOf(0);
    if (nul < 0) throw new BinaryFormatError(`${what} at offset ${offset} has no terminating NUL before ${end}`);
    return new TextDecoder().decode(this.bytes.subarray(offset, offset + nul));
  }
}

/** Reads a shared library's format, machine and exported functions. */
export function inspectLibrary(bytes: Uint8Array): LibraryInfo {
  const reader = new Reader(bytes);
  if (bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46) {
    return inspectElf(reader);
  }
  if (bytes.length >= 4 && reader.u32(0, "Mach-O magic") === 0xfeedfacf) return inspectMachO(reader);
  if (bytes.length >= 2 && bytes[0] === 0x4d && bytes[1] === 0x5a) return inspectPe(reader);
  throw new BinaryFormatError("not an ELF, 64-bit Mach-O or PE file (unknown magic number)");
}

function inspectElf(r: Reader): LibraryInfo {
  if (r.u8(4, "ELF class") !== 2) throw new BinaryFormatError("ELF file is not 64-bit (EI_CLASS != 2)");
  if (r.u8(5, "ELF data encoding") !== 1) throw new BinaryFormatError("ELF file is not little-endian");
  const type = r.u16(0x10, "ELF e_type");
  if (type !== 3) throw new BinaryFormatError(`ELF e_type is ${type}, not 3 (ET_DYN, a shared object)`);
  const machineCode = r.u16(0x12, "ELF e_machine");
  const machine = machineCode === 0x3e ? "x86_64" : machineCode === 0xb7 ? "aarch64" : `0x${machineCode.toString(16)}`;
  const sectionOffset = r.u64(0x28, "ELF e_shoff");
  const sectionSize = r.u16(0x3a, "ELF e_shentsize");
  const sectionCount = r.u16(0x3c, "ELF e_shnum");
  if (sectionSize < 64) throw new BinaryFormatError(`ELF e_shentsize ${sectionSize} is below 64`);
  const section = (index: number) => {
    if (index >= sectionCount) throw new BinaryFormatError(`ELF section ${index} does not exist (${sectionCount})`);
    const at = sectionOffset + index * sectionSize;
    return {
      type: r.u32(at + 4, "ELF sh_type"),
      offset: r.u64(at + 0x18, "ELF sh_offset"),
      size: r.u64(at + 0x20, "ELF sh_size"),
      link: r.u32(at + 0x28, "ELF sh_link"),
      entrySize: r.u64(at + 0x38, "ELF sh_entsize"),
    };
  };
  const exports: string[] = [];
  for (let i = 0; i < sectionCount; i++) {
    const dynsym = section(i);
    if (dynsym.type !== 11) continue; // SHT_DYNSYM
    const strings = section(dynsym.link);
    r.check(strings.offset, strings.size, "ELF .dynstr");
    r.check(dynsym.offset, dynsym.size, "ELF .dynsym");
    if (dynsym.entrySize < 24) throw new BinaryFormatError(`ELF .dynsym entry size ${dynsym.entrySize} is below 24`);
    for (let at = dynsym.offset; at + 24 <= dynsym.offset + dynsym.size; at += dynsym.entrySize) {
      const info = r.u8(at + 4, "ELF st_info");
      const other = r.u8(at + 5, "ELF st_other");
      const sectionIndex = r.u16(at + 6, "ELF st_shndx");
      const binding = info >> 4;
      const defined = sectionIndex !== 0;
      // STT_FUNC, STB_GLOBAL or STB_WEAK, STV_DEFAULT or STV_PROTECTED.
      if (
        (info & 0xf) !== 2 || (binding !== 1 && binding !== 2) || !defined || (other & 3) === 1 || (other & 3) === 2
      ) {
        continue;
      }
      const nameOffset = r.u32(at, "ELF st_name");
      if (nameOffset >= strings.size) {
        throw new BinaryFormatError(`ELF symbol name offset ${nameOffset} is past .dynstr`);
      }
      exports.push(r.cString(strings.offset + nameOffset, strings.offset + strings.size, "ELF symbol name"));
    }
  }
  const description = `ELF 64-bit shared object, ${machine === "x86_64" ? "x86-64" : machine}`;
  return { format: "elf", machine, description, exports: exports.sort() };
}

function inspectMachO(r: Reader): LibraryInfo {
  const cpuType = r.u32(4, "Mach-O cputype");
  const machine = cpuType === 0x01000007 ? "x86_64" : cpuType === 0x0100000c ? "aarch64" : `0x${cpuType.toString(16)}`;
  const fileType = r.u32(12, "Mach-O filetype");
  if (fileType !== 6) throw new BinaryFormatError(`Mach-O filetype is ${fileType}, not 6 (MH_DYLIB)`);
  const commandCount = r.u32(16, "Mach-O ncmds");
  const exports: string[] = [];
  let at = 32;
  for (let i = 0; i < commandCount; i++) {
    const command = r.u32(at, "Mach-O load command");
    const size = r.u32(at + 4, "Mach-O load command size");
    if (size < 8) throw new BinaryFormatError(`Mach-O load command ${i} has size ${size}`);
    if (command === 0x2) { // LC_SYMTAB
      const symbolOffset = r.u32(at + 8, "Mach-O symoff");
      const symbolCount = r.u32(at + 12, "Mach-O nsyms");
      const stringOffset = r.u32(at + 16, "Mach-O stroff");
      const stringSize = r.u32(at + 20, "Mach-O strsize");
      r.check(symbolOffset, symbolCount * 16, "Mach-O symbol table");
      r.check(stringOffset, stringSize, "Mach-O string table");
      for (let s = 0; s < symbolCount; s++) {
        const entry = symbolOffset + s * 16;
        const type = r.u8(entry + 4, "Mach-O n_type");
        // External (N_EXT), defined in a section (N_SECT), not a debugging entry, not private.
        if ((type & 0xe0) !== 0 || (type & 0x0e) !== 0x0e || (type & 0x01) === 0 || (type & 0x10) !== 0) continue;
        const nameOffset = r.u32(entry, "Mach-O n_strx");
        if (nameOffset >= stringSize) {
          throw new BinaryFormatError(`Mach-O symbol name offset ${nameOffset} is past the string table`);
        }
        const name = r.cString(stringOffset + nameOffset, stringOffset + stringSize, "Mach-O symbol name");
        exports.push(name.startsWith("_") ? name.slice(1) : name);
      }
    }
    at += size;
  }
  const description = `Mach-O 64-bit dynamic library, ${machine === "aarch64" ? "arm64" : machine}`;
  return { format: "macho", machine, description, exports: exports.sort() };
}

function inspectPe(r: Reader): LibraryInfo {
  const pe = r.u32(0x3c, "PE e_lfanew");
  if (r.u32(pe, "PE signature") !== 0x00004550) throw new BinaryFormatError("MZ file without a PE signature");
  const machineCode = r.u16(pe + 4, "PE machine");
  const machine = machineCode === 0x8664
    ? "x86_64"
    : machineCode === 0xaa64
    ? "aarch64"
    : `0x${machineCode.toString(16)}`;
  const sectionCount = r.u16(pe + 6, "PE NumberOfSections");
  const optionalSize = r.u16(pe + 20, "PE SizeOfOptionalHeader");
  const characteristics = r.u16(pe + 22, "PE Characteristics");
  if ((characteristics & 0x2000) === 0) throw new BinaryFormatError("PE file is not a DLL (IMAGE_FILE_DLL unset)");
  const optional = pe + 24;
  if (r.u16(optional, "PE optional header magic") !== 0x20b) throw new BinaryFormatError("PE file is not PE32+");
  const directoryCount = r.u32(optional + 108, "PE NumberOfRvaAndSizes");
  const sections = Array.from({ length: sectionCount }, (_, i) => {
    const at = optional + optionalSize + i * 40;
    return {
      virtualSize: r.u32(at + 8, "PE section VirtualSize"),
      virtualAddress: r.u32(at + 12, "PE section VirtualAddress"),
      rawSize: r.u32(at + 16, "PE section SizeOfRawData"),
      rawOffset: r.u32(at + 20, "PE section PointerToRawData"),
    };
  });
  const fileOffset = (rva: number, what: string) => {
    for (const s of sections) {
      if (rva >= s.virtualAddress && rva < s.virtualAddress + Math.max(s.virtualSize, s.rawSize)) {
        return s.rawOffset + (rva - s.virtualAddress);
      }
    }
    throw new BinaryFormatError(`${what} RVA 0x${rva.toString(16)} lies in no section`);
  };
  const exports: string[] = [];
  if (directoryCount > 0) {
    const exportRva = r.u32(optional + 112, "PE export directory RVA");
    if (exportRva !== 0) {
      const directory = fileOffset(exportRva, "PE export directory");
      const nameCount = r.u32(directory + 24, "PE NumberOfNames");
      const names = fileOffset(r.u32(directory + 32, "PE AddressOfNames"), "PE name table");
      r.check(names, nameCount * 4, "PE name table");
      for (let i = 0; i < nameCount; i++) {
        const at = fileOffset(r.u32(names + i * 4, "PE name RVA"), "PE export name");
        exports.push(r.cString(at, r.bytes.length, "PE export name"));
      }
    }
  }
  const description = `PE32+ DLL, ${machine === "x86_64" ? "x86-64" : machine}`;
  return { format: "pe", machine, description, exports: exports.sort() };
}
