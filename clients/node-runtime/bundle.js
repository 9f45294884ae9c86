// A device-side runtime for edgetune bundles in Node.js: everything it does is read from the
// bundle's manifest.json (see schemas/bundle-manifest.schema.json and docs/bundle-format.md).
//
//   const bundle = await loadBundle('BUNDLE', { variant: 'int8' });   // default: manifest.default_variant
//   const logits = await bundle.classifyPng([fs.readFileSync('x.png')]);  // image classifiers
//   const logits = await bundle.classifyTexts(['some text']);               // text classifiers
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Tokenizer } from '@huggingface/tokenizers';
import ort from 'onnxruntime-node';
import { PNG } from 'pngjs';

const PRECISION_BITS = 22;

/** Read and verify a bundle (valid, every file's sha256), and open a session on one variant. */
export async function loadBundle(dir, { variant } = {}) {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  if (manifest.format !== 'edgetune.bundle/v1') throw new Error(`unknown bundle format ${manifest.format}`);
  if (!manifest.valid) throw new Error('bundle is not valid (it failed the parity gate)');
  for (const [name, { sha256 }] of Object.entries(manifest.files)) {
    const got = createHash('sha256').update(readFileSync(join(dir, name))).digest('hex');
    if (got !== sha256) throw new Error(`${name}: sha256 does not match the manifest`);
  }
  const precision = variant || manifest.default_variant || 'fp32';
  const entry = (manifest.variants || { fp32: { file: 'model.onnx' } })[precision];
  if (!entry) throw new Error(`the bundle has no ${precision} variant`);
  const session = await ort.InferenceSession.create(join(dir, entry.file), { executionProviders: ['cpu'] });
  const bundle = { dir, manifest, precision, session };
  if (manifest.task === 'text_classification') {
    const tok = manifest.tokenization;
    const spec = JSON.parse(readFileSync(join(dir, tok.file), 'utf8'));
    const configPath = join(dir, tok.file.replace(/tokenizer\.json$/, 'tokenizer_config.json'));
    bundle.tokenizer = new Tokenizer(spec, JSON.parse(readFileSync(configPath, 'utf8')));
  }
  bundle.classifyPng = (pngs) => run(bundle, { [manifest.inputs[0].name]: imageTensor(pngs, manifest.preprocessing) });
  bundle.classifyTexts = (texts) => run(bundle, textTensors(bundle, texts));
  return bundle;
}

async function run(bundle, feeds) {
  const out = await bundle.session.run(feeds);
  const logits = out[bundle.manifest.outputs[0].name];
  const [n, k] = logits.dims;
  return Array.from({ length: n }, (_, i) => Array.from(logits.data.slice(i * k, (i + 1) * k)));
}

/** Softmax of one row of logits. */
export function softmax(row) {
  const m = Math.max(...row);
  const e = row.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

// ---- images: decode, resize, normalize exactly as manifest.preprocessing says ----------------

/** PNG bytes -> { width, height, rgb: Uint8Array HWC }: 8-bit, grey replicated, palette looked up, alpha dropped. */
export function decodePng(buffer) {
  const png = PNG.sync.read(buffer);  // RGBA, 8 bits per channel, whatever the colour type
  if (png.depth > 8) throw new Error('16-bit PNG: the bundle format specifies 8-bit images; convert it first');
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let p = 0; p < png.width * png.height; p++) {
    rgb[p * 3] = png.data[p * 4];
    rgb[p * 3 + 1] = png.data[p * 4 + 1];
    rgb[p * 3 + 2] = png.data[p * 4 + 2];
  }
  return { width: png.width, height: png.height, rgb };
}

