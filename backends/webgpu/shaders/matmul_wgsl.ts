/**
 * WGSL of the tiled matrix product `C = alpha · op(A) · op(B) + beta · C` on sub-matrices of storage buffers (offset
 * and leading dimension per operand), the one kernel behind matmul, Gram accumulation, GPTQ's lazy block updates and
 * the blocked Cholesky and triangular solves.
 *
 * Tiling: a workgroup of 256 invocations computes a 128×128 tile of C, each invocation an 8×8 register block (two
 * 4-row by two 4-column quadrants, so that workgroup-memory reads are vec4 and conflict-free). The K dimension is
 * walked in steps of `bk` with two workgroup-memory buffers: the next step's global loads go to registers while the
 * current step computes, so each step costs one barrier. Operand tiles are stored k-major (`As[k][m]`, `Bs[k][n]`).
 *
 * `vec` kernels load and store vec4 (every contiguous dimension, offset and leading dimension a multiple of 4);
 * scalar kernels handle any shape. Both check bounds on every load and store, so no padding is needed.
 *
 * @module
 */

/** Static choices compiled into one matmul pipeline. */
export interface MatmulVariant {
  readonly transA: boolean;
  readonly transB: boolean;
  /** vec4 loads and stores (see the module doc for the alignment it needs). */
  readonly vec: boolean;
  /** K step per barrier: 8 or 16. */
  readonly bk: 8 | 16;
  /** Skip tiles strictly above ("lower") or below ("upper") the diagonal: for symmetric results (Gram, SYRK). */
  readonly triangle: "none" | "lower" | "upper";
  /** Binding index of A, B and C; equal indices share one binding (so C may be written in a buffer A or B read). */
  readonly bindings: readonly [a: number, b: number, c: number];
}

/** Cache key of a variant. */
export function matmulKey(v: MatmulVariant): string {
  return `matmul:${+v.transA}${+v.transB}:${v.vec ? "v" : "s"}:${v.bk}:${v.triangle}:${v.bindings.join("")}`;
}

/** Workgroup tile edge (rows and columns of C per workgroup). */
export const MATMUL_TILE = 128;

