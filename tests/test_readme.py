"""The README's quick start, walked as a new user walks it: every block marked `walkthrough` runs, in the README's order,
in an empty folder, offline (HF_HUB_OFFLINE, an unreachable proxy, an empty Hugging Face cache), and succeeds. The
README and docs are what `make docs` writes from their templates and the runs they quote."""

import pytest

from plum_demo import docs

from .walkthrough import ROOT, walk, walkthrough_blocks


def test_the_readme_has_a_walkthrough_in_the_users_order():
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    text = "\n".join(code for _, code in blocks)
    order = ["partonomy_dataset build", "modeling_plum.convert", "load_dataset", "train_accelerate.py"]
    order += ["eval_partonomy.py", 'pipeline("part-segmentation"']
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions)


def test_the_docs_are_what_their_templates_and_runs_give():
    assert docs.main(["--check"]) == 0, (
        "README.md or docs/ differ from docs/templates + docs/runs: run `make docs`"
    )
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.slow
def test_walk_the_readme_in_an_empty_folder(tmp_path):
    walk(ROOT / "README.md", tmp_path)
    assert (tmp_path / "eval_toy" / "tables.md").exists()


def test_an_accuracy_is_quoted_with_its_interval():
    # 42 of 123 right: Wilson's 95 % interval, by hand: centre 0.3463, half-width 0.0827
    quoted = docs.formatted({"accuracy": 42 / 123, "num_questions": 123}, "ci")
    assert quoted == "34.1 % (26.4-42.9)"
    assert docs.formatted({"accuracy": 1.0, "num_questions": 10}, "ci") == "100.0 % (72.2-100.0)"
