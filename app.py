"""An interactive PLUM demo (Gradio; also a Hugging Face Space): ask about an image and see the part masks of the
answer's spans, highlight your own spans of an answer to segment them, and browse PARTONOMY questions with the
ground truth beside the model's masks.

    python app.py --model PATH_OR_ID --trust_remote_code [--host 127.0.0.1] [--port 7860] [--device cpu]
                  [--dtype float32] [--dataset outputs/partonomy --config toy --split validation]
    make app                                    # the checkpoint `make demo` writes

API (also for `gradio_client`): `/answer` (image, question) → (answer text, annotated image); `/segment` (image,
question, answer, part names) → annotated image. Errors a user can cause come back as messages, not stack traces.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_plum.processing_plum import trim_span
from partonomy_dataset import masks as rle
from partonomy_dataset import templates
from plum_demo.drawing import draw_masks, hex_colour, iou
from plum_demo.overlays import overlay as question_overlay
from plum_training import evaluation
from plum_training.loading import DTYPES, default_device, load_model_and_processor
from plum_training.scoring import PlumChoiceScorer

DEMO_RUNS = Path("outputs") / "run"
EMBEDDING_CACHE = 16  # SAM image embeddings kept, one per image
MAX_NEW_TOKENS = 64


def latest_demo_checkpoint() -> Path | None:
    found = sorted(DEMO_RUNS.glob("checkpoint-*/model"), key=lambda p: int(p.parent.name.split("-")[-1]))
    return found[-1] if found else None


class UserError(ValueError):
    """Something the user can fix (no image, a span not in the answer ...); shown in the page as a message."""


def find_words(answer: str, names: list[str]) -> list[tuple[int, int]]:
    """Character spans of each name in `answer`, as whole words, in the order given."""
    spans = []
    for name in names:
        match = re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", answer)
        if match is None:
            raise UserError(f"'{name}' is not in the answer")
        spans.append((match.start(), match.end()))
    return spans


class PlumDemo:
    """The model behind the app: answering and segmenting, highlight-to-segment, choice scoring, with SAM image
    embeddings cached per image across calls."""

    def __init__(self, model, processor):
        self.model, self.processor = model.eval(), processor
        self.scorer = PlumChoiceScorer(self.model, processor)
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoder_calls = 0

    @staticmethod
    def check_image(image) -> Image.Image:
        if image is None:
            raise UserError("upload an image (or pick an example) first")
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        return image

    def embedding(self, image: Image.Image, inputs: dict) -> torch.Tensor:
        key = hashlib.sha1(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()
        if key not in self._embeddings:
            with torch.no_grad():
                self._embeddings[key] = self.model.get_image_embeddings(inputs["sam_pixel_values"])
            self.encoder_calls += 1
            while len(self._embeddings) > EMBEDDING_CACHE:
                self._embeddings.popitem(last=False)
        self._embeddings.move_to_end(key)
        return self._embeddings[key]

    def _image_inputs(self, image):
        try:
            return self.processor.images([image])
        except ValueError as error:  # a size or mode the processor cannot take
            raise UserError(str(error)) from None

    def answer(self, image, question: str) -> dict:
        """Generates an answer, tags its spans and segments them."""
        image = self.check_image(image)
        if not question or not question.strip():
            raise UserError("ask a question")
        inputs = self.processor.choice_inputs(image, [(question.strip(), None)], [])
        out = self.model.answer_and_segment(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["pixel_values"],
            inputs["original_sizes"][0],
            inputs["resized_sizes"][0],
            image_embeddings=self.embedding(image, inputs),
            max_new_tokens=MAX_NEW_TOKENS,
            processor=self.processor,
        )
        return {
            "text": out.text,
            "char_spans": out.char_spans,
            "labels": out.span_texts,
            "masks": list(out.masks.cpu().numpy()),
        }

    def tag_answer(self, image, question: str, answer: str) -> dict:
        """The span tagger over a given answer (e.g. the best answer choice), then its masks."""
        encoded = self.processor.encode_conversation([(question, answer)])
        answer_tokens = [i for i, label in enumerate(encoded["labels"]) if label != -100]
        inputs = self.processor(images=[image], conversations=[[(question, answer)]])
        with torch.no_grad():
            out = self.model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                pixel_values=inputs["pixel_values"],
                output_logits=False,
            )
        spans = [(s, e) for s, e in out.spans[0] if answer_tokens and s >= answer_tokens[0]]
        start = encoded["text"].rfind(" " + answer) + 1
        offsets = encoded["offsets"]
        char_spans = [trim_span(answer, offsets[s][0] - start, offsets[e - 1][1] - start) for s, e in spans]
        return self.highlight(image, question, answer, char_spans)

    def highlight(self, image, question: str, answer: str, char_spans: list[tuple[int, int]]) -> dict:
        """Highlight-to-segment: masks for character spans of the answer."""
        image = self.check_image(image)
        if not answer or not answer.strip():
            raise UserError("write the answer whose words you want to segment")
        if not char_spans:
            return {"text": answer, "char_spans": [], "labels": [], "masks": []}
        try:
            inputs = self.processor.highlight_inputs(image, [(question or "", answer)], char_spans)
        except ValueError as error:
            raise UserError(str(error)) from None
        spans = inputs.pop("spans")
        out = self.model.segment_spans(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["pixel_values"],
            spans,
            inputs["original_sizes"][0],
            inputs["resized_sizes"][0],
            image_embeddings=self.embedding(image, inputs),
        )
        labels = [answer[s:e].strip() for s, e in char_spans]
        return {
            "text": answer,
            "char_spans": list(char_spans),
            "labels": labels,
            "masks": list(out.masks.cpu().numpy()),
        }

    def scores(self, image, question: str, choices: list[str]) -> list[float]:
        return self.scorer(self.check_image(image), [(question, None)], choices).tolist()


# ---------------------------------------------------------------------------------------------------- rendering


def highlighted(result: dict) -> list[tuple[str, str | None]]:
    """The answer as (text, label) pieces for `gr.HighlightedText`, each span labelled with its part name."""
    text, pieces, cursor = result["text"], [], 0
    for (start, end), label in sorted(zip(result["char_spans"], result["labels"])):
        if start > cursor:
            pieces.append((text[cursor:start], None))
        pieces.append((text[start:end], label))
        cursor = max(cursor, end)
    if cursor < len(text):
        pieces.append((text[cursor:], None))
    return pieces


def colour_map(result: dict) -> dict[str, str]:
    return {label: hex_colour(k) for k, label in enumerate(result["labels"])}


def annotated(image, result: dict) -> Image.Image:
    scale = max(1, 384 // max(image.size))
    return draw_masks(image, result["masks"], result["labels"], scale=scale)


def question_for(question_type: str, obj: str, other: str) -> str:
    """One of PARTONOMY's five question types, filled in for a named object."""
    obj = (obj or "object").strip()
    if question_type in ("intersection", "difference") and not (other or "").strip():
        raise UserError(f"a {question_type} question compares with another object: name it")
    named = templates.UNNAMED_OBJECT if question_type == "part2whole" else obj
    return templates.parts_question(question_type, named, (other or "").strip() or None)


