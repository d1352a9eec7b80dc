// The reference backend against the core functions it wraps: checks the wiring (argument order, element types,
// errors becoming rejections) rather than the maths, which core's own tests cover.
import { defineConformanceTests } from "../../tests/conformance/mod.ts";
import { tsBackend } from "./mod.ts";

defineConformanceTests("ts", () => tsBackend);
