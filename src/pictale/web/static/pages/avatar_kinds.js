// What each avatar kind takes and how its token is written (shared by Avatars and Characters).

export const KINDS = {
  face: {
    label: "Face",
    accept: "image/png,image/jpeg,image/webp,image/bmp",
    multiple: true,
    weight: 0.4,
    what: "one or more photos of the same face (PNG, JPEG, WebP or BMP)",
  },
  style: {
    label: "Style",
    accept: "image/png,image/jpeg,image/webp,image/bmp",
    multiple: true,
    weight: 0.5,
    what: "one or more images in the style",
  },
  pose: {
    label: "Pose",
    accept: "image/png,image/jpeg,image/webp,image/bmp",
    multiple: false,
    weight: 1,
    what: "one OpenPose skeleton image (coloured limbs on black)",
  },
  lora: {
    label: "LoRA",
    accept: ".safetensors",
    multiple: false,
    weight: 1,
    what: "one LoRA .safetensors file",
    words: true,
  },
  embedding: {
    label: "Embedding",
    accept: ".safetensors",
    multiple: false,
    weight: 1,
    what: "one textual-inversion .safetensors file",
    words: true,
    token: true,
  },
};

export const KIND_NAMES = Object.keys(KINDS);

// "<be-face:lucy:0.4>": the token with the kind's default weight
export function tokenOf(avatar, weight) {
  const w = weight ?? KINDS[avatar.kind]?.weight ?? 1;
  return `<be-${avatar.kind}:${avatar.name}:${w}>`;
}

// Copy text; falls back to selecting it in a hidden textarea where the clipboard API is refused.
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "sr-only";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (err) {
      ok = false;
    }
    area.remove();
    return ok;
  }
}
