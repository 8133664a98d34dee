/**
 * Images from files, made into what the model saw in training: CIFAR-10 images are 32×32 RGB
 * photos with the object filling most of the frame. Any format sharp reads (PNG, JPEG, WebP, GIF,
 * AVIF, TIFF, SVG, …) at any size is turned into a (3, S, S) u8 CHW array (S = the config's
 * img_size) by:
 *   1. turning it upright by its EXIF orientation;
 *   2. compositing any transparency onto white and converting to 8-bit sRGB (grey images get
 *      three equal channels);
 *   3. scaling it so that its shorter side is S pixels and cutting the centred S×S square
 *      (sharp's "cover" fit), with the Lanczos-3 kernel, which averages over every source pixel
 *      when it shrinks, so a large photo is smoothed rather than aliased.
 * Cropping the centre rather than squeezing the whole picture keeps the object's proportions, as
 * in CIFAR-10's photos; the loss is the margins of a non-square picture.
 */
import { existsSync, statSync } from 'node:fs';
import sharp from 'sharp';
import { VimError } from '../errors.js';

/** The resize applied to every image, in words (for help texts and logs). */
export const RESIZE_DESCRIPTION =
  'turned upright by its EXIF orientation, transparency on white, scaled so its shorter side is 32 px ' +
  'and the centre 32×32 square kept (Lanczos-3), as 8-bit sRGB';

/** Read an image file as (3, size, size) u8 CHW pixels; a VimError naming the file otherwise. */
export async function loadImageAsInput(path: string, size = 32): Promise<Uint8Array> {
  if (!existsSync(path)) throw new VimError(`${path}: no such file`);
  if (statSync(path).isDirectory()) throw new VimError(`${path}: is a folder, not an image`);
  let data: Buffer;
  let info: sharp.OutputInfo;
  try {
    ({ data, info } = await sharp(path, { failOn: 'error', limitInputPixels: 1e9 })
      .rotate()
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'lanczos3' })
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true }));
  } catch (e) {
    const why = (e as Error).message.split('\n')[0].replace(/^Input file /, '').replace(/^Input buffer /, '');
    throw new VimError(`${path}: not an image that can be read (${why})`);
  }
  if (info.width !== size || info.height !== size) {
    throw new VimError(`${path}: resizing gave ${info.width}×${info.height} pixels instead of ${size}×${size}`);
  }
  const ch = info.channels;
  const plane = size * size;
  const out = new Uint8Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = data[p * ch + (ch >= 3 ? c : 0)];
  }
  return out;
}

/** (3, H, W) u8 CHW pixels of one image → interleaved RGB (H, W, 3), e.g. to write it with sharp. */
export function chwToHwc(chw: Uint8Array, H: number, W: number): Uint8Array {
  const plane = H * W;
  const out = new Uint8Array(3 * plane);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) out[p * 3 + c] = chw[c * plane + p];
  return out;
}

/** Write (3, H, W) u8 CHW pixels as an image file; the format follows the extension (png, jpg, webp, …). */
export async function saveChwImage(path: string, chw: Uint8Array, H: number, W: number): Promise<void> {
  await sharp(Buffer.from(chwToHwc(chw, H, W)), { raw: { width: W, height: H, channels: 3 } }).toFile(path);
}
