"""The Hub-ready folder: CLI build, load_dataset offline, dataset card, atomic writes, push to a local Hub."""

import json
import subprocess
import sys

import datasets
import pytest
import yaml

from partonomy_dataset import Partonomy, hub_folder, masks
from partonomy_dataset import __main__ as cli

from .hub_stub import HubStub

TOY_IMAGES = "40"


def build(out, config, *extra):
    return cli.main(["build", "--config", config, "--out", str(out), "--toy-num-images", TOY_IMAGES, *extra])


@pytest.fixture(scope="module")
def folder(tmp_path_factory, real_pascal_part_dir):
    out = tmp_path_factory.mktemp("hub") / "partonomy"
    assert build(out, "toy") == 0
    assert build(out, "pascal_part", "--source-dir", str(real_pascal_part_dir)) == 0
    return out


def front_matter(folder):
    return yaml.safe_load((folder / "README.md").read_text().split("---")[1])


def test_load_dataset_offline_from_the_folder(folder):
    toy = datasets.load_dataset(str(folder), "toy")
    assert set(toy) == {"train", "validation"}
    row = toy["train"][0]
    assert row["image"].size == (row["width"], row["height"])
    assert len(row["masks"]) == len(row["parts"]) > 0
    for rle in row["masks"]:
        assert masks.decode(rle).shape == (row["height"], row["width"])
    assert row["answer_parts"][row["correct_index"]] == row["parts"]
    pascal = datasets.load_dataset(str(folder), "pascal_part", split="train")
    assert set(pascal["source"]) == {"pascal_part"}
    train_images, validation_images = set(toy["train"]["image_id"]), set(toy["validation"]["image_id"])
    assert not train_images & validation_images  # split by image


def test_card_lists_every_config_and_documents_the_data(folder):
    meta = front_matter(folder)
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert set(configs) == {"toy", "pascal_part"}  # building the second config kept the first
    assert {f["split"] for f in configs["toy"]["data_files"]} == {"train", "validation"}
    text = (folder / "README.md").read_text()
    for question_type in ("identification", "intersection", "difference", "part2whole", "whole2part"):
        assert f"**{question_type}**" in text
    assert "# Object Labels" in text and "| pascal_part | train |" in text
    assert "mutation" in text.lower() and "80/20" in text


def test_stats_command_matches_the_data(folder, capsys):
    assert cli.main(["stats", str(folder)]) == 0
    table = capsys.readouterr().out
    toy = datasets.load_dataset(str(folder), "toy", split="validation")
    stats = hub_folder.statistics(toy)
    assert stats["# Questions"] == len(toy)
    assert stats["# Images"] == len(set(toy["image_id"]))
    line = next(line for line in table.splitlines() if line.startswith("| toy | validation |"))
    assert line.split("|")[3:9] == [f" {stats[c]:,} " for c in hub_folder.STAT_COLUMNS]


def test_rebuilding_gives_identical_files(folder, tmp_path):
    again = tmp_path / "again"
    assert build(again, "toy") == 0
    for path in sorted((folder / "data" / "toy").glob("*.parquet")):
        assert (again / "data" / "toy" / path.name).read_bytes() == path.read_bytes()


def test_failed_builds_leave_nothing_partial(folder, tmp_path, monkeypatch, capsys):
    before = {p: p.read_bytes() for p in (folder / "data" / "toy").iterdir()}
    assert build(tmp_path / "x", "core", "--source-dir", str(tmp_path / "nowhere")) == 2
    assert "source_dir does not exist" in capsys.readouterr().err

    calls = []

    def failing_to_parquet(self, path, *args, **kwargs):
        calls.append(path)
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "to_parquet", failing_to_parquet)
    with pytest.raises(OSError, match="disk full"):
        build(folder, "toy")
    assert calls
    assert {p: p.read_bytes() for p in (folder / "data" / "toy").iterdir()} == before  # old config intact
    assert not [p for p in (folder / "data").iterdir() if p.name.startswith(".")]  # no partial folder left


def test_bad_config_and_empty_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["build", "--config", "coco", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "invalid choice: 'coco'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert build(tmp_path / "out", "paco", "--source-dir", str(tmp_path / "empty")) == 2
    assert "no paco annotation json" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"BuilderConfig 'coco' not found. Available: \['core', 'paco'"):
        Partonomy(config_name="coco")


def test_builder_is_usable_directly(tmp_path):
    builder = Partonomy(config_name="toy", toy_num_images=17, cache_dir=str(tmp_path))
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")
    assert dataset.features == builder.info.features
    assert set(dataset["object"]) <= set(json.loads(json.dumps(builder.build_report["ontology"]))["objects"])


@pytest.fixture
def local_hub_online(monkeypatch):
    """The tests run with HF_HUB_OFFLINE=1; the local stub is the one server they may talk to."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)


def test_push_to_a_local_hub(folder, local_hub_online):
    with HubStub() as hub:
        commit = hub_folder.push_to_hub(folder, "me/partonomy", token="hf_test", endpoint=hub.endpoint)
    assert ("POST", "/api/repos/create") in hub.requests
    (pushed,) = hub.commits
    assert pushed["repo"] == "me/partonomy" and pushed["kind"] == "datasets"
    local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert pushed["files"] == local
    assert commit.oid == pushed["oid"]


def test_module_entry_point(folder, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "partonomy_dataset", "stats", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("| config | split |")
    for target, message in (
        (tmp_path, "holds no built PARTONOMY config"),
        (tmp_path / "nowhere", "no such folder"),
    ):
        failed = subprocess.run(
            [sys.executable, "-m", "partonomy_dataset", "stats", str(target)], capture_output=True, text=True
        )
        assert failed.returncode == 2 and message in failed.stderr


def test_a_rebuilt_folder_loads_its_new_content(tmp_path):
    """`datasets` caches a local folder by its card's YAML; the shard names carry a content hash and are listed one by
    one, so a rebuild with other content is never served from the old cache."""
    out = tmp_path / "partonomy"
    assert build(out, "toy", "--toy-num-images", "10") == 0
    first = datasets.load_dataset(str(out), "toy", split="validation")
    assert cli.main(["build", "--config", "toy", "--out", str(out), "--toy-num-images", "30"]) == 0
    second = datasets.load_dataset(str(out), "toy", split="validation")
    assert len(second) > len(first)
    assert len(list((out / "data" / "toy").glob("*.parquet"))) == 2  # the old shards are gone
