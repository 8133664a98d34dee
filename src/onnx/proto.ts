/**
 * The part of the ONNX protobuf schema that a Vim export needs, for protobufjs (reflection, no
 * generated code): a model, its graph, nodes, attributes, tensors and value types, with ONNX's
 * field numbers and wire types. ONNX's schema is proto2, so repeated scalars are unpacked unless
 * the schema marks them packed (the TensorProto data arrays); the text below says so explicitly.
 *
 * Encoding and decoding go through protobufjs. Decoded int64 fields arrive as numbers (through
 * `toObject` with `longs: Number`); bytes fields arrive as views into the file's buffer.
 *
 * `OnnxModelInfo` is a second view of the same bytes that lists only the model's top-level
 * fields: decoding it skips the graph (one length-delimited field), so reading a 25 MB model's
 * metadata costs microseconds.
 */
import protobuf from 'protobufjs';

const SCHEMA = `
syntax = "proto2";
package vimonnx;

message OperatorSetIdProto {
  optional string domain = 1;
  optional int64 version = 2;
}

message StringStringEntryProto {
  optional string key = 1;
  optional string value = 2;
}

message TensorShapeProto {
  message Dimension {
    oneof value {
      int64 dim_value = 1;
      string dim_param = 2;
    }
    optional string denotation = 3;
  }
  repeated Dimension dim = 1;
}

message TypeProto {
  message Tensor {
    optional int32 elem_type = 1;
    optional TensorShapeProto shape = 2;
  }
  oneof value {
    Tensor tensor_type = 1;
  }
  optional string denotation = 6;
}

message ValueInfoProto {
  optional string name = 1;
  optional TypeProto type = 2;
  optional string doc_string = 3;
}

message TensorProto {
  repeated int64 dims = 1 [packed = false];
  optional int32 data_type = 2;
  repeated float float_data = 4 [packed = true];
  repeated int32 int32_data = 5 [packed = true];
  repeated bytes string_data = 6;
  repeated int64 int64_data = 7 [packed = true];
  optional string name = 8;
  optional bytes raw_data = 9;
  repeated double double_data = 10 [packed = true];
  repeated uint64 uint64_data = 11 [packed = true];
  optional string doc_string = 12;
  repeated StringStringEntryProto external_data = 13;
  optional int32 data_location = 14;
}

message AttributeProto {
  optional string name = 1;
  optional float f = 2;
  optional int64 i = 3;
  optional bytes s = 4;
  optional TensorProto t = 5;
  optional GraphProto g = 6;
  repeated float floats = 7 [packed = false];
  repeated int64 ints = 8 [packed = false];
  repeated bytes strings = 9;
  repeated TensorProto tensors = 10;
  repeated GraphProto graphs = 11;
  optional string doc_string = 13;
  optional int32 type = 20;
  optional string ref_attr_name = 21;
}

message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  repeated AttributeProto attribute = 5;
  optional string doc_string = 6;
  optional string domain = 7;
}

message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
  repeated TensorProto initializer = 5;
  optional string doc_string = 10;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
  repeated ValueInfoProto value_info = 13;
}

message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional string producer_version = 3;
  optional string domain = 4;
  optional int64 model_version = 5;
  optional string doc_string = 6;
  optional GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}

// ModelProto's top-level fields without decoding the graph: field 7 is read as plain bytes.
message OnnxModelInfo {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional string producer_version = 3;
  optional string domain = 4;
  optional int64 model_version = 5;
  optional string doc_string = 6;
  optional bytes graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
  repeated StringStringEntryProto metadata_props = 14;
}
`;

/** TensorProto.DataType values used here. */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT32: 6,
  INT64: 7,
  FLOAT16: 10,
  DOUBLE: 11,
} as const;

/** AttributeProto.AttributeType values. */
export const AttributeType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
} as const;

// Plain-object forms of the messages (what encode takes and decode gives back).

export interface OperatorSetId {
  domain?: string;
  version: number;
}

export interface StringStringEntry {
  key: string;
  value: string;
}

export interface Dimension {
  dim_value?: number;
  dim_param?: string;
}

export interface TensorShape {
  dim?: Dimension[];
}

export interface TypeProtoTensor {
  elem_type: number;
  shape?: TensorShape;
}

export interface TypeProtoMsg {
  tensor_type?: TypeProtoTensor;
}

export interface ValueInfo {
  name: string;
  type?: TypeProtoMsg;
  doc_string?: string;
}

export interface Tensor {
  name?: string;
  dims?: number[];
  data_type: number;
  raw_data?: Uint8Array;
  float_data?: number[];
  int32_data?: number[];
  int64_data?: number[];
  double_data?: number[];
  doc_string?: string;
}

export interface Attribute {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: Tensor;
  g?: Graph;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  doc_string?: string;
}

export interface Node {
  input?: string[];
  output?: string[];
  name?: string;
  op_type: string;
  domain?: string;
  attribute?: Attribute[];
  doc_string?: string;
}

export interface Graph {
  name?: string;
  node?: Node[];
  initializer?: Tensor[];
  input?: ValueInfo[];
  output?: ValueInfo[];
  value_info?: ValueInfo[];
  doc_string?: string;
}

export interface Model {
  ir_version: number;
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: number;
  doc_string?: string;
  graph?: Graph;
  opset_import?: OperatorSetId[];
  metadata_props?: StringStringEntry[];
}

/** ModelProto's top-level fields with the graph left encoded. */
export interface ModelInfo extends Omit<Model, 'graph'> {
  graph?: Uint8Array;
}

let root: protobuf.Root | null = null;

function schema(): protobuf.Root {
  if (root === null) {
    root = protobuf.parse(SCHEMA, { keepCase: true }).root;
    // Features such as `packed` take effect only once every type is resolved.
    root.resolveAll();
  }
  return root;
}

function type(name: string): protobuf.Type {
  return schema().lookupType(`vimonnx.${name}`);
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, arrays: false, defaults: false };

/** Serialise a model. Throws Error when the object does not fit the schema (a bug, not a user error). */
export function encodeModel(model: Model): Uint8Array {
  const t = type('ModelProto');
  const problem = t.verify(model);
  if (problem !== null) throw new Error(`encodeModel: ${problem}`);
  return t.encode(model as unknown as protobuf.Message).finish();
}

/** Parse a whole model (graph, initializers and all). Throws protobufjs's Error on bytes that are not one. */
export function decodeModel(bytes: Uint8Array): Model {
  const t = type('ModelProto');
  return t.toObject(t.decode(bytes), TO_OBJECT) as Model;
}

/** Parse only the model's top-level fields (version, opsets, metadata); the graph stays encoded. */
export function decodeModelInfo(bytes: Uint8Array): ModelInfo {
  const t = type('OnnxModelInfo');
  return t.toObject(t.decode(bytes), TO_OBJECT) as ModelInfo;
}

/** Serialise a lone tensor or graph (for tests of the wire format). */
export function encodeMessage(name: 'TensorProto' | 'AttributeProto' | 'GraphProto' | 'NodeProto', value: object): Uint8Array {
  return type(name).encode(value as protobuf.Message).finish();
}