# ---------------------------------------------------------------------------------------------------- the app


def build_app(
    demo: PlumDemo, dataset_rows: list[dict] | None = None, examples: list[Image.Image] | None = None
):
    import gradio as gr
    import pandas as pd

    def user_errors(function):
        """Errors a user can cause become a message in the page (gr.Error), never a stack trace."""

        def wrapper(*args):
            try:
                return function(*args)
            except (UserError, ValueError) as error:
                raise gr.Error(str(error)) from None

        wrapper.__name__ = function.__name__
        return wrapper

    @user_errors
    def answer_api(image, question):
        result = demo.answer(image, question)
        return result["text"], annotated(demo.check_image(image), result)

    @user_errors
    def ask(image, question, choices_text):
        image = demo.check_image(image)
        choices = [c.strip() for c in (choices_text or "").splitlines() if c.strip()]
        if choices:
            scores = demo.scores(image, question, choices)
            best = choices[int(np.argmax(scores))]
            result = demo.tag_answer(image, question, best)
            bars = pd.DataFrame(
                {"choice": [f"{i + 1}. {c[:48]}" for i, c in enumerate(choices)], "score": scores}
            )
        else:
            result = demo.answer(image, question)
            bars = pd.DataFrame({"choice": [], "score": []})
        return (
            gr.HighlightedText(value=highlighted(result), color_map=colour_map(result)),
            annotated(image, result),
            bars,
        )

    @user_errors
    def segment_api(image, question, answer, part_names):
        names = [n.strip() for n in (part_names or "").split(",") if n.strip()]
        if not names:
            raise UserError("name at least one word of the answer to segment (comma-separated)")
        result = demo.highlight(image, question, answer, find_words(answer, names))
        return annotated(demo.check_image(image), result)

    @user_errors
    def segment_selection(image, question, answer, selection, part_names):
        """Spans selected in the highlighted text win; else the typed words."""
        chosen, cursor, spans = [], 0, []
        for piece in selection or []:
            text, label = (piece["token"], piece["class_or_confidence"]) if isinstance(piece, dict) else piece
            if label and text.strip():
                start = answer.find(text, cursor)
                if start >= 0:
                    spans.append((start, start + len(text)))
                    chosen.append(text.strip())
            cursor += len(text)
        if not spans:
            names = [n.strip() for n in (part_names or "").split(",") if n.strip()]
            if not names:
                raise UserError("select words of the answer, or type them (comma-separated)")
            spans = find_words(answer, names)
        result = demo.highlight(image, question, answer, spans)
        return (
            gr.HighlightedText(value=highlighted(result), color_map=colour_map(result)),
            annotated(demo.check_image(image), result),
        )

    def fill_question(question_type, obj, other):
        try:
            return question_for(question_type, obj, other)
        except UserError as error:
            raise gr.Error(str(error)) from None

    @user_errors
    def browse(index):
        if not dataset_rows:
            raise UserError("no PARTONOMY folder was given (--dataset)")
        row = dataset_rows[int(index) % len(dataset_rows)]
        (record,), _ = evaluation.predict(demo.model, demo.processor, [row], progress=False)
        picture = question_overlay(row, record)
        lines = [
            f"**{row['question_type']}** · {row['object']} · `{row['id']}`",
            "",
            f"**Q:** {row['question']}",
            "",
        ]
        for i, (choice, score) in enumerate(zip(row["answer_choices"], record["scores"])):
            marks = (" **(correct)**" if i == row["correct_index"] else "") + (
                " ⬅ model" if i == record["chosen"] else ""
            )
            lines.append(f"{i + 1}. {choice} (score {score:.3f}){marks}")
        truth = [rle.decode(m) for m in row["masks"]]
        predicted = [rle.decode(m) for m in record["masks"]]
        ious = ", ".join(f"{p} {iou(m, t):.2f}" for p, m, t in zip(row["parts"], predicted, truth))
        lines += ["", f"**IoU per part:** {ious}"]
        return picture, "\n".join(lines)

    with gr.Blocks(title="PLUM: part-level segmentation") as app:
        gr.Markdown(
            "# PLUM: part-level segmentation\nAsk about an object's parts; every part the answer names is segmented. "
            "Or highlight words of an answer to segment them."
        )
        with gr.Tab("Ask"):
            with gr.Row():
                with gr.Column():
                    ask_image = gr.Image(type="pil", label="image")
                    if examples:
                        gr.Examples(
                            examples=[[e] for e in examples], inputs=[ask_image], label="toy examples"
                        )
                    with gr.Row():
                        question_type = gr.Dropdown(
                            list(templates.QUESTION_TYPES), value="identification", label="question type"
                        )
                        object_name = gr.Textbox(label="object", value="car")
                        other_object = gr.Textbox(label="other object (intersection / difference)")
                    fill = gr.Button("fill in the question")
                    ask_question = gr.Textbox(
                        label="question", value=templates.parts_question("identification", "car")
                    )
                    choices = gr.Textbox(label="answer choices (optional, one per line)", lines=4)
                    ask_button = gr.Button("answer and segment", variant="primary")
                with gr.Column():
                    ask_text = gr.HighlightedText(label="answer", combine_adjacent=False)
                    ask_annotated = gr.Image(label="parts", type="pil")
                    bars = gr.BarPlot(
                        x="choice", y="score", label="choice scores (mean token log-likelihood)"
                    )
                    answer_text = gr.Textbox(visible=False)
            fill.click(
                fill_question,
                [question_type, object_name, other_object],
                ask_question,
                api_visibility="private",
            )
            ask_button.click(
                ask,
                [ask_image, ask_question, choices],
                [ask_text, ask_annotated, bars],
                api_visibility="private",
            )
            gr.Button(visible=False).click(
                answer_api, [ask_image, ask_question], [answer_text, ask_annotated], api_name="answer"
            )
        with gr.Tab("Highlight"):
            with gr.Row():
                with gr.Column():
                    hl_image = gr.Image(type="pil", label="image")
                    if examples:
                        gr.Examples(examples=[[e] for e in examples], inputs=[hl_image], label="toy examples")
                    hl_question = gr.Textbox(
                        label="question", value=templates.parts_question("identification", "car")
                    )
                    default_answer = (
                        "The car in the image has the following visible parts: body, door, wheel, and window."
                    )
                    hl_answer = gr.Textbox(label="answer (edit freely)", value=default_answer)
                    hl_select = gr.HighlightedText(
                        value=[(default_answer, None)],
                        label="select words of the answer to segment (then label them)",
                        interactive=True,
                    )
                    hl_names = gr.Textbox(label="…or type them, comma-separated", value="door, wheel")
                    hl_button = gr.Button("segment", variant="primary")
                with gr.Column():
                    hl_text = gr.HighlightedText(label="segmented spans", combine_adjacent=False)
                    hl_annotated = gr.Image(label="parts", type="pil")
            hl_answer.change(lambda a: [(a, None)], hl_answer, hl_select, api_visibility="private")
            hl_button.click(
                segment_selection,
                [hl_image, hl_question, hl_answer, hl_select, hl_names],
                [hl_text, hl_annotated],
                api_visibility="private",
            )
            gr.Button(visible=False).click(
                segment_api, [hl_image, hl_question, hl_answer, hl_names], hl_annotated, api_name="segment"
            )
        with gr.Tab("PARTONOMY"):
            with gr.Row():
                index = gr.Number(
                    value=0, precision=0, label=f"question (0 - {max(0, len(dataset_rows or []) - 1)})"
                )
                show = gr.Button("show", variant="primary")
            browse_image = gr.Image(label="image · ground truth · PLUM", type="pil")
            browse_text = gr.Markdown()
            show.click(browse, index, [browse_image, browse_text], api_name="browse")
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=os.environ.get("PLUM_MODEL"), help="default: the `make demo` checkpoint"
    )
    parser.add_argument(
        "--trust_remote_code",
        "--trust-remote-code",
        action="store_true",
        default=os.environ.get("PLUM_TRUST_REMOTE_CODE") == "1",
        help="run the model code the checkpoint carries (PLUM is a trust_remote_code model)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--dtype", default="auto", choices=sorted(DTYPES))
    parser.add_argument(
        "--dataset", default="outputs/partonomy", help="a built PARTONOMY folder for the browser tab"
    )
    parser.add_argument("--config", default="toy")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--browse-limit", type=int, default=200)
    args = parser.parse_args(argv)
    model_path = args.model or latest_demo_checkpoint()
    if model_path is None:
        print(
            "no model: run `make demo` first (it writes outputs/run/checkpoint-N/model), or pass --model",
            file=sys.stderr,
        )
        return 2
    try:
        model, processor = load_model_and_processor(str(model_path), args.trust_remote_code, args.dtype)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = model.to(args.device or default_device())
    rows, examples = None, None
    if args.dataset and Path(args.dataset).is_dir():
        import datasets

        data = datasets.load_dataset(args.dataset, args.config, split=args.split)
        rows = list(data.select(range(min(len(data), args.browse_limit))))
        examples = list({row["image_id"]: row["image"] for row in rows}.values())[:6]
    app = build_app(PlumDemo(model, processor), rows, examples)
    print(f"PLUM demo ({model_path}) on http://{args.host}:{args.port}")
    app.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
