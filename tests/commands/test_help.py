"""--help of every command is read from the packaged configs (new recipes appear by themselves), and what a
person reads (help, the phase diagram) is laid out so it can be read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

import zoo.app.config as zc
from zoo.commands.main import HELP_ORDER, commands, summary
from zoo.commands.main import main as zoo_main

REPO = Path(__file__).resolve().parents[2]


def _help(capsys, *argv: str) -> str:
    assert zoo_main([*argv, "--help"] if argv else ["--help"]) == 0
    return capsys.readouterr().out


def test_every_entry_point_command_is_installed_and_has_a_one_line_summary():
    found = commands()
    assert set(found) == set(HELP_ORDER)  # pyproject.toml's entry points, installed
    for name, ep in found.items():
        line = summary(ep)
        assert line and "\n" not in line, name  # read from the docstring, nothing imported
        assert callable(ep.load()), name


@pytest.mark.parametrize("command", HELP_ORDER)
def test_every_command_has_help(command, capsys):
    text = _help(capsys, command)
    assert text.startswith("usage: zoo " + command) or text.startswith(f"usage: zoo {command}"), text[:80]


def test_top_level_help_lists_commands_and_every_config(capsys):
    text = _help(capsys)
    listed = [line.split()[0] for line in text.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()]
    assert listed == list(HELP_ORDER)
    for group in ("recipe", "encoder", "task", "augment", "generator"):
        for name in zc.group_options(group):
            assert name in text, (group, name)


def _scalar_keys(path: Path) -> dict[str, object]:
    """Top-level and nested scalar keys of a YAML config, dotted, with their values (defaults list left out)."""
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    cfg.pop("defaults", None)
    out = {}

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                out[f"{prefix}{k}"] = v

    walk("", cfg)
    return out


@pytest.mark.parametrize(
    "command,config,groups",
    [
        ("build", "build", ("recipe", "executor")),
        ("train", "train", ("encoder", "task", "augment")),
        ("fit", "fit", ("generator",)),
    ],
)
def test_hydra_command_help_lists_groups_choices_and_keys(command, config, groups, capsys):
    text = _help(capsys, command)
    for group in groups:
        assert f"  {group} (default: " in text
        for name in zc.group_options(group):
            assert f"    {name}" in text, (group, name)
    _, documented = zc.config_doc(zc.CONF_DIR / f"{config}.yaml")
    keys = _scalar_keys(zc.CONF_DIR / f"{config}.yaml")
    assert {k for k, _, _ in documented if not k.endswith(".*")} == set(keys)  # the parser saw every key
    for key, value, comment in documented:
        if key.endswith(".*"):
            continue
        assert f"  {key}={value}" in text, key
        if comment:  # the comment that documents the key is shown (its first words, wrapping aside)
            assert " ".join(comment.split()[:3]) in " ".join(text.split()), key


def test_new_recipe_and_key_appear_in_help(tmp_path, monkeypatch, capsys):
    """A recipe file dropped into the config folder shows up with its description; so does a new build key."""
    conf = tmp_path / "conf"
    shutil.copytree(zc.CONF_DIR, conf)
    (conf / "recipe" / "my-zoo.yaml").write_text(
        (conf / "recipe" / "tiny.yaml")
        .read_text()
        .replace(
            "# A few seconds: for tests and smoke runs.",
            "# My own zoo: eight widths of nothing in particular.\n# A second line of description.",
        )
        .replace("name: tiny", "name: my-zoo")
    )
    with (conf / "build.yaml").open("a") as f:
        f.write("new_knob: 7               # turns the new knob\n")
    monkeypatch.setattr(zc, "CONF_DIR", conf)
    text = _help(capsys, "build")
    assert any(
        line.split()[:2] == ["my-zoo", "My"] and "eight widths of nothing in particular" in line
        for line in text.splitlines()
    ), text
    assert "new_knob=7" in text and "turns the new knob" in text
    assert "my-zoo" in _help(capsys)


def test_config_doc_reads_line_continued_and_leading_comments(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "# What this file is for.\n"
        "defaults:\n  - recipe: default   # not a key\n  - _self_\n\n"
        "a: 1            # the first key\n"
        "                # and more about it\n"
        "# -- section heading\n"
        "b: 'x # y'      # quoted hash stays in the value\n"
        "group:          # a mapping\n"
        "  # said above the key\n"
        "  c: [1, 2]\n"
        "  d: null\n"
        "  e:           # a block list\n"
        "    - 3        # its items' comments are dropped\n"
        "    - x\n"
        "f:\n"
        "- 5\n"
        "g: 6\n"
    )
    doc, keys = zc.config_doc(path)
    assert doc == "What this file is for."
    assert keys == [
        ("a", "1", "the first key and more about it"),
        ("b", "'x # y'", "quoted hash stays in the value"),
        ("group.*", "", "a mapping"),
        ("group.c", "[1, 2]", "said above the key"),
        ("group.d", "null", ""),
        ("group.e", "[3, x]", "a block list"),
        ("f", "[5]", ""),
        ("g", "6", ""),
    ]
    assert zc.config_groups("build") == [("recipe", "default"), ("executor", "local")]


def test_argparse_help_shows_defaults_and_landscape_keys(capsys):
    text = _help(capsys, "align")
    assert "--max-iter MAX_ITER   most coordinate-descent passes (default: 100)" in text
    text = _help(capsys, "landscape")
    for key, value, _ in zc.config_doc(zc.CONF_DIR / "landscape" / "default.yaml")[1]:
        assert f"  {key}={value}" in text
    text = _help(capsys, "phases")
    assert "phases.mc_tol=" in text and "  probes=" not in text  # phases: the cut-offs only


def test_phase_diagram_title_clears_panels_and_has_a_colour_legend(tmp_path, monkeypatch):
    """Suptitle above every panel title; the phase panel's colorbar names each phase; every metric panel has
    a colorbar; a legend explains the phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.landscape.phases import PHASES
    from zoo.landscape.plot import PHASE_COLORS, phase_diagram

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    data = json.loads((REPO / "docs" / "phase-mlp-digits.json").read_text())
    png, js = phase_diagram(pd.DataFrame(data["cells"]), tmp_path, data["cutoffs"], {"recipe": "phase-mlp-digits"})
    assert png.stat().st_size > 10_000 and json.loads(js.read_text())["cells"]
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 9
    for ax in panels:
        assert title.y0 >= ax.title.get_window_extent(renderer).y1, ax.get_title()
    bars = [ax for ax in fig.axes if not ax.get_title()]  # colorbar axes
    assert len(bars) == 9  # 8 metric panels + the phase panel
    labels = [t.get_text() for t in bars[-1].get_yticklabels()]
    assert labels == [*PHASES, "none"]
    legend = fig.legends[0]
    assert [h.get_facecolor()[:3] for h in legend.legend_handles][: len(PHASES)] == [
        matplotlib.colors.to_rgb(PHASE_COLORS[p]) for p in PHASES
    ]
    close(fig)
