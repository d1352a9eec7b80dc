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
