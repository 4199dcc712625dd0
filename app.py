"""An interactive PLUM demo (Gradio; also a Hugging Face Space): ask about an image and see the part masks of the
answer's spans, highlight your own spans of an answer to segment them, and browse PARTONOMY questions with the
ground truth beside the model's masks.

    python app.py --model PATH_OR_ID --trust_remote_code [--host 127.0.0.1] [--port 7860] [--device cpu]
                  [--dtype float32] [--dataset outputs/partonomy --config toy --split validation]
                  [--max-file-size 25mb] [--concurrency 1]
    make app                                    # the checkpoint `make demo` writes

API (also for `gradio_client`): `/answer` (image, question) → (answer text, annotated image); `/segment` (image,
question, answer, part names) → annotated image; `/browse` (question index) → (picture, text). Errors a user can cause
come back as messages; other errors stay errors (logged here, a plain "Error" there). Uploads are bounded
(`--max-file-size`, `MAX_MEGAPIXELS`) and downscaled to `WORK_SIDE` before the model sees them; the requests that run
the model share one queue slot group, the light ones never wait behind them; the app's temporary files live in a
folder of its own, removed when it stops. What the handlers do is in `plum_demo/app_handlers.py`.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from partonomy_dataset import templates
from plum_demo.app_handlers import (
    DemoModel,
    UserError,
    colour_map,
    dataset_examples,
    highlighted,
    question_for,
    selected_spans,
    toy_examples,
    typed_names,
)
from plum_training.loading import DTYPES, default_device, load_model_and_processor
from plum_training.preflight import DEMO_MODEL_HINT, UsageError, check_dataset, check_device, check_model

DEMO_RUNS = Path("outputs") / "run"
MAX_FILE_SIZE = "25mb"  # uploads above it are refused by gradio before the app sees them
QUEUE_SIZE = 32  # requests waiting at most; more are turned away with "the queue is full"
DELETE_CACHE = (1800, 3600)  # every 30 min, the app's temporary files older than an hour go
MODEL_EVENTS = "model"  # the concurrency group of every request that runs the model
HEADER = (
    "# PLUM: part-level segmentation\nAsk about an object's parts; every part the answer names is segmented. "
    "Or highlight words of an answer to segment them."
)


def latest_demo_checkpoint() -> Path | None:
    found = sorted(DEMO_RUNS.glob("checkpoint-*/model"), key=lambda p: int(p.parent.name.split("-")[-1]))
    return found[-1] if found else None


def user_messages(function):
    """A `UserError` becomes a message in the page (`gr.Error`); any other exception stays an error, which gradio
    logs here and shows there as a bare "Error" (launched with `show_error=False`)."""
    import gradio as gr

    @functools.wraps(function)
    def wrapper(*args):
        try:
            return function(*args)
        except UserError as error:
            raise gr.Error(str(error)) from None

    return wrapper


def _spans_text(result: dict):
    import gradio as gr

    return gr.HighlightedText(value=highlighted(result), color_map=colour_map(result))


# ---------------------------------------------------------------------------------------------------- the tabs


def _ask_tab(gr, demo: DemoModel, examples: list[dict], heavy: dict, light: dict):
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", image_mode=None, label="image")
            example_inputs = gr.Column()
            with gr.Row():
                question_type = gr.Dropdown(
                    list(templates.QUESTION_TYPES), value="identification", label="question type"
                )
                object_name = gr.Textbox(label="object", value="car")
                other_object = gr.Textbox(label="other object (intersection / difference)")
            fill = gr.Button("fill in the question")
            question = gr.Textbox(label="question", value=templates.parts_question("identification", "car"))
            choices = gr.Textbox(label="answer choices (optional, one per line)", lines=4)
            button = gr.Button("answer and segment", variant="primary")
        with gr.Column():
            answer = gr.HighlightedText(label="answer", combine_adjacent=False, show_inline_category=False)
            picture = gr.Image(label="parts (outlines in the colours of the answer's spans)", type="pil")
            bars = gr.BarPlot(
                x="choice",
                y="probability",
                color="pick",
                color_map={"model's pick": "#ea580c", "other choice": "#9e9e9e"},
                y_lim=[0, 1],
                sort=None,
                x_label_angle=-20,
                label="answer choices: probability (softmax of the mean token log-likelihoods)",
            )
            answer_text = gr.Textbox(visible=False)
    if examples:
        with example_inputs:
            gr.Examples(
                [
                    [e["image"], e["question_type"], e["object"], e["other"], e["question"], e["choices"]]
                    for e in examples
                ],
                [image, question_type, object_name, other_object, question, choices],
                label="examples (fill in the image, the object, the question and its answer choices)",
                visible_columns=[0],
            )

    @user_messages
    def ask(image_value, question_value, choices_value):
        import pandas as pd

        result, annotated, table = demo.ask(image_value, question_value, choices_value)
        return _spans_text(result), annotated, pd.DataFrame(table)

    @user_messages
    def answer_api(image_value, question_value):
        result, annotated = demo.answer(image_value, question_value)
        return result["text"], annotated

    fill.click(
        user_messages(question_for),
        [question_type, object_name, other_object],
        question,
        api_visibility="private",
        **light,
    )
    button.click(ask, [image, question, choices], [answer, picture, bars], api_visibility="private", **heavy)
    gr.Button(visible=False).click(
        answer_api, [image, question], [answer_text, picture], api_name="answer", **heavy
    )


def _highlight_tab(gr, demo: DemoModel, examples: list[dict], heavy: dict, light: dict):
    default_answer = "The car in the image has the following visible parts: body, door, wheel, and window."
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", image_mode=None, label="image")
            example_inputs = gr.Column()
            question = gr.Textbox(label="question", value=templates.parts_question("identification", "car"))
            answer = gr.Textbox(label="answer (edit freely)", value=default_answer)
            selection = gr.HighlightedText(
                value=[(default_answer, None)],
                label="select words of the answer to segment (then label them)",
                interactive=True,
            )
            names = gr.Textbox(label="…or type them, comma-separated", value="door, wheel")
            button = gr.Button("segment", variant="primary")
        with gr.Column():
            spans_text = gr.HighlightedText(
                label="segmented spans", combine_adjacent=False, show_inline_category=False
            )
            picture = gr.Image(label="parts (outlines in the colours of the spans)", type="pil")
    if examples:
        with example_inputs:
            gr.Examples(
                [[e["image"], e["question"], e["answer"], e["parts"]] for e in examples],
                [image, question, answer, names],
                label="examples (fill in the image, the question, an answer and its parts)",
                visible_columns=[0],
            )

    @user_messages
    def segment_selection(image_value, question_value, answer_value, selected, typed):
        """Spans selected in the highlighted text win; else the typed words."""
        spans = selected_spans(answer_value or "", selected) or typed_names(typed)
        result, annotated = demo.highlight(image_value, question_value, answer_value, spans)
        return _spans_text(result), annotated

    @user_messages
    def segment_api(image_value, question_value, answer_value, typed):
        return demo.highlight(image_value, question_value, answer_value, typed_names(typed))[1]

    answer.change(lambda text: [(text, None)], answer, selection, api_visibility="private", **light)
    button.click(
        segment_selection,
        [image, question, answer, selection, names],
        [spans_text, picture],
        api_visibility="private",
        **heavy,
    )
    gr.Button(visible=False).click(
        segment_api, [image, question, answer, names], picture, api_name="segment", **heavy
    )


def _partonomy_tab(gr, demo: DemoModel, heavy: dict):
    if not demo.rows:
        gr.Markdown(f"**No PARTONOMY questions here.** {demo.dataset_note or ''}")
    with gr.Row():
        index = gr.Number(value=0, precision=0, label=f"question (0 - {max(0, len(demo.rows) - 1)})")
        show = gr.Button("show", variant="primary")
    picture = gr.Image(label="image · ground truth · PLUM", type="pil")
    text = gr.Markdown()
    show.click(user_messages(demo.browse), index, [picture, text], api_name="browse", **heavy)


def build_app(demo: DemoModel, examples: list[dict] | None = None, model_concurrency: int = 1):
    """The page: three tabs. Requests that run the model share the concurrency group `MODEL_EVENTS` (at most
    `model_concurrency` at a time); the others (filling in a question, copying an answer) have no limit."""
    import gradio as gr

    heavy = {"concurrency_id": MODEL_EVENTS, "concurrency_limit": model_concurrency}
    light = {"concurrency_limit": None}
    with gr.Blocks(title="PLUM: part-level segmentation", delete_cache=DELETE_CACHE) as app:
        gr.Markdown(HEADER)
        with gr.Tab("Ask"):
            _ask_tab(gr, demo, examples or [], heavy, light)
        with gr.Tab("Highlight"):
            _highlight_tab(gr, demo, examples or [], heavy, light)
        with gr.Tab("PARTONOMY"):
            _partonomy_tab(gr, demo, heavy)
    app.queue(default_concurrency_limit=model_concurrency, max_size=QUEUE_SIZE)
    return app


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
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
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="largest upload, e.g. 25mb")
    parser.add_argument("--concurrency", type=int, default=1, help="requests running the model at once")
    return parser.parse_args(argv)


def load_rows(args) -> tuple[list[dict], str | None]:
    """The questions of the PARTONOMY tab; a missing folder is a warning (naming it and the command that builds it)."""
    try:
        folder = check_dataset(args.dataset, args.config)
    except UsageError as error:
        note = f"The PARTONOMY tab is off: {error}"
        print(f"warning: {note}", file=sys.stderr)
        return [], note
    import datasets

    data = datasets.load_dataset(folder, args.config, split=args.split)
    return list(data.select(range(min(len(data), args.browse_limit)))), None


def load(args):
    """The model and processor, after the checks that need nothing heavy; a `UsageError` names what to do."""
    name = args.model or latest_demo_checkpoint()
    if name is None:
        raise UsageError(f"no model: pass --model (or set PLUM_MODEL); {DEMO_MODEL_HINT}")
    name = check_model(str(name))
    device = check_device(args.device) or default_device()
    try:
        model, processor = load_model_and_processor(name, args.trust_remote_code, args.dtype)
    except (OSError, ValueError) as error:  # unreadable checkpoint, or its code not trusted
        raise UsageError(str(error)) from None
    return name, model.to(device), processor


def _stop(signum, frame):
    raise KeyboardInterrupt  # gradio's launch closes its server on it; then `main` removes the temporary folder


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        name, model, processor = load(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Every file gradio writes (uploads, pictures) goes into a folder of this run, removed when it stops.
    temp = Path(tempfile.mkdtemp(prefix="plum-app-", dir=os.environ.get("GRADIO_TEMP_DIR")))
    os.environ["GRADIO_TEMP_DIR"] = str(temp)
    signal.signal(signal.SIGTERM, _stop)
    try:
        rows, note = load_rows(args)
        examples = dataset_examples(rows, temp) if rows else toy_examples(temp)
        app = build_app(DemoModel(model, processor, rows, note), examples, args.concurrency)
        print(f"PLUM demo ({name}) on http://{args.host}:{args.port}", flush=True)
        app.launch(
            server_name=args.host, server_port=args.port, max_file_size=args.max_file_size, show_error=False
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
