import { equal, throws } from "node:assert/strict";
import { parseJobSpec } from "./spec.ts";

Deno.test("job spec: OAC's rows default to coupled, and to the paper's form where an option builds on H_OAC", () => {
  const oac = { model: "m", method: "oac", calib: "c.txt" };
  equal(parseJobSpec(oac).oac.rows, "coupled");
  equal(parseJobSpec({ ...oac, engine: "billm" }).oac.rows, "coupled");
  equal(parseJobSpec({ ...oac, "oac-mix": 1 }).oac.rows, "independent");
  equal(parseJobSpec({ ...oac, "oac-form": "token-diagonal" }).oac.rows, "independent");
  equal(parseJobSpec({ ...oac, "oac-rows": "independent" }).oac.rows, "independent");
  throws(() => parseJobSpec({ ...oac, "oac-rows": "coupled", "oac-mix": 1 }), /coupled/);
  throws(() => parseJobSpec({ ...oac, engine: "vptq" }), /unknown engine "vptq"/);
});

Deno.test("job spec: OAC's first-order step is on with coupled rows, off with the paper's, and checked", () => {
  const oac = { model: "m", method: "oac", calib: "c.txt" };
  const coupled = parseJobSpec(oac).oac;
  equal(coupled.firstOrder, 1);
  equal(coupled.firstOrderDamping, 10);
  equal(coupled.firstOrderTrust, 0.05);
  const paper = parseJobSpec({ ...oac, "oac-rows": "independent" }).oac;
  equal(paper.firstOrder, 0);
  equal(paper.firstOrderDamping, 0.1);
  equal(coupled.firstOrderGradient, "lost");
  equal(parseJobSpec({ ...oac, "oac-refresh": "once" }).oac.firstOrder, 0, "nothing is lost with gradients taken once");
  equal(parseJobSpec({ ...oac, "oac-step": 0 }).oac.firstOrder, 0);
  equal(parseJobSpec({ ...oac, "oac-step-trust": 0.2, "oac-step-damping": 1 }).oac.firstOrderTrust, 0.2);
  equal(parseJobSpec({ ...oac, "oac-step-from": "loss" }).oac.firstOrderGradient, "loss");
  throws(() => parseJobSpec({ ...oac, "oac-step": -1 }), /oac-step/);
  throws(() => parseJobSpec({ ...oac, engine: "billm", "oac-role": "salience", "oac-step": 1 }), /role/);
  equal(parseJobSpec({ ...oac, "oac-refresh": "once", "oac-step": 1 }).oac.firstOrderGradient, "loss");
  throws(() => parseJobSpec({ ...oac, "oac-refresh": "once", "oac-step": 1, "oac-step-from": "lost" }), /lost/);
});
