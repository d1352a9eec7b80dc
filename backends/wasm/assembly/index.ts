// Entry point of the WASM backend's module: re-exports every kernel.
export { atomicStore32, heapBase, spinWaitEqual } from "./common";
export * from "./gemm";
export * from "./gram";
export * from "./gptq";
export * from "./dgemm";
export * from "./factor";
export * from "./factor32";
export * from "./nn";
export * from "./rows";
