"""Stage 0, the tiny PLUM's pretraining: a tiny LLaVA saved as an ordinary LLaVA-HF folder and a tiny SAM saved as a
segment_anything state dict, converted by `python -m modeling_plum.convert --llava … --sam …` exactly as a real
LLaVA-1.5 folder and SAM checkpoint are; the converted model's language model computes what the LLaVA computed."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, LlavaForConditionalGeneration

from modeling_plum.configuration_plum import PlumConfig
from modeling_plum.convert import main as convert
from modeling_plum.convert import sam_geometry
from modeling_plum.segmentation_plum import build_sam
from partonomy_dataset.sources import toy
from plum_training import stage0

SMALL = stage0.Stage0Settings(
    corpus_images=40, clip_steps=2, clip_batch_size=8, llava_steps=2, llava_batch_size=4
)
SMALL.sam_steps, SMALL.sam_batch_size, SMALL.sam_eval_images, SMALL.clip_eval_images = 2, 2, 3, 3


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage0")
    seeds, draw = [], stage0.draw_corpus

    def draw_recording_seeds(num_images, seed=stage0.CORPUS_SEED):
        seeds.append(seed)
        return draw(num_images, seed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stage0, "draw_corpus", draw_recording_seeds)
        language_report = stage0._language_job(str(root / "llava"), SMALL)
    (root / "language_report.json").write_text(json.dumps({**language_report, "seeds": seeds}))
    report = stage0._sam_job(str(root / "sam_tiny.pth"), SMALL)
    (root / "sam_report.json").write_text(json.dumps(report))
    return root


def build_sam_tiny():
    return build_sam(PlumConfig.from_preset("tiny"))


def test_the_corpus_is_not_the_benchmarks_images():
    corpus = stage0.draw_corpus(17)
    benchmark = [toy.draw(i)[1] for i in range(17)]
    assert all(not np.array_equal(c[1][:4], b[:4]) for c, b in zip(corpus, benchmark))
    assert [c[0] for c in corpus] == sorted(toy.OBJECTS)  # every object, with its visible parts' masks
    assert all(set(c[2]) <= {p for p, _ in toy.OBJECTS[c[0]][1]} for c in corpus)


def test_sam_checkpoint_has_the_official_layout_and_the_tiny_geometry(pretrained):
    state = torch.load(pretrained / "sam_tiny.pth", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    tiny = PlumConfig.from_preset("tiny")
    for field, value in sam_geometry(state).items():
        assert getattr(tiny, field) == value, field


def test_box_prompted_iou_is_cumulative_and_the_box_baseline_is_exact():
    """Stage 0 reports its SAM's held-out IoU beside the box itself taken as the mask: a rectangle fills its box, a
    disc of radius r fills pi r^2 of its (2r)^2 box; both are summed over every part."""
    side = PlumConfig.from_preset("tiny").sam_image_size
    ys, xs = np.mgrid[:side, :side]
    rectangle = (xs >= 10) & (xs < 50) & (ys >= 20) & (ys < 40)
    disc = (xs - 80.5) ** 2 + (ys - 80.5) ** 2 <= 20**2
    image = np.full((side, side, 3), 127, np.uint8)
    torch.manual_seed(0)
    sam = torch.nn.ModuleDict(
        dict(zip(("image_encoder", "prompt_encoder", "mask_decoder"), build_sam_tiny()))
    )
    result = stage0.box_prompted_iou(sam.eval(), [("thing", image, {"a": rectangle, "b": disc})])
    disc_box = (np.ptp(xs[disc]) + 1) * (np.ptp(ys[disc]) + 1)
    expected = (rectangle.sum() + disc.sum()) / (rectangle.sum() + disc_box)
    assert result["box_as_mask_iou"] == pytest.approx(expected)
    assert result["sam_eval_parts"] == 2


def test_box_prompted_iou_of_the_masks_sam_predicts(monkeypatch):
    """The SAM side of the check: low-resolution logits upsampled as SAM post-processes them, thresholded, summed over
    parts. Logits that fill each (rectangular) part's box at the decoder's resolution give IoU 1; negated, 0."""
    side = PlumConfig.from_preset("tiny").sam_image_size
    ys, xs = np.mgrid[:side, :side]
    parts = {"a": (xs >= 10) & (xs < 50) & (ys >= 20) & (ys < 40), "b": (xs >= 64) & (ys >= 80) & (ys < 100)}

    def box_logits(sign):
        def masks(sam, images, owners, boxes):
            grid = torch.arange(side // 2) * 2 + 0.5  # the low-resolution pixel centres, in image pixels
            inside = [
                (grid[None] > x0) & (grid[None] < x1) & (grid[:, None] > y0) & (grid[:, None] < y1)
                for x0, y0, x1, y1 in boxes.tolist()
            ]
            return sign * (2 * torch.stack(inside).float() - 1)

        return masks

    sample = ("thing", np.zeros((side, side, 3), np.uint8), parts)
    monkeypatch.setattr(stage0, "box_prompted_masks", box_logits(1.0))
    assert stage0.box_prompted_iou(None, [sample])["sam_box_prompt_iou"] == 1.0
    monkeypatch.setattr(stage0, "box_prompted_masks", box_logits(-1.0))
    assert stage0.box_prompted_iou(None, [sample])["sam_box_prompt_iou"] == 0.0


def test_sam_job_reports_its_held_out_iou_beside_the_baseline(pretrained):
    report = json.loads((pretrained / "sam_report.json").read_text())
    assert report["sam_eval_parts"] == sum(len(s[2]) for s in stage0.draw_corpus(3, stage0.HELD_OUT_SEED))
    assert 0.0 < report["box_as_mask_iou"] < 1.0  # parts are not all rectangles
    assert 0.0 <= report["sam_box_prompt_iou"] <= 1.0


def test_clip_zero_shot_naming_scores_every_objects_caption(pretrained):
    """CLIP's held-out check: each image's logits over the captions of all 17 objects (tokenized as CLIP trained on
    them), the argmax against that image's object. 20 images in shuffled order: logits that peak at each image's object
    give 1; at the next object in the list, 0; always at the car, the car's share of the images."""
    processor = AutoProcessor.from_pretrained(pretrained / "llava")
    samples = stage0.draw_corpus(20)
    samples = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))]
    names = sorted(toy.OBJECTS)
    expected_text = stage0.clip_text_inputs(processor.tokenizer, names)

    def clip_picking(choose):
        def clip(input_ids, attention_mask, pixel_values):
            torch.testing.assert_close(input_ids, expected_text["input_ids"])
            assert pixel_values.shape[0] == len(samples)
            picked = torch.tensor([names.index(choose(sample[0])) for sample in samples])
            return SimpleNamespace(logits_per_image=torch.nn.functional.one_hot(picked, len(names)).float())

        return clip

    def naming(choose):
        return stage0.clip_zero_shot_naming(
            clip_picking(choose), processor.tokenizer, processor.image_processor, samples
        )

    assert naming(lambda name: name) == {
        "clip_zero_shot_naming": 1.0,
        "clip_chance_naming": 1 / 17,
        "clip_eval_images": 20,
    }
    assert naming(lambda name: names[(names.index(name) + 1) % len(names)])["clip_zero_shot_naming"] == 0.0
    cars = sum(sample[0] == "car" for sample in samples)
    assert naming(lambda name: "car")["clip_zero_shot_naming"] == pytest.approx(cars / 20)


