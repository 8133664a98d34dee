// Prints the WebGPU adapter Node finds (vendor, architecture, device, fallback or not);
// exits 1 when there is none.
import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const gpu = create([]);
globalThis.__vimGpu = gpu; // keep Dawn's instance alive for the life of the process
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter) {
  console.error('no WebGPU adapter');
  process.exit(1);
}
const i = adapter.info;
console.log(`${i.vendor || '?'} ${i.architecture || ''} ${i.device || ''} ${i.description || ''}`.replace(/\s+/g, ' ').trim());
process.exit(0);
