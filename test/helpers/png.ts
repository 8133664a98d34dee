/** Decoding a PNG for tests: its size, format and how much its pixels vary (0 for a blank image). */
import sharp from 'sharp';

export async function pngStats(png: Uint8Array | string): Promise<{ width: number; height: number; format: string; stdev: number }> {
  const img = sharp(typeof png === 'string' ? png : Buffer.from(png));
  const meta = await img.metadata();
  const stats = await img.stats();
  return { width: meta.width!, height: meta.height!, format: meta.format!, stdev: Math.max(...stats.channels.map((c) => c.stdev)) };
}
