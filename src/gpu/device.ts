/**
 * WebGPU adapter and device acquisition through Dawn (the `webgpu` package).
 *
 * - Requests the adapter's real storage-binding and buffer limits (the defaults cap a binding at
 *   128 MiB), and the optional features `subgroups`, `timestamp-query` and `shader-f16` where the
 *   adapter has them; every kernel has a path that works without each.
 * - Keeps the object returned by `create()` referenced for the life of the process: Dawn can
 *   crash when it is collected.
 * - Reports a lost device (every later readback rejects with the reason) instead of hanging,
 *   and surfaces uncaptured validation errors at the next readback.
 * - On a GPU, turns off Dawn's robustness (index clamping) and workgroup-memory zeroing unless
 *   $VIM_DAWN_TOGGLES says otherwise: every kernel here is checked against the float64 reference
 *   (`bench-vim --check`), and the clamping cost a training step 9% on an H200
 *   (docs/performance.md, change 12). CPU adapters keep them: there the toggles only slow
 *   pipeline builds.
 * - Turns off Dawn's rounding of timestamp queries to 65,536 ns, so that bench-vim times each
 *   dispatch exactly.
 */
import { create, globals } from 'webgpu';
import { VimError } from '../errors.js';

export interface GpuFeatures {
  subgroups: boolean;
  timestamps: boolean;
  f16: boolean;
}

export interface GpuInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (lavapipe/llvmpipe, SwiftShader, WARP): exact but slow. */
  isCpu: boolean;
  /** The adapter's smallest and largest subgroup sizes (0 where it does not say). */
  subgroupMinSize: number;
  subgroupMaxSize: number;
}

export interface Gpu {
  adapter: GPUAdapter;
  device: GPUDevice;
  queue: GPUQueue;
  info: GpuInfo;
  features: GpuFeatures;
  limits: GPUSupportedLimits;
  /** The Dawn toggles the device was made with (a leading '-' marks one turned off). */
  toggles: string[];
  /** Set once the device is lost; every readback then rejects with this reason. */
  lostReason: string | null;
  /** The first uncaptured GPU error since the last check (validation or out of memory). */
  takeError(): string | null;
  destroy(): void;
}

/** Dawn's toggle that rounds timestamp queries (off in every instance made here unless named). */
const TIMESTAMP_QUANTIZATION = 'timestamp_quantization';

const dawn = new Map<string, GPU>(); // one instance per set of toggles, referenced for the life of the process (see above)
const live = new Set<Gpu>();

/** A Dawn instance whose devices get `toggles` (a leading '-' turns a toggle off). */
function instance(toggles: string[]): GPU {
  const key = toggles.join(',');
  let inst = dawn.get(key);
  if (!inst) {
    Object.assign(globalThis, globals); // GPUBufferUsage, GPUMapMode, … as in a browser
    const on = toggles.filter((t) => !t.startsWith('-'));
    const off = toggles.filter((t) => t.startsWith('-')).map((t) => t.slice(1));
    // Exact timestamps: Dawn rounds them down to 65,536 ns by default (a browser's guard against
    // timing attacks), which would make bench-vim's per-kernel table useless for dispatches of tens
    // of µs. Named in $VIM_DAWN_TOGGLES, the rounding stays on.
    if (!on.includes(TIMESTAMP_QUANTIZATION) && !off.includes(TIMESTAMP_QUANTIZATION)) off.push(TIMESTAMP_QUANTIZATION);
    inst = create([
      ...(on.length ? [`enable-dawn-features=${on.join(',')}`] : []),
      ...(off.length ? [`disable-dawn-features=${off.join(',')}`] : []),
    ]);
    dawn.set(key, inst);
    (globalThis as Record<string, unknown>).__vimDawnInstances = dawn;
  }
  return inst;
}

/** The toggles a GPU (not a CPU adapter) gets where $VIM_DAWN_TOGGLES is not set. */
export const GPU_DEFAULT_TOGGLES = ['disable_robustness', 'disable_workgroup_init'];

