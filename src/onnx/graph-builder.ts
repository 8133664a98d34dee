/**
 * A small builder for ONNX graphs: nodes with unique names, initializers stored once, small
 * integer/float constants shared by value, and typed attribute constructors. It knows nothing of
 * Vim; export.ts describes the model with it.
 */
import { AttributeType, DataType, type Attribute, type Dimension, type Graph, type Node, type Tensor, type ValueInfo } from './proto.js';
import { f32ToF16Bits } from '../io/safetensors.js';

/** A dimension of a declared shape: a size, or a symbolic name such as "batch". */
export type Dim = number | string;

export type AttrValue =
  | { kind: 'int'; v: number }
  | { kind: 'ints'; v: readonly number[] }
  | { kind: 'float'; v: number }
  | { kind: 'graph'; v: Graph }
  | { kind: 'tensor'; v: Tensor };

export const attr = {
  int: (v: number): AttrValue => ({ kind: 'int', v }),
  ints: (v: readonly number[]): AttrValue => ({ kind: 'ints', v }),
  float: (v: number): AttrValue => ({ kind: 'float', v }),
  graph: (v: Graph): AttrValue => ({ kind: 'graph', v }),
  tensor: (v: Tensor): AttrValue => ({ kind: 'tensor', v }),
};

function toAttribute(name: string, a: AttrValue): Attribute {
  switch (a.kind) {
    case 'int': return { name, type: AttributeType.INT, i: a.v };
    case 'ints': return { name, type: AttributeType.INTS, ints: [...a.v] };
    case 'float': return { name, type: AttributeType.FLOAT, f: a.v };
    case 'graph': return { name, type: AttributeType.GRAPH, g: a.v };
    case 'tensor': return { name, type: AttributeType.TENSOR, t: a.v };
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The little-endian bytes of a typed array (ONNX raw_data): a view on little-endian machines. */
function leBytes(a: Float32Array | BigInt64Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const out = new DataView(new ArrayBuffer(a.byteLength));
  if (a instanceof Float32Array) a.forEach((v, i) => out.setFloat32(4 * i, v, true));
  else a.forEach((v, i) => out.setBigInt64(8 * i, v, true));
  return new Uint8Array(out.buffer);
}

/** A float32 tensor (raw little-endian data). */
export function floatTensor(name: string, dims: readonly number[], data: Float32Array): Tensor {
  const size = dims.reduce((p, d) => p * d, 1);
  if (size !== data.length) throw new Error(`floatTensor ${name}: dims [${dims.join(', ')}] need ${size} values, got ${data.length}`);
  return { name, dims: [...dims], data_type: DataType.FLOAT, raw_data: leBytes(data) };
}

/** A float16 tensor from float32 values (rounded to nearest even; raw little-endian data). */
export function float16Tensor(name: string, dims: readonly number[], data: Float32Array): Tensor {
  const size = dims.reduce((p, d) => p * d, 1);
  if (size !== data.length) throw new Error(`float16Tensor ${name}: dims [${dims.join(', ')}] need ${size} values, got ${data.length}`);
  const bytes = new Uint8Array(2 * size);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < size; i++) view.setUint16(2 * i, f32ToF16Bits(data[i]), true);
  return { name, dims: [...dims], data_type: DataType.FLOAT16, raw_data: bytes };
}

/** An int64 tensor (raw little-endian data). */
export function int64Tensor(name: string, dims: readonly number[], values: readonly number[]): Tensor {
  return { name, dims: [...dims], data_type: DataType.INT64, raw_data: leBytes(BigInt64Array.from(values, (v) => BigInt(v))) };
}

/** A tensor value's declared type: float32 or int64 with a shape (or only a rank, with null dims). */
export function valueInfo(name: string, shape: readonly (Dim | null)[], elemType: number = DataType.FLOAT, doc?: string): ValueInfo {
  const dim: Dimension[] = shape.map((d) => (d === null ? {} : typeof d === 'number' ? { dim_value: d } : { dim_param: d }));
  const info: ValueInfo = { name, type: { tensor_type: { elem_type: elemType, shape: { dim } } } };
  if (doc !== undefined) info.doc_string = doc;
  return info;
}

export class GraphBuilder {
  readonly nodes: Node[] = [];
  readonly initializers: Tensor[] = [];
  private readonly names = new Set<string>();
  private readonly nodeNames = new Set<string>();
  private readonly constants = new Map<string, string>();
  private counter = 0;

  /**
   * @param prefix prepended to every generated value name, so the values of a subgraph never
   *   shadow the outer graph's (ONNX wants each name defined once across the nesting).
   * @param shared the builder of the outer graph, whose constants this one reuses by name.
   */
  constructor(readonly prefix = '', private readonly shared?: GraphBuilder) {}

  /** A fresh value name, "<prefix><hint>" or "<prefix><hint>_<n>" when taken. */
  fresh(hint: string): string {
    let name = this.prefix + hint;
    while (this.names.has(name) || (this.shared?.names.has(name) ?? false)) name = `${this.prefix}${hint}_${++this.counter}`;
    this.names.add(name);
    this.shared?.names.add(name);
    return name;
  }

  /** Add a node; returns its output names (as many as `outputs` names or counts). */
  add(opType: string, inputs: readonly string[], outputs: readonly string[] | number, attrs: Record<string, AttrValue> = {}, name?: string): string[] {
    const outs = typeof outputs === 'number'
      ? Array.from({ length: outputs }, (_, i) => this.fresh(`${name ?? opType}${outputs > 1 ? `:${i}` : ''}`))
      : [...outputs];
    const node: Node = { op_type: opType, input: [...inputs], output: outs, name: this.freshNodeName(name ?? opType) };
    const attribute = Object.entries(attrs).map(([k, v]) => toAttribute(k, v));
    if (attribute.length > 0) node.attribute = attribute;
    this.nodes.push(node);
    return outs;
  }

  /** Add a one-output node and return that output's name. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, name?: string): string {
    return this.add(opType, inputs, 1, attrs, name)[0]!;
  }

  private freshNodeName(hint: string): string {
    let name = this.prefix + hint;
    let i = 0;
    while (this.nodeNames.has(name)) name = `${this.prefix}${hint}_${++i}`;
    this.nodeNames.add(name);
    return name;
  }

  /**
   * Store a float32 weight as the value `name` (each name once). With `weights` 'f16' (set on the
   * builder) it is stored as a float16 initializer `name`.f16 and a Cast to float32 defines `name`:
   * half the bytes, and onnxruntime folds the Cast once when it loads the model. `float32` keeps
   * a tensor float32 regardless (one computed from the weights, whose rounding would not be a
   * rounding of the weights).
   */
  initializer(name: string, dims: readonly number[], data: Float32Array, opts: { float32?: boolean } = {}): string {
    if (this.names.has(name)) throw new Error(`GraphBuilder: initializer ${name} defined twice`);
    this.names.add(name);
    if (this.weights === 'f16' && !opts.float32) {
      const stored = this.claim(`${name}.f16`);
      this.initializers.push(float16Tensor(stored, dims, data));
      this.nodes.push({
        op_type: 'Cast', input: [stored], output: [name], name: this.freshNodeName(`${name}/cast`),
        attribute: [toAttribute('to', attr.int(DataType.FLOAT))],
      });
    } else {
      this.initializers.push(floatTensor(name, dims, data));
    }
    return name;
  }

  /** How initializer() stores weights (constants made by f32() and i64() are not affected). */
  weights: 'f32' | 'f16' = 'f32';

  /** A shared int64 constant (Reshape shapes, Slice bounds, axes), stored once per distinct value. */
  i64(values: readonly number[], scalar = false): string {
    if (this.shared) return this.shared.i64(values, scalar);
    const key = `i64${scalar ? 's' : ''}:${values.join(',')}`;
    const found = this.constants.get(key);
    if (found !== undefined) return found;
    const name = this.fresh(scalar ? `const_i64_${values[0]}` : `const_i64_[${values.join(',')}]`);
    this.initializers.push(int64Tensor(name, scalar ? [] : [values.length], values));
    this.constants.set(key, name);
    return name;
  }

  /** A shared float32 constant of the given shape ([] for a scalar), stored once per distinct value. */
  f32(values: readonly number[], dims: readonly number[] = []): string {
    if (this.shared) return this.shared.f32(values, dims);
    const key = `f32:${dims.join('x')}:${values.join(',')}`;
    const found = this.constants.get(key);
    if (found !== undefined) return found;
    const name = this.fresh(dims.length === 0 ? `const_f32_${values[0]}` : `const_f32_${dims.join('x')}`);
    this.initializers.push(floatTensor(name, dims, Float32Array.from(values)));
    this.constants.set(key, name);
    return name;
  }

  /** Claim names defined elsewhere (graph inputs), so nothing generated later reuses them. */
  claim(name: string): string {
    if (this.names.has(name)) throw new Error(`GraphBuilder: ${name} defined twice`);
    this.names.add(name);
    return name;
  }

  graph(name: string, input: ValueInfo[], output: ValueInfo[], doc?: string): Graph {
    const g: Graph = { name, node: this.nodes, input, output };
    if (this.initializers.length > 0) g.initializer = this.initializers;
    if (doc !== undefined) g.doc_string = doc;
    return g;
  }
}