/** The WGSL of one variant. Uniform `p` holds M, N, K, offsets and leading dimensions (elements), alpha and beta. */
export function matmulWgsl(v: MatmulVariant): string {
  const { transA, transB, vec, bk, triangle, bindings } = v;
  const elem = vec ? "vec4<f32>" : "f32";
  const nb = Math.max(...bindings) + 1;
  const decl: string[] = [];
  for (let b = 0; b < nb; b++) {
    const writes = bindings[2] === b;
    decl.push(`@group(0) @binding(${b}) var<storage, ${writes ? "read_write" : "read"}> buf${b}: array<${elem}>;`);
  }
  decl.push(`@group(0) @binding(${nb}) var<uniform> p: Params;`);
  const A = `buf${bindings[0]}`, B = `buf${bindings[1]}`, C = `buf${bindings[2]}`;
  const per = bk / 8; // vec4 loads per invocation per operand per step

  // One operand's loader: `rows` is the M (or N) extent, tile origin `r0`; `trans` says where the contiguous dim is.
  // Non-transposed A is [M, K] (contiguous along K); transposed A is [K, M] (contiguous along M). For B the roles swap:
  // B is [K, N] (contiguous along N) and Bᵀ is [N, K] (contiguous along K).
  const loader = (name: string, buf: string, kMajorInMemory: boolean, extent: string, off: string, ld: string) => {
    const lines: string[] = [];
    lines.push(`fn load${name}(k0: u32, r0: u32, lid: u32, i: u32) -> vec4<f32> {`);
    lines.push(`  let idx = lid + i * 256u;`);
    if (kMajorInMemory) {
      // memory [K, R]: a vec4 runs along R. Tile: bk rows of k × 32 vec4 of R.
      lines.push(`  let k = k0 + idx / 32u; let r = r0 + (idx % 32u) * 4u;`);
      if (vec) {
        lines.push(`  if (k < p.K && r < ${extent}) { return ${buf}[(p.${off} + k * p.${ld} + r) / 4u]; }`);
        lines.push(`  return vec4<f32>(0.0);`);
      } else {
        lines.push(`  var v = vec4<f32>(0.0);`);
        lines.push(`  if (k < p.K) {`);
        lines.push(`    let base = p.${off} + k * p.${ld} + r;`);
        for (let c = 0; c < 4; c++) lines.push(`    if (r + ${c}u < ${extent}) { v[${c}] = ${buf}[base + ${c}u]; }`);
        lines.push(`  }`);
        lines.push(`  return v;`);
      }
    } else {
      // memory [R, K]: a vec4 runs along K. Tile: 128 rows of R × bk/4 vec4 of k.
      lines.push(`  let r = r0 + idx / ${bk / 4}u; let k = k0 + (idx % ${bk / 4}u) * 4u;`);
      if (vec) {
        lines.push(`  if (r < ${extent} && k < p.K) { return ${buf}[(p.${off} + r * p.${ld} + k) / 4u]; }`);
        lines.push(`  return vec4<f32>(0.0);`);
      } else {
        lines.push(`  var v = vec4<f32>(0.0);`);
        lines.push(`  if (r < ${extent}) {`);
        lines.push(`    let base = p.${off} + r * p.${ld} + k;`);
        for (let c = 0; c < 4; c++) lines.push(`    if (k + ${c}u < p.K) { v[${c}] = ${buf}[base + ${c}u]; }`);
        lines.push(`  }`);
        lines.push(`  return v;`);
      }
    }
    lines.push(`}`);
    // Store to the k-major workgroup tile.
    lines.push(`fn store${name}(base: u32, lid: u32, i: u32, v: vec4<f32>) {`);
    lines.push(`  let idx = lid + i * 256u;`);
    if (kMajorInMemory) {
      lines.push(`  ${name}s[base + idx] = v;`);
    } else {
      lines.push(`  let r = idx / ${bk / 4}u; let k = (idx % ${bk / 4}u) * 4u;`);
      lines.push(`  let q = r / 4u; let c = r % 4u;`);
      for (let c = 0; c < 4; c++) lines.push(`  ${name}s[base + (k + ${c}u) * 32u + q][c] = v[${c}];`);
    }
    lines.push(`}`);
    return lines.join("\n");
  };

  const accNames: string[] = [];
  for (let r = 0; r < 8; r++) for (let h = 0; h < 2; h++) accNames.push(`c${r}${h}`);

  const body: string[] = [];
  body.push(`  let m0 = wg.y * 128u; let n0 = wg.x * 128u;`);
  if (triangle === "lower") body.push(`  if (wg.x > wg.y) { return; }`);
  if (triangle === "upper") body.push(`  if (wg.y > wg.x) { return; }`);
  body.push(`  let tx = lid % 16u; let ty = lid / 16u;`);
  for (const a of accNames) body.push(`  var ${a} = vec4<f32>(0.0);`);
  body.push(`  let steps = (p.K + ${bk - 1}u) / ${bk}u;`);
  for (let i = 0; i < per; i++) {
    body.push(`  var ra${i} = loadA(0u, m0, lid, ${i}u); var rb${i} = loadB(0u, n0, lid, ${i}u);`);
  }
  for (let i = 0; i < per; i++) body.push(`  storeA(0u, lid, ${i}u, ra${i}); storeB(0u, lid, ${i}u, rb${i});`);
  body.push(`  workgroupBarrier();`);
  body.push(`  for (var t = 0u; t < steps; t++) {`);
  body.push(`    let cur = (t & 1u) * ${bk * 32}u; let nxt = ${bk * 32}u - cur;`);
  body.push(`    let more = t + 1u < steps;`);
  body.push(`    if (more) {`);
  for (let i = 0; i < per; i++) {
    body.push(
      `      ra${i} = loadA((t + 1u) * ${bk}u, m0, lid, ${i}u); rb${i} = loadB((t + 1u) * ${bk}u, n0, lid, ${i}u);`,
    );
  }
  body.push(`    }`);
  for (let k = 0; k < bk; k++) {
    body.push(`    {`);
    body.push(`      let a0 = As[cur + ${k * 32}u + ty]; let a1 = As[cur + ${k * 32 + 16}u + ty];`);
    body.push(`      let b0 = Bs[cur + ${k * 32}u + tx]; let b1 = Bs[cur + ${k * 32 + 16}u + tx];`);
    const comps = ["x", "y", "z", "w"];
    for (let r = 0; r < 8; r++) {
      const a = `${r < 4 ? "a0" : "a1"}.${comps[r % 4]}`;
      body.push(`      c${r}0 = fma(vec4<f32>(${a}), b0, c${r}0); c${r}1 = fma(vec4<f32>(${a}), b1, c${r}1);`);
    }
    body.push(`    }`);
  }
  body.push(`    if (more) {`);
  for (let i = 0; i < per; i++) body.push(`      storeA(nxt, lid, ${i}u, ra${i}); storeB(nxt, lid, ${i}u, rb${i});`);
  body.push(`    }`);
  body.push(`    workgroupBarrier();`);
  body.push(`  }`);
  // Epilogue.
  for (let r = 0; r < 8; r++) {
    const mExpr = r < 4 ? `m0 + ty * 4u + ${r}u` : `m0 + 64u + ty * 4u + ${r - 4}u`;
    body.push(`  { let m = ${mExpr}; if (m < p.M) {`);
    for (let h = 0; h < 2; h++) {
      body.push(
        `    { let n = n0 + ${h * 64}u + tx * 4u; let o = p.offC + m * p.ldC + n; let v = p.alpha * c${r}${h};`,
      );
      if (vec) {
        body.push(`      if (n < p.N) {`);
        body.push(`        if (p.beta != 0.0) { ${C}[o / 4u] = fma(vec4<f32>(p.beta), ${C}[o / 4u], v); }`);
        body.push(`        else { ${C}[o / 4u] = v; }`);
        body.push(`      }`);
      } else {
        for (let c = 0; c < 4; c++) {
          body.push(`      if (n + ${c}u < p.N) {`);
          body.push(`        if (p.beta != 0.0) { ${C}[o + ${c}u] = fma(p.beta, ${C}[o + ${c}u], v[${c}]); }`);
          body.push(`        else { ${C}[o + ${c}u] = v[${c}]; }`);
          body.push(`      }`);
        }
      }
      body.push(`    }`);
    }
    body.push(`  } }`);
  }

  return `// matmul transA=${transA} transB=${transB} vec=${vec} bk=${bk} triangle=${triangle}
struct Params { M: u32, N: u32, K: u32, offA: u32, ldA: u32, offB: u32, ldB: u32, offC: u32, ldC: u32, alpha: f32, beta: f32, pad: u32 }
${decl.join("\n")}
var<workgroup> As: array<vec4<f32>, ${2 * bk * 32}>;
var<workgroup> Bs: array<vec4<f32>, ${2 * bk * 32}>;
${loader("A", A, transA, "p.M", "offA", "ldA")}
${loader("B", B, !transB, "p.N", "offB", "ldB")}
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
${body.join("\n")}
}
`;
}