def test_clip_captions_end_in_the_eos_token_and_are_padded(pretrained):
    tokenizer = AutoProcessor.from_pretrained(pretrained / "llava").tokenizer
    inputs = stage0.clip_text_inputs(tokenizer, ["car", "lighthouse"])
    for name, ids, mask in zip(["car", "lighthouse"], inputs["input_ids"], inputs["attention_mask"]):
        assert tokenizer.decode(ids[mask.bool()]) == stage0.caption(name) + tokenizer.eos_token
        assert ids[mask.bool()][-1] == tokenizer.eos_token_id
        assert (ids[~mask.bool()] == tokenizer.pad_token_id).all()


def test_language_job_reports_clip_naming_beside_chance(pretrained):
    report = json.loads((pretrained / "language_report.json").read_text())
    assert report["seeds"] == [stage0.CORPUS_SEED, stage0.HELD_OUT_SEED]  # checked on held-out images
    assert report["clip_eval_images"] == 3 and report["clip_chance_naming"] == pytest.approx(1 / 17)
    share = report["clip_zero_shot_naming"] * 3  # a share of 3 images
    assert 0 <= share <= 3 and share == pytest.approx(round(share))


def test_convert_llava_folder_gives_equal_language_model_logits(pretrained, tmp_path):
    out = tmp_path / "plum"
    code = convert(
        ["--llava", str(pretrained / "llava"), "--sam", str(pretrained / "sam_tiny.pth"), "--dtype"]
        + ["float32", "--out", str(out)]
    )
    assert code == 0
    llava = LlavaForConditionalGeneration.from_pretrained(pretrained / "llava").eval()
    llava_processor = AutoProcessor.from_pretrained(pretrained / "llava")
    plum = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    plum_processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    image = Image.fromarray(toy.draw(3)[1])
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the object?"}]}
    ]
    messages.append({"role": "assistant", "content": [{"type": "text", "text": "It is a car."}]})
    text = llava_processor.apply_chat_template(messages, tokenize=False)
    inputs = llava_processor(text=[text], images=[image], return_tensors="pt")
    ours = plum_processor(images=[image], conversations=[[("What is the object?", "It is a car.")]])
    assert ours["input_ids"].tolist() == inputs["input_ids"].tolist()  # one conversation format
    assert torch.equal(ours["pixel_values"], inputs["pixel_values"])
    with torch.no_grad():
        expected = llava(**inputs).logits
        logits = plum(**{k: ours[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert torch.allclose(logits, expected, atol=1e-5)
    assert plum.config.train_sam_image_encoder is False  # frozen, as for a real SAM


def test_llava_steps_on_cached_vision_features_compute_what_pixels_compute():
    """Stage 0 computes the frozen CLIP tower once per image and feeds LLaVA `inputs_embeds`: the loss must be the one
    `LlavaForConditionalGeneration` computes from `pixel_values`."""
    samples = stage0.draw_corpus(4)
    config = PlumConfig.from_preset("tiny").llava_config
    tokenizer = stage0.train_tiny_tokenizer(stage0.corpus_texts(samples), config.text_config.vocab_size, True)
    stage0.fit_to_tokenizer(config, tokenizer)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    pixels = stage0.clip_pixels(
        stage0.llava_processor(tokenizer, config.vision_config).image_processor, samples
    )
    turns = [
        stage0.tasks(name, sorted(masks), np.random.default_rng(i))
        for i, (name, _, masks) in enumerate(samples)
    ]
    batch = stage0._padded(
        [stage0.encode_turn(tokenizer, config.image_seq_length, q, a) for q, a in turns],
        tokenizer.pad_token_id,
    )
    with torch.no_grad():
        from_pixels = model(**batch, pixel_values=pixels).loss
        features = stage0.frozen_vision_features(model, pixels, chunk=3)
        embeds = stage0.inputs_embeds_with_image(model, batch["input_ids"], features)
        labels = {k: v for k, v in batch.items() if k != "input_ids"}
        from_features = model(inputs_embeds=embeds, **labels).loss
    assert features.shape == (4, config.image_seq_length, config.vision_config.hidden_size)
    torch.testing.assert_close(from_features, from_pixels)


def test_run_stage0_writes_its_report_where_the_folder_is_and_reuses_it(tmp_path):
    """`make demo`'s entry: both jobs side by side, their report (paths into the finished folder, seconds, the held-out
    checks of CLIP and SAM, settings) in `stage0.json`; the same settings again reuse it."""
    settings = stage0.Stage0Settings.quick()
    report = stage0.run_stage0(tmp_path, settings)
    folder = tmp_path / settings.fingerprint()
    assert report["llava"] == str(folder / "llava") and report["sam"] == str(folder / "sam_tiny.pth")
    assert (folder / "llava" / "config.json").exists() and (folder / "sam_tiny.pth").exists()
    assert report["sam_eval_parts"] > 0 and 0 < report["box_as_mask_iou"] < 1
    assert report["clip_eval_images"] == settings.clip_eval_images and "clip_zero_shot_naming" in report
    assert json.loads((folder / "stage0.json").read_text()) == report
    assert not list(tmp_path.glob(".*.partial"))
    assert stage0.run_stage0(tmp_path, settings) == report