function isCpuAdapter(ai: GPUAdapterInfo): boolean {
  const text = `${ai.vendor} ${ai.architecture} ${ai.device} ${ai.description}`.toLowerCase();
  return Boolean((ai as { isFallbackAdapter?: boolean }).isFallbackAdapter) || /llvmpipe|lavapipe|swiftshader|software|warp/.test(text);
}

export const NO_ADAPTER_MESSAGE =
  'no WebGPU adapter found. On a machine without a GPU, install Mesa\'s Vulkan driver (lavapipe): ' +
  'run scripts/setup.sh (Debian 12 needs mesa-vulkan-drivers from bookworm-backports; the Debian 12 ' +
  'default, Mesa 22, is refused by Dawn). On a GPU machine, check that its Vulkan driver is installed ' +
  '(vulkaninfo --summary).';

/**
 * Dawn toggles from $VIM_DAWN_TOGGLES (a comma list; a name with a leading '-' is turned off, and
 * `none` or an empty value means no toggles), for every device this process makes; undefined where
 * the variable is not set (each device then gets the default for its adapter).
 */
export function dawnToggles(): string[] | undefined {
  const v = process.env.VIM_DAWN_TOGGLES;
  if (v === undefined) return undefined;
  return v.split(',').map((t) => t.trim()).filter((t) => t.length > 0 && t !== 'none');
}

export interface AcquireOptions {
  powerPreference?: GPUPowerPreference;
  /** Turn off optional features, e.g. to test the paths that work without them. */
  disable?: Partial<Record<keyof GpuFeatures, boolean>>;
}

export async function acquireGpu(opts: AcquireOptions = {}): Promise<Gpu> {
  const request = { powerPreference: opts.powerPreference ?? 'high-performance' } as const;
  let toggles = dawnToggles();
  let found = await instance(toggles ?? []).requestAdapter(request);
  if (!found) throw new VimError(NO_ADAPTER_MESSAGE);
  if (toggles === undefined) {
    // no choice in the environment: a GPU gets the default toggles, from an instance that has them
    toggles = isCpuAdapter(found.info) ? [] : GPU_DEFAULT_TOGGLES;
    if (toggles.length) {
      const again = await instance(toggles).requestAdapter(request);
      if (!again || isCpuAdapter(again.info)) toggles = [];
      else found = again;
    }
  }
  const adapter = found;
  const has = (f: string) => adapter.features.has(f as GPUFeatureName);
  const features: GpuFeatures = {
    subgroups: has('subgroups') && !opts.disable?.subgroups,
    timestamps: has('timestamp-query') && !opts.disable?.timestamps,
    f16: has('shader-f16') && !opts.disable?.f16,
  };
  const requiredFeatures: GPUFeatureName[] = [];
  if (features.subgroups) requiredFeatures.push('subgroups' as GPUFeatureName);
  if (features.timestamps) requiredFeatures.push('timestamp-query');
  if (features.f16) requiredFeatures.push('shader-f16');
  const a = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: a.maxStorageBufferBindingSize,
    maxBufferSize: a.maxBufferSize,
    maxStorageBuffersPerShaderStage: a.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: a.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: a.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: a.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: a.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupsPerDimension: a.maxComputeWorkgroupsPerDimension,
  };
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'vim-webgpu' });
  } catch (e) {
    throw new VimError(`the WebGPU adapter refused to create a device: ${(e as Error).message}`);
  }
  const ai = adapter.info;
  const info: GpuInfo = {
    vendor: ai.vendor ?? '',
    architecture: ai.architecture ?? '',
    device: ai.device ?? '',
    description: ai.description ?? '',
    isCpu: isCpuAdapter(ai),
    subgroupMinSize: (ai as { subgroupMinSize?: number }).subgroupMinSize ?? 0,
    subgroupMaxSize: (ai as { subgroupMaxSize?: number }).subgroupMaxSize ?? 0,
  };
  const errors: string[] = [];
  const gpu: Gpu = {
    adapter,
    device,
    queue: device.queue,
    info,
    features,
    limits: device.limits,
    toggles,
    lostReason: null,
    takeError() {
      return errors.length ? errors.splice(0).join('\n') : null;
    },
    destroy() {
      live.delete(gpu);
      device.destroy();
    },
  };
  device.addEventListener('uncapturederror', (ev) => {
    const e = (ev as GPUUncapturedErrorEvent).error;
    if (errors.length < 8) errors.push(e.message);
  });
  void device.lost.then((l) => {
    if (l.reason !== 'destroyed') gpu.lostReason = `the GPU device was lost (${l.reason}): ${l.message}`;
    else gpu.lostReason = 'the GPU device was destroyed';
  });
  live.add(gpu);
  return gpu;
}

