// The reproduction check CI runs (tests/test_node_runtime.py): for each case of CASES.json
// ({ bundle, variant, kind: 'image' | 'text', inputs: [png paths] | [texts], logits: [[...]] from
// Python ONNX Runtime }), run the bundle here from its manifest alone and compare.
// Prints one JSON line per case; exits 1 when any logit differs by more than --tolerance (1e-4).
import { readFileSync } from 'node:fs';

import { loadBundle, softmax, tokenIds } from './bundle.js';

const [casesPath, ...rest] = process.argv.slice(2);
const tolerance = rest.includes('--tolerance') ? Number(rest[rest.indexOf('--tolerance') + 1]) : 1e-4;
let failed = false;
for (const c of JSON.parse(readFileSync(casesPath, 'utf8'))) {
  const bundle = await loadBundle(c.bundle, { variant: c.variant });
  const logits = c.kind === 'image'
    ? await bundle.classifyPng(c.inputs.map((p) => readFileSync(p)))
    : await bundle.classifyTexts(c.inputs);
  let maxLogit = 0;
  let maxProb = 0;
  logits.forEach((row, i) => {
    const p = softmax(row);
    const q = softmax(c.logits[i]);
    row.forEach((v, j) => {
      maxLogit = Math.max(maxLogit, Math.abs(v - c.logits[i][j]));
      maxProb = Math.max(maxProb, Math.abs(p[j] - q[j]));
    });
  });
  const ok = logits.length === c.logits.length && maxLogit <= tolerance;
  failed ||= !ok;
  const ids = c.kind === 'text' ? tokenIds(bundle, c.inputs) : undefined;
  console.log(JSON.stringify({ bundle: c.bundle, variant: bundle.precision, kind: c.kind, inputs: c.inputs.length,
    max_abs_logit_diff: maxLogit, max_abs_prob_diff: maxProb, ok, ids_match: ids && c.ids
      ? JSON.stringify(ids) === JSON.stringify(c.ids) : undefined }));
}
process.exit(failed ? 1 : 0);
