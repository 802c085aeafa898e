"""--help of every command is read from the packaged configs (new recipes appear by themselves), and what a
person reads (help, the phase diagram) is laid out so it can be read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

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


@pytest.mark.parametrize(
    "command,config,groups",
    [
        ("build", "build", ("recipe", "executor")),
        ("train", "train", ("encoder", "task", "augment")),
        ("fit", "fit", ("generator",)),
    ],
)
def test_hydra_command_help_lists_groups_choices_and_keys(command, config, groups, capsys):
    """Every key of the command's typed config (and of its default group choice) with default, type and doc."""
    import importlib

    from zoo.app.schema import help_rows

    text = _help(capsys, command)
    for group in groups:
        assert f"  {group} (default: " in text
        for name in zc.group_options(group):
            assert f"    {name}" in text, (group, name)
    schema = {
        "build": lambda: importlib.import_module("zoo.training.build").BuildConfig,
        "train": lambda: importlib.import_module("wsl.train").TrainConfig,
        "fit": lambda: importlib.import_module("generators.fit").FitConfig,
    }[command]()
    rows = list(help_rows(schema))
    assert len(rows) >= 9
    flat = " ".join(text.split())
    for key, kind, value, doc in rows:
        assert f"  {key}={value}" in text, key
        assert f"({kind}) {' '.join(doc.split()[:3])}".strip() in flat, key
    assert "recipe.widths=[8, 16, 32, 64]" in text or command != "build"
    assert "generator.ode_method=rk4" in text or command != "fit"
    assert "encoder.hidden=[256, 128]" in text or command != "train"


def test_new_recipe_appears_in_help(tmp_path, monkeypatch, capsys):
    """A recipe file dropped into the config folder shows up with its description."""
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
    monkeypatch.setattr(zc, "CONF_DIR", conf)
    text = _help(capsys, "build")
    assert any(
        line.split()[:2] == ["my-zoo", "My"] and "eight widths of nothing in particular" in line
        for line in text.splitlines()
    ), text
    assert "my-zoo" in _help(capsys)
    assert zc.config_groups("build") == [("recipe", "default"), ("executor", "local")]


def test_argparse_help_shows_defaults_and_landscape_keys(capsys):
    from zoo.app.schema import help_rows
    from zoo.landscape.compute import LandscapeConfig

    text = _help(capsys, "align")
    assert "--max-iter MAX_ITER   most coordinate-descent passes (default: 100)" in text
    text = _help(capsys, "landscape")
    for key, _kind, value, _ in help_rows(LandscapeConfig):
        assert f"  {key}={value}" in text
    assert "probes=16" in text and "(int)" in text
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
