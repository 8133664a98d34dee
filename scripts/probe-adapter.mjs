// Prints the WebGPU adapter Node finds (vendor, architecture, device, fallback or not);
// exits 1 when there is none. With --features, also its optional features, its subgroup sizes,
// two limits the kernels depend on, and, with Dawn's unsafe APIs allowed, the subgroup-matrix
// configurations it offers (component types and M×N×K).
import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const features = process.argv.includes('--features');
const describe = (a) => {
  const i = a.info;
  return `${i.vendor || '?'} ${i.architecture || ''} ${i.device || ''} ${i.description || ''}`.replace(/\s+/g, ' ').trim();
};
const gpu = create([]);
globalThis.__vimGpu = gpu; // keep Dawn's instance alive for the life of the process
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter) {
  console.error('no WebGPU adapter');
  process.exit(1);
}
console.log(describe(adapter));
if (features) {
  const i = adapter.info;
  console.log(`features: ${[...adapter.features].sort().join(' ')}`);
  console.log(`subgroup sizes: ${i.subgroupMinSize ?? '?'}…${i.subgroupMaxSize ?? '?'}`);
  console.log(`maxComputeWorkgroupStorageSize ${adapter.limits.maxComputeWorkgroupStorageSize}, ` +
    `maxStorageBufferBindingSize ${adapter.limits.maxStorageBufferBindingSize}`);
  const unsafe = create(['enable-dawn-features=allow_unsafe_apis']);
  globalThis.__vimGpuUnsafe = unsafe;
  const u = await unsafe.requestAdapter({ powerPreference: 'high-performance' });
  const configs = u?.features.has('chromium-experimental-subgroup-matrix') ? [...(u.info.subgroupMatrixConfigs ?? [])] : [];
  console.log(`subgroup-matrix configurations (unsafe APIs allowed): ${configs.length ? '' : 'none'}`);
  for (const c of configs) console.log(`  ${c.componentType} × ${c.componentType} → ${c.resultComponentType}, ${c.M}×${c.N}×${c.K}`);
}
process.exit(0);
