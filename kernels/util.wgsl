// Small utilities.
//   fill:  out (n) = value                 grid: ceil(n / 256) workgroups of 256
//   scale: out (n) = out (n) · value       grid: ceil(n / 256) workgroups of 256
struct Params { n: u32, value: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x < p.n) { out[gid.x] = p.value; }
}

@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3u) {
  if (gid.x < p.n) { out[gid.x] = out[gid.x] * p.value; }
}