/** Per output index: first input index and integer weights (the manifest's resize.coefficients). */
function coefficients(nIn, nOut) {
  const scale = nIn / nOut;
  const support = Math.max(scale, 1.0);
  const rows = [];
  for (let i = 0; i < nOut; i++) {
    const center = (i + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), nIn);
    const ss = 1.0 / support;
    const w = [];
    let total = 0.0;
    for (let j = xmin; j < xmax; j++) {
      const v = Math.max(0.0, 1.0 - Math.abs((j - center + 0.5) * ss));
      w.push(v);
      total += v;
    }
    rows.push({ xmin, k: w.map((v) => Math.trunc((total ? v / total : v) * (1 << PRECISION_BITS) + 0.5)) });
  }
  return rows;
}

/** One pass along the width (axis 1) or the height (axis 0) of HWC uint8 pixels. */
function resample({ width, height, rgb }, nOut, axis) {
  const nIn = axis === 1 ? width : height;
  if (nIn === nOut) return { width, height, rgb };
  const rows = coefficients(nIn, nOut);
  const [w2, h2] = axis === 1 ? [nOut, height] : [width, nOut];
  const out = new Uint8Array(w2 * h2 * 3);
  for (let y = 0; y < h2; y++) {
    for (let x = 0; x < w2; x++) {
      const { xmin, k } = rows[axis === 1 ? x : y];
      for (let c = 0; c < 3; c++) {
        let acc = 1 << (PRECISION_BITS - 1);
        for (let t = 0; t < k.length; t++) {
          const src = axis === 1 ? (y * width + xmin + t) : ((xmin + t) * width + x);
          acc += k[t] * rgb[src * 3 + c];
        }
        out[(y * w2 + x) * 3 + c] = Math.min(255, Math.max(0, Math.floor(acc / (1 << PRECISION_BITS))));
      }
    }
  }
  return { width: w2, height: h2, rgb: out };
}

/** Encoded PNGs -> the float32 NCHW tensor the model takes. */
export function imageTensor(pngs, prep) {
  const { size, mean, std } = prep;
  if (prep.interpolation !== 'bilinear' || prep.layout !== 'NCHW' || prep.channels !== 'RGB') {
    throw new Error('unsupported preprocessing');
  }
  const plane = size * size;
  const m32 = mean.map(Math.fround);
  const s32 = std.map(Math.fround);
  const data = new Float32Array(pngs.length * 3 * plane);
  pngs.forEach((buffer, n) => {
    const img = resample(resample(decodePng(buffer), size, 1), size, 0);  // horizontal, then vertical
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        // float32 at every step, as numpy computes it: fround(fround(fround(v / 255) - mean) / std)
        const scaled = Math.fround(img.rgb[p * 3 + c] / 255);
        data[n * 3 * plane + c * plane + p] = Math.fround(Math.fround(scaled - m32[c]) / s32[c]);
      }
    }
  });
  return new ort.Tensor('float32', data, [pngs.length, 3, size, size]);
}

// ---- texts: the manifest's template, truncation and padding ----------------------------------

/** Token ids of each text: prefix + ids(text)[:max_length - specials] + suffix. */
export function tokenIds(bundle, texts) {
  const { max_length: maxLength, template } = bundle.manifest.tokenization;
  if (!template) throw new Error('the manifest has no tokenization template (a bundle from before it): re-export it');
  const room = maxLength - template.prefix_ids.length - template.suffix_ids.length;
  return texts.map((t) => [
    ...template.prefix_ids,
    ...bundle.tokenizer.encode(t, { add_special_tokens: false }).ids.slice(0, room),
    ...template.suffix_ids,
  ]);
}

function textTensors(bundle, texts) {
  const ids = tokenIds(bundle, texts);
  const width = Math.max(...ids.map((r) => r.length));
  const padId = BigInt(bundle.manifest.tokenization.pad_token_id);
  const inputIds = new BigInt64Array(ids.length * width).fill(padId);
  const mask = new BigInt64Array(ids.length * width);
  ids.forEach((row, i) => row.forEach((id, j) => {
    inputIds[i * width + j] = BigInt(id);
    mask[i * width + j] = 1n;
  }));
  const dims = [ids.length, width];
  return { input_ids: new ort.Tensor('int64', inputIds, dims), attention_mask: new ort.Tensor('int64', mask, dims) };
}