/**
 * The subgroup size kernels may rely on: the adapter's, where subgroups are enabled and every
 * subgroup has the same power-of-two size; else 0.
 */
export function fixedSubgroupSize(gpu: Gpu): number {
  const { subgroupMinSize: lo, subgroupMaxSize: hi } = gpu.info;
  return gpu.features.subgroups && lo === hi && lo >= 1 && (lo & (lo - 1)) === 0 ? lo : 0;
}

/** A one-line description of the adapter for logs. */
export function describeGpu(gpu: Gpu): string {
  const i = gpu.info;
  const name = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ').replace(/\s+/g, ' ');
  const f = Object.entries(gpu.features).filter(([, v]) => v).map(([k]) => k);
  // settings from the environment that change which kernels run or how
  const env = [
    ...(gpu.toggles.length ? [`Dawn toggles: ${gpu.toggles.join(',')}${dawnToggles() === undefined ? ' (the default on a GPU)' : ''}`] : []),
    ...[['VIM_MATMUL_TUNED', 'matmul tuning from'], ['VIM_MATMUL_ROWS', 'narrow input gradient rows'], ['VIM_SCAN_KERNEL', 'scan backward kernel'],
      ['VIM_SCAN_WORKGROUP', 'scan backward workgroup'], ['VIM_SCAN_SEGMENT', 'scan backward segment'],
      ['VIM_SCAN_SPLIT', 'scan backward lanes per channel'], ['VIM_SCAN_LOOKAHEAD', 'scan backward lookahead'],
      ['VIM_SCAN_LANE_MEMORY', 'scan backward arrays in workgroup memory'], ['VIM_SCAN_WALK', 'scan backward walk'], ['VIM_SCAN_UNROLL', 'scan backward unrolled'], ['VIM_SCAN_EXP2', 'scan decay as exp2'], ['VIM_SCAN_WGSUM', 'scan backward sums over subgroups'], ['VIM_SCAN_SCALAR_SUMS', 'scan backward sums to single columns'],
      ['VIM_SCAN_DIAG', 'scan backward parts skipped (timing only)'], ['VIM_SCAN_FORWARD_DIAG', 'scan forward parts skipped (timing only)'], ['VIM_SCAN_REDUCE_PARAMS', 'scan parameter reduction'],
      ['VIM_SCAN_FORWARD_AHEAD', 'scan forward tokens ahead'], ['VIM_MERGE_WEIGHT_SUMS', 'weight sums a block in one dispatch'], ['VIM_SCAN_PAIR_REDUCE', 'scan reductions of both directions in one dispatch'], ['VIM_SCAN_FORWARD_CHUNK', 'scan forward tokens staged']]
      .flatMap(([k, what]) => (process.env[k] ? [`${what}: ${process.env[k]}`] : [])),
  ];
  return `${name}${i.isCpu ? ' (CPU)' : ''}${f.length ? ` [${f.join(', ')}]` : ''}${env.length ? ` (${env.join('; ')})` : ''}`;
}

/** Throws a VimError if the device was lost or an uncaptured GPU error happened. */
export function checkGpu(gpu: Gpu, during: string): void {
  if (gpu.lostReason) throw new VimError(`${during}: ${gpu.lostReason}`);
  const err = gpu.takeError();
  if (err) throw new Error(`${during}: GPU error: ${err}`);
}
