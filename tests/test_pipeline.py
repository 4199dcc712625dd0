"""`pipeline("part-segmentation", model=folder, trust_remote_code=True)`: a saved PLUM folder carries its pipeline
(`custom_pipelines` in config.json, `pipeline_plum.py` beside the model code) and runs in a fresh process where this
repository cannot be imported; masks are bool arrays at each image's size or COCO RLE; highlight-to-segment gives the
same masks as the model's own `segment_spans`."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_plum import pipeline_plum
from modeling_plum.pipeline_plum import PlumInputError, PlumPartSegmentationPipeline

QUESTION = "What visible parts does the car in the image have?"
ANSWER = "The car in the image has the following visible parts: body, door, wheel, and window."
ENTRY = {
    "part-segmentation": {
        "impl": "pipeline_plum.PlumPartSegmentationPipeline",
        "pt": ["AutoModel"],
        "type": "multimodal",
    }
}


@pytest.fixture(scope="module")
def tiny():
    from modeling_plum.convert import build_tiny

    torch.manual_seed(0)
    model, processor = build_tiny()
    return model.eval(), processor


def noise(height, width, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def test_saved_folders_carry_the_pipeline(tiny, tmp_path):
    from modeling_plum.convert import main as convert

    assert convert(["--preset", "tiny", "--out", str(tmp_path / "converted")]) == 0
    model, processor = tiny
    model.save_pretrained(tmp_path / "saved")
    for folder in (tmp_path / "converted", tmp_path / "saved"):
        config = json.loads((folder / "config.json").read_text())
        assert config["custom_pipelines"] == ENTRY
        assert config["auto_map"]["AutoModel"] == "modeling_plum.PlumForConditionalGeneration"
        assert (folder / "pipeline_plum.py").read_text() == Path(pipeline_plum.__file__).read_text()


def test_pipeline_from_a_folder_in_a_fresh_process(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "plum")
    processor.save_pretrained(tmp_path / "plum")
    noise(48, 64).save(tmp_path / "a.png")
    noise(40, 30, seed=1).save(tmp_path / "b.png")
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("modeling_plum", "partonomy_dataset", "plum_training", "plum_demo"):
                    raise ImportError("the repository must not be importable here: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from PIL import Image
        from pycocotools import mask as coco
        from transformers import pipeline
        pipe = pipeline("part-segmentation", model={str(tmp_path / "plum")!r}, trust_remote_code=True)
        a, b = Image.open({str(tmp_path / "a.png")!r}), Image.open({str(tmp_path / "b.png")!r})
        report = {{"module": type(pipe).__module__}}
        one = pipe(a, {QUESTION!r}, max_new_tokens=12)
        report["generated"] = [type(one["text"]).__name__, len(one["spans"]), len(one["masks"])]
        report["generated_masks"] = sorted({{(str(m.dtype), m.shape) for m in one["masks"]}})
        both = pipe([a, b], {QUESTION!r}, answer={ANSWER!r}, spans=[["wheel", "door"], [(60, 64)]])
        report["list"] = [[s["label"] for s in r["spans"]] for r in both]
        report["list_masks"] = [[(str(m.dtype), m.shape) for m in r["masks"]] for r in both]
        rle = pipe(a, {QUESTION!r}, answer={ANSWER!r}, spans=["door"], return_rle=True)["masks"][0]
        plain = pipe(a, {QUESTION!r}, answer={ANSWER!r}, spans=["door"])["masks"][0]
        report["rle"] = [sorted(rle), rle["size"], type(rle["counts"]).__name__]
        decoded = coco.decode({{"size": rle["size"], "counts": rle["counts"].encode()}}).astype(bool)
        report["rle_round_trip"] = bool((decoded == plain).all())
        tagged = pipe(b, {QUESTION!r}, answer={ANSWER!r})
        report["tagged_inside"] = all(0 <= s["start"] < s["end"] <= len({ANSWER!r}) for s in tagged["spans"])
        print(json.dumps(report, default=list))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.") and report["module"].endswith(
        ".pipeline_plum"
    )
    assert report["generated"][0] == "str" and report["generated"][1] == report["generated"][2]
    assert report["generated_masks"] in ([], [["bool", [48, 64]]])
    assert report["list"] == [["wheel", "door"], ["door"]]
    assert report["list_masks"] == [[["bool", [48, 64]]] * 2, [["bool", [40, 30]]]]
    assert report["rle"] == [["counts", "size"], [48, 64], "str"] and report["rle_round_trip"]
    assert report["tagged_inside"]


def test_highlight_is_the_models_own_segment_spans(tiny):
    model, processor = tiny
    pipe = PlumPartSegmentationPipeline(model=model, processor=processor, device=model.device)
    image = noise(50, 70)
    result = pipe(image, QUESTION, answer=ANSWER, spans=["wheel", "door"])
    chars = [(s["start"], s["end"]) for s in result["spans"]]
    assert chars == [(66, 71), (60, 64)] and [s["label"] for s in result["spans"]] == ["wheel", "door"]
    inputs = processor.highlight_inputs(image, [(QUESTION, ANSWER)], chars)
    spans = inputs.pop("spans")
    sizes = {"original_size": inputs.pop("original_sizes")[0], "resized_size": inputs.pop("resized_sizes")[0]}
    expected = model.segment_spans(spans=spans, **sizes, **inputs)
    assert len(result["masks"]) == 2
    for mask, reference in zip(result["masks"], expected.masks.numpy()):
        assert mask.dtype == bool and mask.shape == (50, 70)
        assert (mask == reference).mean() > 0.999  # the same computation (float reduction order aside)


def test_pipeline_task_and_input_errors(tiny):
    from transformers import pipeline

    model, processor = tiny
    pipe = pipeline("part-segmentation", model=model, processor=processor)  # the registered task, in memory
    # by name: a saved folder loaded with trust_remote_code earlier in the session registers its own copy of the class
    assert type(pipe).__name__ == PlumPartSegmentationPipeline.__name__
    input_error = sys.modules[type(pipe).__module__].PlumInputError  # the error class of that same copy
    assert input_error.__name__ == PlumInputError.__name__
    image = noise(32, 32)
    with pytest.raises(input_error, match="'wing' is not in the answer"):
        pipe(image, QUESTION, answer=ANSWER, spans=["wing"])
    with pytest.raises(input_error, match="pass answer="):
        pipe(image, QUESTION, spans=["door"])
    with pytest.raises(input_error, match="outside the answer"):
        pipe(image, QUESTION, answer=ANSWER, spans=[(80, 200)])
    with pytest.raises(input_error, match="a question is needed"):
        pipe(image, "")
    with pytest.raises(input_error, match="PLUM needs at least 16"):
        pipe(Image.new("RGB", (8, 8)), QUESTION)
    with pytest.raises(input_error, match="a list of 2"):
        pipe([image, image], [QUESTION])
    with pytest.raises(input_error, match="longer than max_length"):
        pipe(image, QUESTION, answer="wheel " * 600, spans=["wheel"])
