// A1111 infotext parameters (as /sdapi/v1/png-info and the gallery parse them) -> the Generate form's fields.

const NUMBER_FIELDS = { Steps: "steps", "CFG scale": "cfg_scale", Seed: "seed", "Distilled CFG Scale": "distilled_cfg_scale" };

export function formFromParameters(p) {
  const out = {};
  if (!p) return out;
  if (p.Prompt !== undefined) out.prompt = String(p.Prompt);
  if (p["Negative prompt"] !== undefined) out.negative_prompt = String(p["Negative prompt"]);
  for (const [k, field] of Object.entries(NUMBER_FIELDS)) {
    if (p[k] !== undefined && p[k] !== "" && !Number.isNaN(Number(p[k]))) out[field] = Number(p[k]);
  }
  if (p["Size-1"] && p["Size-2"]) {
    out.width = Number(p["Size-1"]);
    out.height = Number(p["Size-2"]);
  }
  if (p.Sampler) out.sampler = String(p.Sampler);
  if (p.Model) out.model = String(p.Model);
  return out;
}

// The rows a parameters table shows: the parsed values whose key the infotext really holds (the parser also
// fills in A1111's defaults for keys that are absent).
const SKIP = new Set(["Prompt", "Negative prompt", "Size-1", "Size-2"]);
export function parameterRows(p, infotext) {
  if (!p) return [];
  const text = infotext || "";
  const rows = [];
  if (p["Size-1"]) rows.push(["Size", `${p["Size-1"]}×${p["Size-2"]}`]);
  for (const [k, v] of Object.entries(p)) {
    if (SKIP.has(k) || v === null || v === "") continue;
    if (text && !text.includes(`${k}: `)) continue;
    rows.push([k, String(v)]);
  }
  return rows;
}
